"""The study behind docs/study.md: does the seed's collapse happen here, why, and do the
search's targets measure anything? Each stage runs on its own (scripts/study.py STAGE), keeps its
runs under results/study/ (git-ignored) and writes a summary (docs/study/<stage>.json) and its
plots (docs/study/*.png); `doc` assembles docs/study.md from whatever summaries exist.

    collapse   the failure-seeking search: scripts/search.py spaces/collapse.yaml (goal: collapse)
    confirm    configs/sixth_run.yaml and configs/diagnostic_no_vq.yaml, 3 seeds x 30 epochs each:
               does the sixth run show the seed's signature (search/targets.py: seed_signature),
               and does the no-VQ diagnostic stay healthy?
    calibrate  rank targets from the no-VQ runs of `confirm` (search/targets.py: calibrate_from)
               -> search/calibrated_targets.yaml, which the spaces' `targets: calibrated` reads
    rankcorr   16 configs sampled from spaces/vq_gentle.yaml, each trained with two seeds: the
               Spearman rank correlation of their scores (calibrated and seed targets)
    main       the README's main command (spaces/vq_gentle.yaml) as results/study-main, its winner
               retrained with 3 fresh seeds (scripts/verify.py), configs/stable_production.yaml
    production configs/stable_production.yaml, 3 fresh seeds x its 80 epochs: the checklist
    reference  configs/diagnostic_no_vq.yaml (the seed's no-VQ run) with the same seeds, budgets and
               learning-rate schedule as the winner: the checklist
    unquantized configs/stable_production.yaml without its quantizer (vq.enabled=false), the same
               seeds and budgets: what the codebook itself costs
    fixes      the seed's fixes A-D, FSQ, k-means init, cosine codes, the rotation trick and the
               order-aware context aggregators, 3 seeds x 24 epochs each: the checklist item by item
    searches   spaces/quantizer.yaml and spaces/context.yaml searched like the main command
               (results/study-quantizer, results/study-context), each winner verified with 3 fresh seeds
    doc        docs/study.md from docs/study/*.json
"""

from __future__ import annotations

import json
import math
import re
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import yaml

from model.io import atomic_write_json, atomic_write_text
from search.export import read_json, read_jsonl
from search.runs import ROOT, TrainRun, train_subprocess
from search.targets import (CALIBRATED_FILE, CALIBRATION_RATIO, SEED, SIGNATURE_BY_EPOCH, SIGNATURE_CONTEXT_RANK,
                            SIGNATURE_USAGE, VAL_LOSS_RATIO, Targets, calibrate_from, calibrated, seed_signature)

DOCS = ROOT / "docs" / "study"
RUNS = ROOT / "results" / "study"
CONFIRM_CONFIGS = ("sixth_run", "diagnostic_no_vq", "closest_to_collapse")
CONFIRM_SEEDS = (0, 1, 2)
CONFIRM_EPOCHS = SIGNATURE_BY_EPOCH
COLLAPSE_SPACE, COLLAPSE_NAME = "spaces/collapse.yaml", "study-collapse"
RANKCORR_SPACE, RANKCORR_CONFIGS, RANKCORR_SEEDS, RANKCORR_EPOCHS = "spaces/vq_knobs.yaml", 16, (0, 1), 12
RANKCORR_SAMPLER_SEED = 12345
MAIN_SPACE, MAIN_NAME, MAIN_VERIFY_SEEDS = "spaces/vq_gentle.yaml", "study-main", 3
# stage `searches`: (name, space, the parameter whose values the summary compares)
SEARCHES = (("quantizer", "spaces/quantizer.yaml", "vq.kind"), ("context", "spaces/context.yaml", "model.aggregator"))
# (name, config, overrides): the seed's fixes A-D, FSQ, codebook counter-measures on the sixth run,
# and the order-aware context aggregators (the sixth run is the mean-pooling baseline).
FIXES = (("sixth_run (mean)", "sixth_run", ()), ("A no refresh", "vq_no_refresh", ()), ("B gentle", "vq_gentle", ()),
         ("C gradient codebook", "vq_gradient", ()), ("D Gumbel", "vq_gumbel", ()), ("FSQ", "vq_fsq", ()),
         ("k-means init", "sixth_run", ("vq.init=kmeans",)), ("cosine codes", "sixth_run", ("vq.cosine=true",)),
         ("rotation trick", "sixth_run", ("vq.estimator=rotation",)), ("context last", "context_last", ()),
         ("context attention", "context_attention", ()), ("context GRU", "context_gru", ()))
FIXES_EPOCHS, FIXES_SEEDS = 24, (0, 1, 2)
PRODUCTION_CONFIG, PRODUCTION_EPOCHS, PRODUCTION_SEEDS = ROOT / "configs" / "stable_production.yaml", 80, (1000, 1001, 1002)
# stage `reference`: the no-VQ run the bars are calibrated on, under the protocols that judge the winner:
# scripts/verify.py's fresh seeds for the main search's budget, and the production length
REFERENCE_CONFIG, REFERENCE_SEEDS = "diagnostic_no_vq", PRODUCTION_SEEDS


def command(stage: str, extra: list[str] = ()) -> str:
    return shlex.join(["python", "scripts/study.py", stage, *extra])


