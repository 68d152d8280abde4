"""The one place for the thresholds a run is judged by, the seed's own figures they come from,
and the rules built on them.

- `SEED`: the seed's checklist, literally (codebook usage, context and target effective rank,
  final val loss).
- `SEED_NO_VQ`: the figures the seed reports for its no-VQ diagnostic (calibration starts from
  them; its failed sixth run's figures and the signature rule are the study's: study/signature.py).
- `calibrated()`: the same bars re-measured at our model size by `python scripts/study.py
  calibrate` (study/collapse.py), read from `search/calibrated_targets.yaml`. The seed put its rank
  bars just under its own no-VQ run's lowest ranks (SEED over SEED_NO_VQ's first-epoch ranks);
  calibration applies that ratio, `CALIBRATION_RATIO`, to the lowest rank our no-VQ diagnostic
  reaches over its epochs and seeds. The seed put its val-loss bar just above its no-VQ run's
  final val loss (`VAL_LOSS_RATIO`); calibration applies it to the highest final val loss of our
  no-VQ diagnostic over its seeds. Usage has no no-VQ reference and keeps the seed's bar. Without
  the file, calibrated() is SEED.
- The bars with no no-VQ figure in the seed (the gradient-norm mean and max, the val-loss spike)
  are the seed's in both sets: `SPIKE_RATIO`, `GRAD_MEAN_MAX`, `GRAD_MAX_MAX`.
- `collapsed(...)`: the collapse rule of the search (its stopper, trials.csv's "collapsed").

Everything that judges a run reads these through search/judge.py (the checklist, the ranking of
trials) or directly (search/score.py's margin, search/space.py's objective, the collapse stopper).
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
# The seed's own figures for its no-VQ diagnostic, as its report gives them (../shared/seed): context
# rank from its first to its last epoch, target rank likewise, final val loss.
SEED_NO_VQ = {"context_rank": (12.7, 33.2), "target_rank": (24.7, 43.1), "final_val_loss": 7.75}
CALIBRATION_RATIO = 0.8  # the seed's rank bars over its no-VQ run's lowest ranks: 10 / 12.7 and 20 / 24.7, rounded
VAL_LOSS_RATIO = SEED.final_val_loss / SEED_NO_VQ["final_val_loss"]  # the seed's val-loss bar over its no-VQ final
# The seed's bars that have no calibrated counterpart (its no-VQ run's gradient norms are not given).
SPIKE_RATIO, GRAD_MEAN_MAX, GRAD_MAX_MAX = 2.0, 50.0, 150.0
CALIBRATED_FILE = Path(__file__).with_name("calibrated_targets.yaml")

# The collapse stopper's defaults (search/space.py Objective): usage under 2% for 3 epochs in a row.
COLLAPSE_USAGE_FLOOR, COLLAPSE_PATIENCE = 0.02, 3


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


# --------------------------------------------------------------------------------------------
# An experiment's judging settings, frozen into results/<experiment>/targets.json at its start so
# that a later recalibration never changes how an old experiment is read.

JUDGING_FILE = "targets.json"


def mode_of(goal: str) -> str:
    """'max' for goal health, 'min' for goal collapse: how ASHA, Optuna, the export and the report
    rank scores (search/judge.py: sign)."""
    return "min" if goal == "collapse" else "max"


@dataclass(frozen=True)
class Judging:
    goal: str  # health | collapse
    targets: Targets  # the bars the score and the checklist used
    collapse_floor: float = COLLAPSE_USAGE_FLOOR
    collapse_patience: int = COLLAPSE_PATIENCE

    @property
    def mode(self) -> str:
        return mode_of(self.goal)

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
