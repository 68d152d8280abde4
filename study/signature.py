"""The seed's failure as the study tests for it: its sixth run's own figures and the signature
rule every rung, seed and stage of docs/study.md is held to. Study-only: a search judges runs by
the checklist (search/judge.py) and stops collapsed trials by search/targets.py's collapse rule.

- `SEED_SIXTH_RUN`: the seed's failed sixth run, as its report gives it (../shared/seed).
- `seed_signature(history)`: does a run show the seed's failure, usage below SIGNATURE_USAGE
  and context rank below SIGNATURE_CONTEXT_RANK in one epoch within SIGNATURE_BY_EPOCH epochs.
- `usage_decay(history)`: did usage fall as the seed's did, from a healthy level (HEALTHY_USAGE,
  the low edge of the seed's 24% start) to below SIGNATURE_USAGE at a later epoch? The signature
  alone also fires for a run that starts collapsed; the seed's run was healthy first.
"""

from __future__ import annotations

import math

# The seed's sixth run: usage first -> last epoch; context rank's range at the end, and at the start;
# the epoch it stopped at, of its plan; its val-loss spike (value, epoch); its dead-code refresh's interval (steps).
SEED_SIXTH_RUN = {"usage": (0.24, 0.017), "context_rank": (1.36, 1.88), "stopped_at": 22, "planned_epochs": 80,
                  "context_rank_start": 6.4, "val_loss_spike": (27.2, 13), "refresh_interval": 500}
# The seed's failure, as measured there: usage 24% -> 1.7%, context rank 6.4 -> 1.36-1.88.
SIGNATURE_USAGE, SIGNATURE_CONTEXT_RANK, SIGNATURE_BY_EPOCH = 0.05, 3.0, 30
HEALTHY_USAGE = 0.20  # the seed's run started at 24%: a run "healthy first" reached this much usage


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


def usage_decay(history: list[dict]) -> dict:
    """Did usage decay like the seed's (24% -> 1.7%): at or above HEALTHY_USAGE at some epoch s
    and below SIGNATURE_USAGE at a later epoch t > s? Also the epoch of the lowest usage (where a
    run that starts collapsed has it: epoch 1). -> {"decayed": bool, "healthy_epoch": first s or
    None, "epoch": first such t or None, "lowest_usage_epoch": ...}."""
    rows = [h for h in history if math.isfinite(h["codebook/usage"])]
    healthy = next((h["epoch"] for h in rows if h["codebook/usage"] >= HEALTHY_USAGE), None)
    fell = next((h["epoch"] for h in rows if healthy is not None and h["epoch"] > healthy
                 and h["codebook/usage"] < SIGNATURE_USAGE), None)
    lowest = min(rows, key=lambda h: h["codebook/usage"])["epoch"] if rows else None
    return {"decayed": fell is not None, "healthy_epoch": healthy, "epoch": fell, "lowest_usage_epoch": lowest}