def _run_many(jobs: list[tuple[Path, str, Path, list[str]]], workers: int) -> list[TrainRun]:
    """scripts/train.py for each (config, name, results, overrides), `workers` at a time."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda j: train_subprocess(*j), jobs))


def _final(rows: list[dict], key: str) -> float:
    return rows[-1][key] if rows and isinstance(rows[-1].get(key), (int, float)) else math.nan


# --------------------------------------------------------------------------------------------
# collapse: the failure-seeking search


def stage_collapse(workers: int = 2) -> dict:
    """Run (or resume) the failure search with the real search script, then summarise it."""
    exp_dir = ROOT / "results" / COLLAPSE_NAME
    cmd = [sys.executable, str(ROOT / "scripts" / "search.py"), COLLAPSE_SPACE, "--name", COLLAPSE_NAME,
           "--max-concurrent", str(workers)]
    if exp_dir.is_dir():
        cmd.append("--resume")
    subprocess.run(cmd, cwd=ROOT, check=True)
    return summarise_collapse(exp_dir)


def summarise_collapse(exp_dir: Path, docs: Path = DOCS) -> dict:
    from search.report import param_importances, load_study, write_report

    write_report(exp_dir)
    docs.mkdir(parents=True, exist_ok=True)
    for name in ("curves.png", "params.png", "importance.png"):
        if (exp_dir / name).is_file():
            shutil.copy2(exp_dir / name, docs / f"collapse_{name}")
    space = yaml.safe_load((exp_dir / "space.yaml").read_text())
    trials = []
    for t, rows in _trials_with_rows(exp_dir):
        trials.append({**_trial_base(t, rows),
                       "final": {k: _final(rows, k) for k in ("codebook/usage", "rank/context", "rank/target",
                                                                "val/loss", "grad/norm_mean", "codes/nmi_colour",
                                                                "codes/nmi_chance")},
                       "min_usage_after_5": min((r["codebook/usage"] for r in rows if r["epoch"] > 5), default=math.nan),
                       "signature": seed_signature(rows)})
    trials.sort(key=lambda t: t["score"] if math.isfinite(t["score"]) else math.inf)
    importances, why_not = param_importances(load_study(exp_dir))
    # where collapse happens: mean final score (and usage) by value of each categorical parameter,
    # over the trials that ran the full budget (ASHA-stopped ones are scored at an early rung)
    full = [t for t in trials if t["epochs"] >= space["budget"]["max_epochs"]]
    by_choice = {}
    for key, p in space["params"].items():
        if p["dist"] != "categorical":
            continue
        by_choice[key] = {}
        for choice in p["choices"]:
            group = [t for t in full if t["params"].get(key) == choice]
            by_choice[key][str(choice)] = {
                "n": len(group),
                "mean_score": _mean([t["score"] for t in group]),
                "mean_usage": _mean([t["final"]["codebook/usage"] for t in group]),
                "mean_context_rank": _mean([t["final"]["rank/context"] for t in group])}
    summary = {"command": command("collapse"), "search_command": f"python scripts/search.py {COLLAPSE_SPACE} "
               f"--name {COLLAPSE_NAME}", "space": COLLAPSE_SPACE, "budget": space["budget"],
               "importances": importances, "importances_why_not": why_not, "trials": trials,
               "full_budget_trials": len(full), "by_choice": by_choice,
               "signature_reproduced": sum(t["signature"]["reproduced"] for t in trials)}
    atomic_write_json(docs / "collapse.json", summary)
    return summary


def _trials_with_rows(exp_dir: Path) -> list:
    """(TrialRecord, its trainer rows) for each trial of the experiment that ran an epoch."""
    from search.export import read_trials

    pairs = [(t, read_jsonl(t.path / "run" / "metrics.jsonl")) for t in read_trials(exp_dir)]
    return [(t, rows) for t, rows in pairs if rows]


def _trial_base(t, rows: list[dict]) -> dict:
    return {"trial_id": t.trial_id, "status": t.status, "epochs": rows[-1]["epoch"], "score": t.final("score"),
            "params": t.params, "first_refresh_epoch": first_refresh(rows)}


def first_refresh(rows: list[dict]) -> int | None:
    """The first epoch in which the dead-code refresh revived any code (None: never)."""
    return next((r["epoch"] for r in rows if r.get("codebook/refreshed", 0) > 0), None)


def _mean(xs: list[float]) -> float:
    xs = [x for x in xs if isinstance(x, (int, float)) and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else math.nan


# --------------------------------------------------------------------------------------------
# confirm: the seed's two runs, 3 seeds each


def stage_confirm(workers: int = 2, epochs: int = CONFIRM_EPOCHS, seeds: tuple[int, ...] = CONFIRM_SEEDS,
                  configs: tuple[str, ...] = CONFIRM_CONFIGS, overrides: tuple[str, ...] = (),
                  docs: Path = DOCS, runs: Path = RUNS) -> dict:
    """Train each config with each seed (fresh runs), then summarise them."""
    results = runs / "confirm"
    jobs = [(ROOT / "configs" / f"{c}.yaml", f"{c}-seed{s}", results,
             [f"seed={s}", f"training.epochs={epochs}", "training.num_threads=1", *overrides])
            for c in configs for s in seeds]
    for run in _run_many(jobs, workers):
        if run.error:
            print(f"{run.name} failed:\n{run.error}", file=sys.stderr)
    return summarise_confirm(epochs, seeds, configs, docs, runs)


def summarise_confirm(epochs: int = CONFIRM_EPOCHS, seeds: tuple[int, ...] = CONFIRM_SEEDS,
                      configs: tuple[str, ...] = CONFIRM_CONFIGS, docs: Path = DOCS, runs: Path = RUNS) -> dict:
    """docs/study/confirm.json and confirm.png from the run folders under runs/confirm/."""
    summary = {"command": command("confirm"), "epochs": epochs, "seeds": list(seeds), "runs": []}
    for c in configs:
        for s in seeds:
            run_dir = runs / "confirm" / f"{c}-seed{s}"
            status = read_json(run_dir / "status.json").get("status", "missing")
            run = TrainRun(run_dir.name, rows=read_jsonl(run_dir / "metrics.jsonl"), status=status)
            summary["runs"].append(_run_summary(c, run.name, run, epochs))
    atomic_write_json(docs / "confirm.json", summary)
    plot_runs(summary["runs"], docs / "confirm.png", f"configs/ over seeds {list(seeds)}, {epochs} epochs")
    return summary


def _run_summary(config: str, name: str, run: TrainRun, planned: int, targets: Targets | None = None) -> dict:
    from search.checklist import evaluate_checklist, verdict

    rows = run.rows
    targets = targets or calibrated()
    return {"config": config, "name": name, "status": run.status, "epochs": rows[-1]["epoch"] if rows else 0,
            "first_refresh_epoch": first_refresh(rows),
            "signature": seed_signature(rows) if rows else {"reproduced": False},
            "final": {k: _final(rows, k) for k in ("codebook/usage", "rank/context", "rank/target", "val/loss",
                                                     "val/loss_reference",
                                                     "grad/norm_mean", "grad/norm_max", "loss/relational",
                                                     "loss/infonce", "codes/nmi_colour", "codes/nmi_shape",
                                                     "codes/nmi_chance")},
            "min": {k: min((r[k] for r in rows if math.isfinite(r[k])), default=math.nan)
                    for k in ("codebook/usage", "rank/context", "rank/target")},
            "verdict": verdict(evaluate_checklist(rows, planned, targets)),
            "verdict_seed_targets": verdict(evaluate_checklist(rows, planned, SEED)),
            "history": [{k: r[k] for k in ("epoch", "codebook/usage", "rank/context", "rank/target", "val/loss")}
                        for r in rows]}


def plot_runs(runs: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("codebook/usage", "codebook usage"), ("rank/context", "context rank"),
            ("rank/target", "target rank"), ("val/loss", "val loss")]
    configs = sorted({r["config"] for r in runs})
    colours = dict(zip(configs, ["tab:red", "tab:blue", "tab:green", "tab:purple", "tab:orange"]))
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.5), constrained_layout=True)
    for ax, (key, label) in zip(axes, keys):
        for r in runs:
            xs = [h["epoch"] for h in r["history"] if math.isfinite(h[key])]
            ys = [h[key] for h in r["history"] if math.isfinite(h[key])]
            ax.plot(xs, ys, color=colours[r["config"]], lw=1.2, alpha=0.8)
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    for c in configs:
        axes[0].plot([], [], color=colours[c], label=c)
    axes[0].axhline(SIGNATURE_USAGE, color="k", ls=":", lw=1, label=f"signature: usage < {SIGNATURE_USAGE:.0%}")
    axes[1].axhline(SIGNATURE_CONTEXT_RANK, color="k", ls=":", lw=1, label=f"signature: rank < {SIGNATURE_CONTEXT_RANK:g}")
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# calibrate: rank targets from the no-VQ diagnostic


def stage_calibrate(workers: int = 2, docs: Path = DOCS, runs: Path = RUNS, target_file: Path = CALIBRATED_FILE,
                    seeds: tuple[int, ...] = CONFIRM_SEEDS) -> dict:
    """Read the no-VQ runs of `confirm` (training them if missing) and write the targets file."""
    results = runs / "confirm"
    histories = []
    for s in seeds:
        metrics = results / f"diagnostic_no_vq-seed{s}" / "metrics.jsonl"
        if not metrics.is_file():
            stage_confirm(workers, seeds=seeds, configs=("diagnostic_no_vq",), docs=docs, runs=runs)
        histories.append([json.loads(line) for line in metrics.read_text().splitlines()])
    ctx = [r["rank/context"] for rows in histories for r in rows]
    tgt = [r["rank/target"] for rows in histories for r in rows]
    finals = [rows[-1]["val/loss_reference"] for rows in histories]  # the bar's yardstick (checklist)
    targets = calibrate_from(ctx, tgt, finals)
    # the no-VQ reference against the seed's gradient-norm bars, first epoch and the rest
    grads = {"grad_norm_mean_epoch1": [rows[0]["grad/norm_mean"] for rows in histories],
             "grad_norm_max_epoch1": [rows[0]["grad/norm_max"] for rows in histories],
             "grad_norm_mean_after_epoch1": [max(r["grad/norm_mean"] for r in rows[1:]) for rows in histories],
             "grad_norm_max_after_epoch1": [max(r["grad/norm_max"] for r in rows[1:]) for rows in histories]}
    rule = (f"{CALIBRATION_RATIO} x the lowest rank and {VAL_LOSS_RATIO:.4f} (the seed's 8 / 7.75) x the highest "
            f"final val loss of configs/diagnostic_no_vq.yaml over {len(histories[0])} epochs and seeds {list(seeds)}")
    text = (f"# Written by `{command('calibrate')}` (search/study.py); read by search/targets.py.\n"
            + yaml.safe_dump({"rule": rule, "targets": {"usage": targets.usage, "context_rank": targets.context_rank,
                                                         "target_rank": targets.target_rank,
                                                         "final_val_loss": targets.final_val_loss},
                              "no_vq": {"context_rank_min": min(ctx), "context_rank_max": max(ctx),
                                        "target_rank_min": min(tgt), "target_rank_max": max(tgt),
                                        "final_val_loss_min": min(finals), "final_val_loss_max": max(finals)},
                              "seed_literal": {"usage": SEED.usage, "context_rank": SEED.context_rank,
                                               "target_rank": SEED.target_rank,
                                               "final_val_loss": SEED.final_val_loss}}, sort_keys=False))
    atomic_write_text(target_file, text)
    shown = target_file.relative_to(ROOT) if target_file.is_relative_to(ROOT) else target_file
    summary = {"command": command("calibrate"), "rule": rule, "file": str(shown),
               "calibrated": targets.as_dict(), "seed": SEED.as_dict(),
               "no_vq": {"context_rank": [min(ctx), max(ctx)], "target_rank": [min(tgt), max(tgt)],
                         "final_val_loss": [min(finals), max(finals)], **grads}}
    atomic_write_json(docs / "calibrate.json", summary)
    return summary


# --------------------------------------------------------------------------------------------
# rankcorr: does the score rank trials the same way under another seed?


def sample_configs(space_path: str, n: int, sampler_seed: int) -> list[dict]:
    """n parameter sets drawn from a space by Optuna's RandomSampler (the space's own define-by-run)."""
    import optuna

    from search.space import DefineByRun, load_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    loaded = load_space(ROOT / space_path)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=sampler_seed))
    fn = DefineByRun(loaded.space.params)
    out = []
    for _ in range(n):
        trial = study.ask()
        constants = fn(trial)
        out.append({**trial.params, **constants})
        study.tell(trial, 0.0)
    return out


def stage_rankcorr(workers: int = 2, n: int = RANKCORR_CONFIGS, epochs: int = RANKCORR_EPOCHS,
                   seeds: tuple[int, ...] = RANKCORR_SEEDS, space_path: str = RANKCORR_SPACE,
                   overrides: tuple[str, ...] = (), docs: Path = DOCS, runs: Path = RUNS) -> dict:
    """Train n configs drawn from the space with each seed, then summarise them."""
    from model.config import dump_config
    from search.space import load_space

    loaded = load_space(ROOT / space_path)
    results = runs / "rankcorr"
    (results / "configs").mkdir(parents=True, exist_ok=True)
    jobs = []
    for i, p in enumerate(sample_configs(space_path, n, RANKCORR_SAMPLER_SEED)):
        cfg = loaded.trial_config(p, epochs=epochs, name=f"cfg{i:02d}", num_threads=1)
        path = results / "configs" / f"cfg{i:02d}.yaml"
        dump_config(cfg, path)
        jobs += [(path, f"cfg{i:02d}-seed{s}", results, [f"seed={s}", *overrides]) for s in seeds]
    for run in _run_many(jobs, workers):
        if run.error:
            print(f"{run.name} failed:\n{run.error}", file=sys.stderr)
    return summarise_rankcorr(n, epochs, seeds, space_path, docs, runs)


def summarise_rankcorr(n: int = RANKCORR_CONFIGS, epochs: int = RANKCORR_EPOCHS,
                       seeds: tuple[int, ...] = RANKCORR_SEEDS, space_path: str = RANKCORR_SPACE,
                       docs: Path = DOCS, runs: Path = RUNS) -> dict:
    """The search's score (search/score.py: run_score) at the last epoch under each target set, its
    Spearman correlation across the two seeds, how often the checklist's pass count agrees across
    seeds, and the cross-seed correlation of each candidate tie-break among configs with the same
    pass count: the health margin (what the score uses) and val loss (what it used before)."""
    from scipy.stats import spearmanr

    from search.score import health_margin, items_passed, run_score

    params = sample_configs(space_path, n, RANKCORR_SAMPLER_SEED)
    target_sets = {"calibrated": calibrated(), "seed": SEED}
    scores = {name: {s: [] for s in seeds} for name in target_sets}
    tiebreaks = {"health margin": {s: [] for s in seeds}, "val loss": {s: [] for s in seeds}}
    table = []
    for i, p in enumerate(params):
        row = {"config": f"cfg{i:02d}", "params": p, "runs": {}}
        for s in seeds:
            rows = read_jsonl(runs / "rankcorr" / f"cfg{i:02d}-seed{s}" / "metrics.jsonl")
            last = rows[-1] if rows else {}
            entry = row["runs"].setdefault(str(s), {})
            for name, t in target_sets.items():
                value = run_score(rows, epochs, t) if rows else math.nan
                scores[name][s].append(value)
                entry[f"score_{name}"] = value
            usage_min = min((r["codebook/usage"] for r in rows), default=math.nan)
            tiebreaks["health margin"][s].append(
                health_margin(usage_min, last["rank/context"], last["rank/target"], calibrated()) if last else math.nan)
            tiebreaks["val loss"][s].append(-last.get("val/loss", math.nan))  # higher is better, as the margin
            entry.update({k: last.get(k, math.nan) for k in ("codebook/usage", "rank/context", "rank/target",
                                                             "val/loss", "codes/nmi_colour", "codes/nmi_chance")})
        table.append(row)
    a, b = seeds[:2]
    corr = {}
    for name in target_sets:
        rho, p_value = spearmanr(scores[name][a], scores[name][b])
        pass_a = [items_passed(x) for x in scores[name][a]]
        pass_b = [items_passed(x) for x in scores[name][b]]
        corr[name] = {"spearman": float(rho), "p_value": float(p_value),
                      "passed_agrees": sum(x == y for x, y in zip(pass_a, pass_b)), "configs": len(pass_a),
                      "passed_range": [min(pass_a + pass_b), max(pass_a + pass_b)]}
    tiebreak_rho = {k: float(spearmanr(v[a], v[b])[0]) for k, v in tiebreaks.items()}
    summary = {"command": command("rankcorr"), "space": space_path, "configs": n, "epochs": epochs,
               "seeds": list(seeds), "targets": {k: t.as_dict() for k, t in target_sets.items()},
               "correlation": corr, "tiebreak_spearman": tiebreak_rho,
               "val_loss_spearman": tiebreak_rho["val loss"], "table": table}
    atomic_write_json(docs / "rankcorr.json", summary)
    _plot_rankcorr(scores, a, b, corr, docs / "rankcorr.png")
    return summary


def _plot_rankcorr(scores: dict, a: int, b: int, corr: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(scores), figsize=(4.5 * len(scores), 4), constrained_layout=True)
    for ax, name in zip(axes, scores):
        ax.scatter(scores[name][a], scores[name][b], s=22)
        ax.set_xlabel(f"score, seed {a}")
        ax.set_ylabel(f"score, seed {b}")
        ax.set_title(f"{name} targets: Spearman {corr[name]['spearman']:.2f}")
        ax.grid(alpha=0.3)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# main: the README's main command, its winner retrained with fresh seeds (scripts/verify.py)


def stage_main(workers: int = 2, exp_dir: Path | None = None, verify_seeds: int = MAIN_VERIFY_SEEDS,
               production: Path = PRODUCTION_CONFIG, docs: Path = DOCS) -> dict:
    """Run (or resume, or reuse) the main command's search under results/study-main, verify its
    winner over fresh seeds, write configs/stable_production.yaml from it, then summarise."""
    exp_dir = exp_dir or ROOT / "results" / MAIN_NAME
    search_and_verify(MAIN_SPACE, exp_dir, workers, verify_seeds)
    write_production_config(exp_dir, production)
    return summarise_main(exp_dir, docs)


def search_and_verify(space: str, exp_dir: Path, workers: int, verify_seeds: int) -> None:
    """`scripts/search.py space` as exp_dir (resumed if it was cut short, reused if it finished),
    then `scripts/verify.py exp_dir --seeds N --top 1` unless its verify.json exists."""
    if not (exp_dir / "best_trial.json").is_file():
        cmd = [sys.executable, str(ROOT / "scripts" / "search.py"), space, "--name", exp_dir.name,
               "--storage", str(exp_dir.parent), "--max-concurrent", str(workers)]
        subprocess.run(cmd + (["--resume"] if exp_dir.is_dir() else []), cwd=ROOT, check=True)
    if not (exp_dir / "verify.json").is_file():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "verify.py"), str(exp_dir), "--seeds",
                        str(verify_seeds), "--top", "1", "--jobs", str(workers)], cwd=ROOT, check=True)


def write_production_config(exp_dir: Path, path: Path = PRODUCTION_CONFIG) -> None:
    """configs/stable_production.yaml: the winner's resolved config, run for 80 epochs."""
    best = read_json(exp_dir / "best_trial.json")
    config = yaml.safe_load((exp_dir / "best_config.yaml").read_text())
    config["name"] = "stable_production"
    config["seed"] = 0
    config["training"]["epochs"] = PRODUCTION_EPOCHS
    config["training"]["num_threads"] = 1
    shown = exp_dir.relative_to(ROOT) if exp_dir.is_relative_to(ROOT) else exp_dir
    header = (f"# The winner of the README's main command (`python scripts/search.py {MAIN_SPACE}`), trial "
              f"{best.get('trial_id')} of {shown},\n# retrained with fresh seeds by scripts/verify.py (docs/study.md "
              f"says which items held), run for {PRODUCTION_EPOCHS} epochs.\n# Written by `{command('main')}`; "
              f"checked over 3 fresh seeds x {PRODUCTION_EPOCHS} epochs by `{command('production')}`.\n")
    atomic_write_text(path, header + yaml.safe_dump(config, sort_keys=False))


