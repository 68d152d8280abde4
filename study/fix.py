"""The study's answer (Part 2 of docs/study.md): the README's main command as a user runs it,
its winner verified and run for the production length, the controls it is read against (the
no-VQ reference, the winner without its quantizer), the seed's fixes compared, and the quantizer
and context searches."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import yaml

from model.io import atomic_write_json, atomic_write_text
from search.export import read_json, read_jsonl
from search.runs import TrainRun
from search.targets import (SEED, calibrated)

from search.judge import after_first_epoch
from study.common import final_value, checklist_items, run_summary, applicable, pass_counts, trial_base, trials_with_rows, first_refresh, plot_runs, run_many, search_once, without_root
from study.protocol import (DOCS, FIXES, FIXES_EPOCHS, FIXES_SEEDS, MAIN_NAME, MAIN_SPACE, MAIN_VERIFY_SEEDS,
                            PRODUCTION_CONFIG, PRODUCTION_EPOCHS, PRODUCTION_SEEDS, REFERENCE_CONFIG, REFERENCE_SEEDS,
                            ROOT, RUNS, SEARCHES, command)


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
    search_once(space, exp_dir, workers)
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
    for t, rows in trials_with_rows(exp_dir):
        trials.append({**trial_base(t, rows), "passed": items_passed(t.final("score")),
                       "items": checklist_items(rows, planned, judging.targets),
                       "val/loss": final_value(rows, "val/loss"), "val/loss_reference": final_value(rows, "val/loss_reference"),
                       "rank/context": final_value(rows, "rank/context"),
                       "start": read_json(t.path / "run" / "placement.json").get("start", math.nan),
                       "end": read_json(t.path / "run" / "placement.json").get("end", math.nan)})
    full = [t for t in trials if t["epochs"] >= planned]
    starts = [t["start"] for t in trials if math.isfinite(t["start"])]
    ends = [t["end"] for t in trials if math.isfinite(t["end"])]
    best_id = read_json(exp_dir / "best_trial.json").get("trial_id")
    return {"command": command(stage),
            "search_command": f"python scripts/search.py {space_path}",
            "experiment": str(exp_dir.relative_to(ROOT) if exp_dir.is_relative_to(ROOT) else exp_dir),
            "budget": space["budget"], "targets": judging.targets.as_dict(),
            "statuses": {st: sum(t["status"] == st for t in trials) for st in sorted({t["status"] for t in trials})},
            "trials_span_s": (max(ends) - min(starts)) if starts and ends else math.nan,
            "best": without_root(read_json(exp_dir / "best_trial.json")), "top": trials[:5],
            "full_budget_trials": len(full),
            "item_pass_counts_full_budget": pass_counts([t["items"] for t in full]),
            "groups": _groups(trials, group_by, planned) if group_by else {}, "group_by": group_by,
            "loss_yardstick": loss_yardstick(full, space),
            "verify": without_root(read_json(exp_dir / "verify.json")),
            "verify_grad_after_epoch1": [after_first_epoch(read_jsonl(path)) for path in
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
                     runs: Path = RUNS, stage: str = "production") -> dict:
    """Train the production config afresh with each seed (all at once, one thread each), then
    summarise; `stage` names its runs' folder, its summary (docs/study/<stage>.json) and command."""
    if not config.is_file():
        raise SystemExit(f"{config} is missing: run `{command('main')}` first")
    results = runs / stage
    extra = [f"training.epochs={epochs}"] if epochs else []
    jobs = [(config, f"stable_production-seed{s}", results, [f"seed={s}", "training.num_threads=1", *extra, *overrides])
            for s in seeds]
    run_many(jobs, max(workers, len(seeds)))
    return summarise_production(seeds, config, docs, runs, epochs, stage)


def stage_start_production(workers: int = 3) -> dict:
    """configs/stable_production.yaml as stage `production` runs it, made again with the codebook's
    own stream (Part 4): the shipped config from the start the study now has."""
    return stage_production(workers, stage="startproduction")


def summarise_production(seeds: tuple[int, ...] = PRODUCTION_SEEDS, config: Path = PRODUCTION_CONFIG,
                         docs: Path = DOCS, runs: Path = RUNS, epochs: int | None = None,
                         stage: str = "production") -> dict:
    planned = epochs or yaml.safe_load(config.read_text())["training"]["epochs"]
    target_sets = {"calibrated": calibrated(), "seed": SEED}
    summary = {"command": command(stage), "config": str(config.relative_to(ROOT) if config.is_relative_to(ROOT)
                                                        else config),
               "epochs": planned, "seeds": list(seeds), "runs": [], "pass_rates": {}}
    for s in seeds:
        run_dir = runs / stage / f"stable_production-seed{s}"
        rows = read_jsonl(run_dir / "metrics.jsonl")
        status = read_json(run_dir / "status.json").get("status", "missing")
        entry = run_summary("stable_production", run_dir.name, TrainRun(run_dir.name, rows=rows, status=status), planned)
        entry["items"] = {name: checklist_items(rows, planned, t) if rows else {} for name, t in target_sets.items()}
        entry["grad_after_epoch1"] = after_first_epoch(rows)
        entry["relational_loss_epoch1"] = rows[0]["loss/relational"] if rows else math.nan
        summary["runs"].append(entry)
    for name in target_sets:
        summary["pass_rates"][name] = pass_counts([r["items"][name] for r in summary["runs"]])
    atomic_write_json(docs / f"{stage}.json", summary)
    plot_runs(summary["runs"], docs / f"{stage}.png", f"{summary['config']} over seeds {list(seeds)}, {planned} epochs")
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
    run_many(jobs, workers)
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
            items = applicable(checklist_items(rows, e, targets)) if rows else {}  # no codebook: usage is n/a
            entries.append({"seed": s, "status": status, "epochs": rows[-1]["epoch"] if rows else 0, "items": items})
        budgets[str(e)] = {"runs": entries, "pass_counts": pass_counts([r["items"] for r in entries])}
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
    run_many(jobs, workers)
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
    run_many(jobs, workers)
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
                                 "epochs": rows[-1]["epoch"], "items": checklist_items(rows, epochs, targets),
                                 "first_refresh_epoch": first_refresh(rows),
                                 **{k: final_value(rows, k) for k in ("val/loss", "rank/context", "rank/target",
                                                                  "codebook/usage", "codes/nmi_colour")}})
        keys = list(per_seed[0]["items"]) if per_seed else []

        def stats(key: str) -> dict:
            xs = [r[key] for r in per_seed if math.isfinite(r[key])]
            return {"mean": statistics.fmean(xs) if xs else math.nan,
                    "std": statistics.pstdev(xs) if len(xs) > 1 else math.nan}

        summary["variants"].append({
            "name": name, "config": f"configs/{config}.yaml", "overrides": list(extra), "runs": len(per_seed),
            "pass_counts": pass_counts([r["items"] for r in per_seed]),
            "labels": {k: per_seed[0]["items"][k]["label"] for k in keys} if per_seed else {},
            "passed_all_in_every_seed": bool(per_seed) and all(all(i["pass"] is not False for i in r["items"].values())
                                                              for r in per_seed),
            **{key: stats(key) for key in ("val/loss", "rank/context", "rank/target", "codebook/usage",
                                           "codes/nmi_colour")},
            "seeds": per_seed})
    atomic_write_json(docs / "fixes.json", summary)
    return summary


