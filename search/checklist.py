"""The seed's success checklist, evaluated on a run's per-epoch history (metrics.jsonl rows).

The seed's isotropy item (> 1e-5) is left out: its measure sat near 1e-5 in healthy and
collapsed runs alike; ours (model/metrics.py) is reported but has no agreed threshold.
"""

from __future__ import annotations

import math

USAGE_MIN, CONTEXT_RANK_MIN, TARGET_RANK_MIN = 0.15, 10.0, 20.0
SPIKE_RATIO, GRAD_MEAN_MAX, GRAD_MAX_MAX, FINAL_VAL_LOSS_MAX = 2.0, 50.0, 150.0, 8.0


def evaluate_checklist(history: list[dict], planned_epochs: int) -> dict[str, dict]:
    """Each item -> {"pass": bool, "value": ...}. An empty history fails every item."""
    if not history:
        return {"ran": {"pass": False, "value": 0}}
    usage = [h["codebook/usage"] for h in history]
    val = [h["val/loss"] for h in history]
    last = history[-1]
    spikes = [b / a for a, b in zip(val, val[1:]) if a > 0]
    items = {
        "usage_above_15pct_throughout": (min(usage), all(math.isfinite(u) and u > USAGE_MIN for u in usage)),
        "context_rank_above_10": (last["rank/context"], last["rank/context"] > CONTEXT_RANK_MIN),
        "target_rank_above_20": (last["rank/target"], last["rank/target"] > TARGET_RANK_MIN),
        "no_val_spike_over_2x": (max(spikes, default=1.0), all(s <= SPIKE_RATIO for s in spikes)),
        "grad_norm_mean_below_50": (max(h["grad/norm_mean"] for h in history),
                                    all(h["grad/norm_mean"] < GRAD_MEAN_MAX for h in history)),
        "grad_norm_max_below_150": (max(h["grad/norm_max"] for h in history),
                                    all(h["grad/norm_max"] < GRAD_MAX_MAX for h in history)),
        "completed_all_epochs": (last["epoch"], last["epoch"] >= planned_epochs),
        "final_val_loss_below_8": (last["val/loss"], last["val/loss"] < FINAL_VAL_LOSS_MAX),
    }
    return {k: {"pass": bool(ok), "value": v} for k, (v, ok) in items.items()}