def grad_after_first_epoch(rows: list[dict]) -> dict:
    """The largest per-epoch gradient-norm mean and max after the first epoch (the first is a
    transient the no-VQ reference fails too, section 3), for reading the gradient items."""
    return {"mean": max((r["grad/norm_mean"] for r in rows[1:]), default=math.nan),
            "max": max((r["grad/norm_max"] for r in rows[1:]), default=math.nan)}


def _items(rows: list[dict], planned: int, targets: Targets) -> dict:
    from search.checklist import evaluate_checklist, format_item

    return {k: {"pass": v["pass"], "label": v["label"], "shown": format_item(v)}
            for k, v in evaluate_checklist(rows, planned, targets).items()}


def summarise_main(exp_dir: Path, docs: Path = DOCS) -> dict:
    """docs/study/main.json (+ main_curves.png, main_params.png) from the experiment's files."""
    summary = summarise_search(exp_dir, MAIN_SPACE, "main", "main", docs)
    atomic_write_json(docs / "main.json", summary)
    return summary


def summarise_search(exp_dir: Path, space_path: str, prefix: str, stage: str, docs: Path = DOCS,
                     group_by: str | None = None) -> dict:
    """A search's summary from its experiment's files: budget, statuses, the five best trials with
    each checklist item judged on their own runs, item pass counts over the full-budget trials and
    the verification of the winner; its curves and params plots copied as docs/<prefix>_*.png."""
    from search.report import write_report
    from search.score import items_passed
    from search.targets import read_judging

    write_report(exp_dir)
    docs.mkdir(parents=True, exist_ok=True)
    for name in ("curves.png", "params.png"):
        if (exp_dir / name).is_file():
            shutil.copy2(exp_dir / name, docs / f"{prefix}_{name}")
    judging = read_judging(exp_dir)
    space = yaml.safe_load((exp_dir / "space.yaml").read_text())
    planned = space["budget"]["max_epochs"]
    trials = []
    for t, rows in _trials_with_rows(exp_dir):
        trials.append({**_trial_base(t, rows), "passed": items_passed(t.final("score")),
                       "items": _items(rows, planned, judging.targets),
                       "val/loss": _final(rows, "val/loss"), "val/loss_reference": _final(rows, "val/loss_reference"),
                       "rank/context": _final(rows, "rank/context"),
                       "start": read_json(t.path / "run" / "placement.json").get("start", math.nan),
                       "end": read_json(t.path / "run" / "placement.json").get("end", math.nan)})
    trials.sort(key=lambda t: -t["score"] if math.isfinite(t["score"]) else math.inf)
    full = [t for t in trials if t["epochs"] >= planned]
    item_keys = list(trials[0]["items"]) if trials else []
    starts = [t["start"] for t in trials if math.isfinite(t["start"])]
    ends = [t["end"] for t in trials if math.isfinite(t["end"])]
    best_id = read_json(exp_dir / "best_trial.json").get("trial_id")
    return {"command": command(stage),
            "search_command": f"python scripts/search.py {space_path}",
            "experiment": str(exp_dir.relative_to(ROOT) if exp_dir.is_relative_to(ROOT) else exp_dir),
            "budget": space["budget"], "targets": judging.targets.as_dict(),
            "statuses": {st: sum(t["status"] == st for t in trials) for st in sorted({t["status"] for t in trials})},
            "trials_span_s": (max(ends) - min(starts)) if starts and ends else math.nan,
            "best": read_json(exp_dir / "best_trial.json"), "top": trials[:5],
            "full_budget_trials": len(full),
            "item_pass_counts_full_budget": {k: sum(t["items"][k]["pass"] for t in full) for k in item_keys},
            "groups": _groups(trials, group_by, planned) if group_by else {}, "group_by": group_by,
            "loss_yardstick": loss_yardstick(full, space),
            "verify": read_json(exp_dir / "verify.json"),
            "verify_grad_after_epoch1": [grad_after_first_epoch(read_jsonl(path)) for path in
                                         sorted((exp_dir / "verify").glob(f"{best_id}-seed*/metrics.jsonl"))]}


