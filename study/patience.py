"""Is the trainer's patience rule right for a converged run? (Issue: "completes 80 epochs without
early stopping" is passed only by luck.)

    patience  the production config over PATIENCE_SEEDS, and the sixth run and the closest-to-
              collapse config over the first of them, each for 80 epochs with early stopping off
              (every epoch logged); then both rules (model/early_stopping.py: the plain patience
              rule, floor_tolerance 0, and the default with its floor band) replayed on every run's
              val losses, and on the per-epoch histories already on record in docs/study/*.json

The replay is exact: the rule is a pure function of the val losses (stop_epoch), and a run with
early stopping off has the same epochs as one with it on up to where it would have stopped.
"""

from __future__ import annotations

import math
from pathlib import Path

from model.config import TrainConfig
from model.early_stopping import FLOOR_TOLERANCE, stop_epoch
from model.io import atomic_write_json
from search.export import read_json, read_jsonl
from search.judge import checklist
from search.targets import calibrated
from study.common import run_many
from study.protocol import DOCS, PATIENCE_EPOCHS, PATIENCE_RUNS, PRODUCTION_EPOCHS, ROOT, RUNS, command

EXCESS_FROM_EPOCH = 40  # the val loss's distance above its running best is measured after this epoch


def excess_over_best(val_losses: list[float], after: int = EXCESS_FROM_EPOCH) -> dict:
    """How far the val loss sits above its running best, (v_t / min_{s<=t} v_s) - 1, over the epochs
    after `after`: its median, 90th percentile and maximum (None without such epochs)."""
    best, excess = math.inf, []
    for v in val_losses:
        best = min(best, v)
        excess.append(v / best - 1.0)
    tail = sorted(excess[after:])
    if not tail:
        return {"median": None, "p90": None, "max": None}
    return {"median": tail[len(tail) // 2], "p90": tail[min(len(tail) - 1, int(0.9 * len(tail)))], "max": tail[-1]}


def replay(rows: list[dict], planned: int, patience: int, targets) -> dict:
    """Where each rule stops a run (None: never), its best epoch, and which health items it holds."""
    vals = [r["val/loss"] for r in rows]
    items = checklist(rows, len(rows), targets)  # every epoch it ran, judged as if planned
    health = ("usage_throughout", "context_rank", "target_rank", "no_val_spike", "grad_norm_mean", "grad_norm_max")
    return {"epochs": len(rows), "best_epoch": min(range(len(vals)), key=vals.__getitem__) + 1,
            "stop_plain": stop_epoch(vals, patience, 0.0, 0.0, planned),
            "stop_band": stop_epoch(vals, patience, 0.0, FLOOR_TOLERANCE, planned),
            "excess": excess_over_best(vals), "min_usage": min((r.get("codebook/usage", math.nan) for r in rows),
                                                               default=math.nan),
            "health_failed": [items[k]["label"] for k in health if k in items and items[k]["pass"] is False]}


def _recorded_histories(docs: Path) -> list[tuple[str, list[dict]]]:
    """(label, per-epoch rows) of every run whose whole history a study summary keeps."""
    out = []
    for stage in ("confirm", "production"):
        for run in read_json(docs / f"{stage}.json").get("runs", []):
            if run.get("history"):
                out.append((f"{stage}: {run['name']}", run["history"]))
    return out


def stage_patience(workers: int = 2, docs: Path = DOCS, runs: Path = RUNS) -> dict:
    folder = runs / "patience"
    run_many([(ROOT / "configs" / f"{config}.yaml", f"{config}-seed{seed}", folder,
               [f"seed={seed}", f"training.epochs={PATIENCE_EPOCHS}", "training.num_threads=1",
                "training.early_stopping.patience=null"])
              for config, seed in PATIENCE_RUNS if not (folder / f"{config}-seed{seed}" / "status.json").is_file()], workers)
    return summarise_patience(docs, runs)


def summarise_patience(docs: Path = DOCS, runs: Path = RUNS) -> dict:
    """docs/study/patience.json: both rules replayed on the stage's runs and on the recorded ones."""
    patience = TrainConfig().training.early_stopping.patience
    targets = calibrated()
    fresh = {f"{config}-seed{seed}": replay(rows, PATIENCE_EPOCHS, patience, targets)
             for config, seed in PATIENCE_RUNS
             if (rows := read_jsonl(runs / "patience" / f"{config}-seed{seed}" / "metrics.jsonl"))}
    # a recorded run's plan: the production length, or the epochs it ran (confirm's runs ran theirs)
    recorded = {label: replay(rows, PRODUCTION_EPOCHS if label.startswith("production") else len(rows), patience, targets)
                for label, rows in _recorded_histories(docs)}
    summary = {"command": command("patience"), "epochs": PATIENCE_EPOCHS, "patience": patience,
               "floor_tolerance": FLOOR_TOLERANCE, "excess_from_epoch": EXCESS_FROM_EPOCH,
               "targets": targets.as_dict(), "runs": fresh, "recorded": recorded,
               "runs_core_s": round(sum(r["time/epoch_s"] for config, seed in PATIENCE_RUNS for r in
                                        read_jsonl(runs / "patience" / f"{config}-seed{seed}" / "metrics.jsonl")), 1)}
    atomic_write_json(docs / "patience.json", summary)
    return summary
