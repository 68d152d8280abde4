"""The study's first question (Part 1 of docs/study.md): does the seed's collapse happen here?
The failure-seeking search, the seed's runs over three seeds, the targets recalibrated on the
no-VQ run, and whether the search's score ranks configs the same way under another seed."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from model.io import atomic_write_json, atomic_write_text
from search.export import read_json, read_jsonl
from search.runs import TrainRun
from search.targets import CALIBRATED_FILE, CALIBRATION_RATIO, SEED, VAL_LOSS_RATIO, calibrate_from, calibrated
from study.signature import seed_signature, usage_decay

from study.common import final_value, finite_mean, run_summary, trial_base, trials_with_rows, plot_runs, run_many
from study.protocol import (COLLAPSE_NAME, COLLAPSE_SPACE, CONFIRM_CONFIGS, CONFIRM_EPOCHS, CONFIRM_SEEDS, DOCS,
                            RANKCORR_CONFIGS, RANKCORR_EPOCHS, RANKCORR_SAMPLER_SEED, RANKCORR_SEEDS, RANKCORR_SPACE,
                            ROOT, RUNS, command)


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


def summarise_collapse(exp_dir: Path, docs: Path = DOCS, name: str = "collapse", command_text: str | None = None,
                       space_path: str = COLLAPSE_SPACE) -> dict:
    """docs/study/<name>.json and <name>_*.png from a failure-seeking search's experiment (the
    collapse stage's, or the ladder's at its chosen rung)."""
    from search.report import param_importances, load_study, write_report

    write_report(exp_dir)
    docs.mkdir(parents=True, exist_ok=True)
    for plot in ("curves.png", "params.png", "importance.png"):
        if (exp_dir / plot).is_file():
            shutil.copy2(exp_dir / plot, docs / f"{name}_{plot}")
    space = yaml.safe_load((exp_dir / "space.yaml").read_text())
    trials = []
    for t, rows in trials_with_rows(exp_dir):
        trials.append({**trial_base(t, rows),
                       "final": {k: final_value(rows, k) for k in ("codebook/usage", "rank/context", "rank/target",
                                                                "val/loss", "grad/norm_mean", "codes/nmi_colour",
                                                                "codes/nmi_chance")},
                       "min_usage_after_5": min((r["codebook/usage"] for r in rows if r["epoch"] > 5), default=math.nan),
                       "signature": seed_signature(rows), "decay": usage_decay(rows)})
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
                "mean_score": finite_mean([t["score"] for t in group]),
                "mean_usage": finite_mean([t["final"]["codebook/usage"] for t in group]),
                "mean_context_rank": finite_mean([t["final"]["rank/context"] for t in group])}
    summary = {"command": command_text or command("collapse"),
               "search_command": f"python scripts/search.py {space_path} --name {exp_dir.name}", "space": space_path,
               "budget": space["budget"], "importances": importances, "importances_why_not": why_not, "trials": trials,
               "full_budget_trials": len(full), "by_choice": by_choice,
               "signature_reproduced": sum(t["signature"]["reproduced"] for t in trials)}
    atomic_write_json(docs / f"{name}.json", summary)
    return summary



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
    run_many(jobs, workers)
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
            summary["runs"].append(run_summary(c, run.name, run, epochs))
    atomic_write_json(docs / "confirm.json", summary)
    plot_runs(summary["runs"], docs / "confirm.png", f"configs/ over seeds {list(seeds)}, {epochs} epochs")
    return summary



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
    run_many(jobs, workers)
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