YARDSTICK_PARAMS = ("relational_loss.weight", "relational_loss.context_self_weight")


def loss_yardstick(full: list[dict], space: dict) -> list[dict]:
    """Where a space searches the relational loss weights: each full-budget trial's weights, its own
    final val loss (its weighted total) and its final val loss under the fixed REFERENCE_WEIGHTS
    (what the checklist judges), lowest relational weight first. Empty for other spaces."""
    if not any(k in space.get("params", {}) for k in YARDSTICK_PARAMS):
        return []
    from model.jepa import REFERENCE_WEIGHTS

    base = {"relational_loss.weight": REFERENCE_WEIGHTS.relational,
            "relational_loss.context_self_weight": REFERENCE_WEIGHTS.context_self}
    rows = [{"trial_id": t["trial_id"], **{k: t["params"].get(k, base[k]) for k in YARDSTICK_PARAMS},
             "aggregator": t["params"].get("model.aggregator"), "val/loss": t["val/loss"],
             "val/loss_reference": t["val/loss_reference"],
             "final_val_loss_pass": t["items"].get("final_val_loss", {}).get("pass"),
             "grad_items_pass": all(t["items"].get(k, {}).get("pass", False) for k in ("grad_norm_mean", "grad_norm_max"))}
            for t in full]
    return sorted(rows, key=lambda r: r["relational_loss.weight"])


