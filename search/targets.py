"""The one place for the thresholds a run is judged by, and the rules built on them.

- `SEED`: the seed's checklist, literally: codebook usage > 15%, context effective rank > 10,
  target effective rank > 20, final val loss < 8.
- `calibrated()`: the same bars re-measured at our model size by `scripts/study.py calibrate`
  (search/study.py: calibrate), read from `search/calibrated_targets.yaml`. The seed put its rank
  bars at 0.79 and 0.81 of its own no-VQ run's lowest ranks (10 / 12.7 and 20 / 24.7);
  calibration applies the same ratio, `CALIBRATION_RATIO`, to the lowest rank our no-VQ
  diagnostic reaches over its epochs and seeds. The seed put its val-loss bar at 8 / 7.75 of its
  no-VQ run's final val loss (`VAL_LOSS_RATIO`); calibration applies it to the highest final val
  loss of our no-VQ diagnostic over its seeds. Usage has no no-VQ reference and keeps the seed's
  15%. Without the file, calibrated() is SEED.
- The bars with no no-VQ figure in the seed (gradient norm mean < 50 and max < 150, no val-loss
  spike over 2x) are the seed's in both sets: `SPIKE_RATIO`, `GRAD_MEAN_MAX`, `GRAD_MAX_MAX`.
- `collapsed(...)`: the collapse rule of the search (its stopper, trials.csv's "collapsed").
- `seed_signature(...)`: whether a run shows the seed's failure (usage below 5% and context rank
  below 3 within 30 epochs), the bar the re-based `configs/sixth_run.yaml` is held to.

Everything that judges a run (search/score.py, search/checklist.py, search/space.py's objective,
search/report.py, search/export.py, search/runner.py, scripts/verify.py) reads these.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml


@dataclass(frozen=True)
class Targets:
    usage: float  # codebook usage (fraction of codes used on the val split)
    context_rank: float  # RankMe effective rank of the aggregated context embeddings
    target_rank: float  # RankMe effective rank of the EMA target embeddings
    source: str  # where the numbers come from, shown beside them in reports
    final_val_loss: float = 8.0  # val loss at the last epoch must be below this (the seed's 8)

    def as_dict(self) -> dict:
        return asdict(self)


SEED = Targets(usage=0.15, context_rank=10.0, target_rank=20.0, source="seed checklist (literal)",
               final_val_loss=8.0)
CALIBRATION_RATIO = 0.8  # the seed's bars over its no-VQ run's lowest ranks: 10/12.7 = 0.79, 20/24.7 = 0.81
VAL_LOSS_RATIO = 8.0 / 7.75  # the seed's val-loss bar over its no-VQ run's final val loss (7.75)
# The seed's bars that have no calibrated counterpart (its no-VQ run's gradient norms are not given).
SPIKE_RATIO, GRAD_MEAN_MAX, GRAD_MAX_MAX = 2.0, 50.0, 150.0
CALIBRATED_FILE = Path(__file__).with_name("calibrated_targets.yaml")

# The collapse stopper's defaults (search/space.py Objective): usage under 2% for 3 epochs in a row.
COLLAPSE_USAGE_FLOOR, COLLAPSE_PATIENCE = 0.02, 3
# The seed's failure, as measured there: usage 24% -> 1.7%, context rank 6.4 -> 1.36-1.88.
SIGNATURE_USAGE, SIGNATURE_CONTEXT_RANK, SIGNATURE_BY_EPOCH = 0.05, 3.0, 30


def calibrated(path: Path = CALIBRATED_FILE) -> Targets:
    """The calibrated targets if `scripts/study.py calibrate` has written them, else SEED."""
    if not path.is_file():
        return SEED
    raw = yaml.safe_load(path.read_text()) or {}
    t = raw.get("targets", {})
    return Targets(usage=float(t.get("usage", SEED.usage)),
                   context_rank=float(t.get("context_rank", SEED.context_rank)),
                   target_rank=float(t.get("target_rank", SEED.target_rank)),
                   final_val_loss=float(t.get("final_val_loss", SEED.final_val_loss)),
                   source=f"calibrated ({path.name}: {raw.get('rule', '')})")


def by_name(name: str) -> Targets:
    """'seed' -> SEED, 'calibrated' -> calibrated()."""
    if name == "seed":
        return SEED
    if name == "calibrated":
        return calibrated()
    raise ValueError(f"unknown target set {name!r} (allowed: seed, calibrated)")


def calibrate_from(no_vq_ranks_context: list[float], no_vq_ranks_target: list[float],
                   no_vq_final_val_losses: list[float], ratio: float = CALIBRATION_RATIO,
                   val_loss_ratio: float = VAL_LOSS_RATIO) -> Targets:
    """Rank targets = ratio x the lowest rank the no-VQ diagnostic shows (over epochs and seeds);
    val-loss bar = val_loss_ratio x the highest final val loss it ends with (over seeds)."""
    return Targets(usage=SEED.usage, context_rank=round(ratio * min(no_vq_ranks_context), 2),
                   target_rank=round(ratio * min(no_vq_ranks_target), 2),
                   final_val_loss=round(val_loss_ratio * max(no_vq_final_val_losses), 2),
                   source=f"calibrated: {ratio} x the no-VQ diagnostic's lowest rank, "
                          f"{val_loss_ratio:.3f} x its highest final val loss")


def collapsed(usage_history: list[float], floor: float = COLLAPSE_USAGE_FLOOR,
              patience: int = COLLAPSE_PATIENCE) -> bool:
    """The collapse rule: codebook usage below `floor` in each of the last `patience` epochs
    (NaN, i.e. no codes, never counts as low)."""
    last = usage_history[-patience:]
    return len(last) == patience and all(math.isfinite(u) and u < floor for u in last)


def seed_signature(history: list[dict]) -> dict:
    """Does the run show the seed's failure: usage below 5% and context rank below 3 at some
    epoch within the first 30? -> {"reproduced": bool, "epoch": first such epoch or None,
    "min_usage": ..., "min_context_rank": ...} over those epochs."""
    rows = [h for h in history if h["epoch"] <= SIGNATURE_BY_EPOCH]
    hit = next((h["epoch"] for h in rows if h["codebook/usage"] < SIGNATURE_USAGE
                and h["rank/context"] < SIGNATURE_CONTEXT_RANK), None)
    return {"reproduced": hit is not None, "epoch": hit,
            "min_usage": min((h["codebook/usage"] for h in rows), default=math.nan),
            "min_context_rank": min((h["rank/context"] for h in rows), default=math.nan)}


# --------------------------------------------------------------------------------------------
# An experiment's judging settings, frozen into results/<experiment>/targets.json at its start so
# that a later recalibration never changes how an old experiment is read.

JUDGING_FILE = "targets.json"


@dataclass(frozen=True)
class Judging:
    goal: str  # health | collapse
    targets: Targets  # the bars the score and the checklist used
    collapse_floor: float = COLLAPSE_USAGE_FLOOR
    collapse_patience: int = COLLAPSE_PATIENCE

    @property
    def mode(self) -> str:
        return "min" if self.goal == "collapse" else "max"

    def as_dict(self) -> dict:
        return {"goal": self.goal, "mode": self.mode, "targets": self.targets.as_dict(), "seed": SEED.as_dict(),
                "collapse_floor": self.collapse_floor, "collapse_patience": self.collapse_patience}


def read_judging(exp_dir: Path) -> Judging:
    """The experiment's targets.json; an experiment from before it existed is read with the
    seed's literal targets, goal health and the default collapse rule."""
    import json

    path = Path(exp_dir) / JUDGING_FILE
    if not path.is_file():
        return Judging("health", SEED)
    raw = json.loads(path.read_text())
    return Judging(raw["goal"], Targets(**raw["targets"]), raw["collapse_floor"], raw["collapse_patience"])