def _groups(trials: list[dict], key: str, planned: int) -> dict:
    """For each value of `key`: its trials, its best by score (items failed) and its lowest final
    val loss among the trials that ran the full budget."""
    groups = {}
    for value in sorted({json.dumps(t["params"].get(key)) for t in trials}):
        members = [t for t in trials if json.dumps(t["params"].get(key)) == value]  # trials: best first
        best, full = members[0], [t for t in members if t["epochs"] >= planned]
        lowest = min(full, key=lambda t: t["val/loss"]) if full else None
        groups[json.loads(value) if value != "null" else "(base)"] = {
            "trials": len(members), "full_budget": len(full),
            "best": {k: best[k] for k in ("trial_id", "score", "epochs", "val/loss", "rank/context")}
            | {"failed": [v["label"] for v in best["items"].values() if not v["pass"]]},
            "lowest_val_loss": None if lowest is None else
            {k: lowest[k] for k in ("trial_id", "score", "val/loss", "rank/context")}
            | {"failed": [v["label"] for v in lowest["items"].values() if not v["pass"]]}}
    return groups


# --------------------------------------------------------------------------------------------
# searches: the quantizer and context spaces, each searched like the main command and its winner verified


def stage_searches(workers: int = 2, verify_seeds: int = MAIN_VERIFY_SEEDS, docs: Path = DOCS) -> dict:
    """Search spaces/quantizer.yaml and spaces/context.yaml (results/study-<name>), verify each
    winner over fresh seeds, then summarise both into docs/study/searches.json."""
    for name, space, _ in SEARCHES:
        search_and_verify(space, ROOT / "results" / f"study-{name}", workers, verify_seeds)
    return summarise_searches(docs)


def summarise_searches(docs: Path = DOCS) -> dict:
    summary = {name: summarise_search(ROOT / "results" / f"study-{name}", space, name, "searches", docs, group_by)
               for name, space, group_by in SEARCHES
               if (ROOT / "results" / f"study-{name}" / "best_trial.json").is_file()}
    atomic_write_json(docs / "searches.json", summary)
    return summary


# --------------------------------------------------------------------------------------------
# production: configs/stable_production.yaml over 3 fresh seeds for its full 80 epochs


def stage_production(workers: int = 3, seeds: tuple[int, ...] = PRODUCTION_SEEDS, config: Path = PRODUCTION_CONFIG,
                     epochs: int | None = None, overrides: tuple[str, ...] = (), docs: Path = DOCS,
                     runs: Path = RUNS) -> dict:
    """Train the production config afresh with each seed (all at once, one thread each), then summarise."""
    if not config.is_file():
        raise SystemExit(f"{config} is missing: run `{command('main')}` first")
    results = runs / "production"
    extra = [f"training.epochs={epochs}"] if epochs else []
    jobs = [(config, f"stable_production-seed{s}", results, [f"seed={s}", "training.num_threads=1", *extra, *overrides])
            for s in seeds]
    for run in _run_many(jobs, max(workers, len(seeds))):
        if run.error:
            print(f"{run.name} failed:\n{run.error}", file=sys.stderr)
    return summarise_production(seeds, config, docs, runs, epochs)


def summarise_production(seeds: tuple[int, ...] = PRODUCTION_SEEDS, config: Path = PRODUCTION_CONFIG,
                         docs: Path = DOCS, runs: Path = RUNS, epochs: int | None = None) -> dict:
    planned = epochs or yaml.safe_load(config.read_text())["training"]["epochs"]
    target_sets = {"calibrated": calibrated(), "seed": SEED}
    summary = {"command": command("production"), "config": str(config.relative_to(ROOT) if config.is_relative_to(ROOT)
                                                                   else config),
               "epochs": planned, "seeds": list(seeds), "runs": [], "pass_rates": {}}
    for s in seeds:
        run_dir = runs / "production" / f"stable_production-seed{s}"
        rows = read_jsonl(run_dir / "metrics.jsonl")
        status = read_json(run_dir / "status.json").get("status", "missing")
        entry = _run_summary("stable_production", run_dir.name, TrainRun(run_dir.name, rows=rows, status=status), planned)
        entry["items"] = {name: _items(rows, planned, t) if rows else {} for name, t in target_sets.items()}
        entry["grad_after_epoch1"] = grad_after_first_epoch(rows)
        entry["relational_loss_epoch1"] = rows[0]["loss/relational"] if rows else math.nan
        summary["runs"].append(entry)
    for name in target_sets:
        keys = next((list(r["items"][name]) for r in summary["runs"] if r["items"][name]), [])
        summary["pass_rates"][name] = {k: sum(r["items"][name].get(k, {}).get("pass", False) for r in summary["runs"])
                                       for k in keys}
    atomic_write_json(docs / "production.json", summary)
    plot_runs(summary["runs"], docs / "production.png", f"{summary['config']} over seeds {list(seeds)}, {planned} epochs")
    return summary


# --------------------------------------------------------------------------------------------
# reference: the no-VQ reference judged like the winner (same fresh seeds, same epochs)


def reference_epochs() -> tuple[int, int]:
    """(the main search's max epochs, the production length): the two budgets a winner is judged at."""
    return yaml.safe_load((ROOT / MAIN_SPACE).read_text())["budget"]["max_epochs"], PRODUCTION_EPOCHS


SCHEDULE_KEYS = ("training.lr_schedule", "training.warmup_epochs", "training.final_lr_fraction")


def main_schedule() -> dict:
    """The learning-rate schedule the main space fixes for its trials (its `set:` section), which
    the winner, the production config and so the reference runs train with."""
    fixed = yaml.safe_load((ROOT / MAIN_SPACE).read_text()).get("set") or {}
    return {k: fixed[k] for k in SCHEDULE_KEYS if k in fixed}


def reference_run_name(epochs: int, seed: int, schedule: dict) -> str:
    """A reference run's folder: every schedule setting the main space fixes is in the name
    ("-cosine", "-cosine-2"), so runs of another schedule are never reused."""
    return f"{REFERENCE_CONFIG}-{epochs}ep-seed{seed}" + "".join(f"-{v}" for v in schedule.values())


def stage_reference(workers: int = 2, seeds: tuple[int, ...] = REFERENCE_SEEDS, epochs: tuple[int, ...] | None = None,
                    overrides: tuple[str, ...] = (), docs: Path = DOCS, runs: Path = RUNS) -> dict:
    """configs/diagnostic_no_vq.yaml (no quantizer, the reference loss weights, the run the bars are
    calibrated on) trained afresh with the verification's seeds for each budget and the main space's
    learning-rate schedule, then summarised: can the reference itself pass the checklist under the
    protocol that judges the winner?"""
    epochs = epochs or reference_epochs()
    schedule = main_schedule()
    jobs = [(ROOT / "configs" / f"{REFERENCE_CONFIG}.yaml", reference_run_name(e, s, schedule), runs / "reference",
             [f"seed={s}", f"training.epochs={e}", "training.num_threads=1",
              *(f"{k}={v}" for k, v in schedule.items()), *overrides])
            for e in epochs for s in seeds]
    for run in _run_many(jobs, workers):
        if run.error:
            print(f"{run.name} failed:\n{run.error}", file=sys.stderr)
    return summarise_reference(seeds, epochs, docs, runs)


def summarise_reference(seeds: tuple[int, ...] = REFERENCE_SEEDS, epochs: tuple[int, ...] | None = None,
                        docs: Path = DOCS, runs: Path = RUNS) -> dict:
    """docs/study/reference.json: for each budget, each seed's checklist items (calibrated targets)."""
    epochs = epochs or reference_epochs()
    schedule = main_schedule()
    summary = {"command": command("reference"), "config": f"configs/{REFERENCE_CONFIG}.yaml", "seeds": list(seeds),
               "schedule": schedule,
               "budgets": _no_codebook_budgets(lambda e, s: runs / "reference" / reference_run_name(e, s, schedule),
                                               seeds, epochs)}
    atomic_write_json(docs / "reference.json", summary)
    return summary


def _no_codebook_budgets(run_dir_of: Callable[[int, int], Path], seeds: tuple[int, ...],
                         epochs: tuple[int, ...]) -> dict:
    """{budget: {runs: each seed's status, epochs and checklist items (calibrated targets, the usage
    item left out: no codebook), pass_counts}} for runs without a quantizer."""
    targets, budgets = calibrated(), {}
    for e in epochs:
        entries = []
        for s in seeds:
            run_dir = run_dir_of(e, s)
            rows = read_jsonl(run_dir / "metrics.jsonl")
            status = read_json(run_dir / "status.json").get("status", "missing")
            items = _items(rows, e, targets) if rows else {}
            items.pop("usage_throughout", None)  # no codebook: the usage item does not apply
            entries.append({"seed": s, "status": status, "epochs": rows[-1]["epoch"] if rows else 0, "items": items})
        keys = next((list(r["items"]) for r in entries if r["items"]), [])
        budgets[str(e)] = {"runs": entries,
                           "pass_counts": {k: sum(r["items"].get(k, {}).get("pass", False) for r in entries)
                                           for k in keys}}
    return budgets


# --------------------------------------------------------------------------------------------
# unquantized: the production config without its quantizer, judged like it (same seeds, same budgets)


def unquantized_run_name(epochs: int, seed: int) -> str:
    return f"stable_production-no-vq-{epochs}ep-seed{seed}"


def stage_unquantized(workers: int = 2, seeds: tuple[int, ...] = REFERENCE_SEEDS, epochs: tuple[int, ...] | None = None,
                      config: Path = PRODUCTION_CONFIG, overrides: tuple[str, ...] = (), docs: Path = DOCS,
                      runs: Path = RUNS) -> dict:
    """configs/stable_production.yaml with `vq.enabled=false`: the winner's own aggregator, loss
    weights and schedule without the codebook, trained with the verification's seeds for each
    budget (the main search's and the production length), then summarised: the control that prices
    the quantizer itself, where the seed's no-VQ reference (stage reference) also differs in its
    aggregator and loss weights."""
    if not config.is_file():
        raise SystemExit(f"{config} is missing: run `{command('main')}` first")
    epochs = epochs or reference_epochs()
    jobs = [(config, unquantized_run_name(e, s), runs / "unquantized",
             [f"seed={s}", f"training.epochs={e}", "training.num_threads=1", "vq.enabled=false", *overrides])
            for e in epochs for s in seeds]
    for run in _run_many(jobs, workers):
        if run.error:
            print(f"{run.name} failed:\n{run.error}", file=sys.stderr)
    return summarise_unquantized(seeds, epochs, config, docs, runs)


def summarise_unquantized(seeds: tuple[int, ...] = REFERENCE_SEEDS, epochs: tuple[int, ...] | None = None,
                          config: Path = PRODUCTION_CONFIG, docs: Path = DOCS, runs: Path = RUNS) -> dict:
    """docs/study/unquantized.json: as reference.json, for the production config without its quantizer."""
    epochs = epochs or reference_epochs()
    summary = {"command": command("unquantized"),
               "config": str(config.relative_to(ROOT) if config.is_relative_to(ROOT) else config),
               "overrides": ["vq.enabled=false"], "seeds": list(seeds),
               "budgets": _no_codebook_budgets(lambda e, s: runs / "unquantized" / unquantized_run_name(e, s),
                                               seeds, epochs)}
    atomic_write_json(docs / "unquantized.json", summary)
    return summary


# --------------------------------------------------------------------------------------------
# fixes: the seed's fixes, FSQ, the codebook counter-measures and order-aware context, 3 seeds each


def stage_fixes(workers: int = 2, epochs: int = FIXES_EPOCHS, seeds: tuple[int, ...] = FIXES_SEEDS,
                variants: tuple[tuple[str, str, tuple[str, ...]], ...] = FIXES, overrides: tuple[str, ...] = (),
                docs: Path = DOCS, runs: Path = RUNS) -> dict:
    """Train each (name, config, overrides) variant with each seed afresh, then summarise."""
    results = runs / "fixes"
    jobs = [(ROOT / "configs" / f"{config}.yaml", f"{_slug(name)}-seed{s}", results,
             [f"seed={s}", f"training.epochs={epochs}", "training.num_threads=1", *extra, *overrides])
            for name, config, extra in variants for s in seeds]
    for run in _run_many(jobs, workers):
        if run.error:
            print(f"{run.name} failed:\n{run.error}", file=sys.stderr)
    return summarise_fixes(epochs, seeds, variants, docs, runs)


def _slug(name: str) -> str:
    """A variant's name as a run name: 'k-means init' -> 'k-means_init'."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


def summarise_fixes(epochs: int = FIXES_EPOCHS, seeds: tuple[int, ...] = FIXES_SEEDS,
                    variants: tuple[tuple[str, str, tuple[str, ...]], ...] = FIXES, docs: Path = DOCS,
                    runs: Path = RUNS) -> dict:
    """Per variant: each item's pass count over the seeds, and the mean and spread of val loss and
    the ranks (the order-aware context question) at the last epoch."""
    import statistics

    targets = calibrated()
    summary = {"command": command("fixes"), "epochs": epochs, "seeds": list(seeds), "targets": targets.as_dict(),
               "variants": []}
    for name, config, extra in variants:
        per_seed = []
        for s in seeds:
            run_dir = runs / "fixes" / f"{_slug(name)}-seed{s}"
            rows = read_jsonl(run_dir / "metrics.jsonl")
            if rows:
                per_seed.append({"seed": s, "status": read_json(run_dir / "status.json").get("status", "missing"),
                                 "epochs": rows[-1]["epoch"], "items": _items(rows, epochs, targets),
                                 "first_refresh_epoch": first_refresh(rows),
                                 **{k: _final(rows, k) for k in ("val/loss", "rank/context", "rank/target",
                                                                  "codebook/usage", "codes/nmi_colour")}})
        keys = list(per_seed[0]["items"]) if per_seed else []

        def stats(key: str) -> dict:
            xs = [r[key] for r in per_seed if math.isfinite(r[key])]
            return {"mean": statistics.fmean(xs) if xs else math.nan,
                    "std": statistics.pstdev(xs) if len(xs) > 1 else math.nan}

        summary["variants"].append({
            "name": name, "config": f"configs/{config}.yaml", "overrides": list(extra), "runs": len(per_seed),
            "pass_counts": {k: sum(r["items"][k]["pass"] for r in per_seed) for k in keys},
            "labels": {k: per_seed[0]["items"][k]["label"] for k in keys} if per_seed else {},
            "passed_all_in_every_seed": bool(per_seed) and all(all(i["pass"] for i in r["items"].values())
                                                              for r in per_seed),
            **{key: stats(key) for key in ("val/loss", "rank/context", "rank/target", "codebook/usage",
                                           "codes/nmi_colour")},
            "seeds": per_seed})
    atomic_write_json(docs / "fixes.json", summary)
    return summary


STAGES = {"collapse": stage_collapse, "confirm": stage_confirm, "calibrate": stage_calibrate,
          "rankcorr": stage_rankcorr, "main": stage_main, "reference": stage_reference,
          "unquantized": stage_unquantized,
          "production": stage_production, "fixes": stage_fixes, "searches": stage_searches}



def run_stage(stage: str, workers: int) -> None:
    started = time.time()
    if stage != "doc":
        STAGES[stage](workers=workers)
    from search.study_doc import write_study_doc

    path = write_study_doc()
    print(f"{stage}: done in {time.time() - started:.0f} s; wrote {path}")
