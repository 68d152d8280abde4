"""The trainer's early-stopping rule, in one place: model/train.py's end_epoch applies it epoch by
epoch, and anything that asks "where would a run have stopped?" replays it on a run's val losses
(`stop_epoch`).

The seed's sixth run was "early stopped at epoch 22/80" after its val loss spiked at epoch 13:
patience 10 counted from its last new best. Counting every epoch without a new best ends a run
that has *converged* as well: a val loss sitting on its floor jitters by a fraction of a percent
around its best and sets no new best for ten epochs by chance (docs/study.md: the production
config's runs stopped at 54-79 of 80 epochs with every health item held). The rule therefore has
a floor band:

    new best   v < best - min_delta                    best <- v, bad <- 0
    holding    v - best <= floor_tolerance * |best|    bad <- 0   (the run holds its floor)
    worse      otherwise                               bad <- bad + 1
    stop       bad >= patience, before the run's last epoch

With floor_tolerance = 0 this is the plain patience rule (a tie with the best counts as worse).
The two rules differ only on epochs whose val loss lies inside the band, so a run whose val loss
rises above its floor by more than the band and stays there (a collapse, a divergence, the seed's
spike) is stopped at exactly the same epoch by both; a run that keeps coming back to its floor
is not stopped.
"""

from __future__ import annotations

import math

# The default band: 5% of the best val loss. With early stopping off, the production config's val
# loss sits on its floor for its last 40 of 80 epochs and moves up to 5-6% above its best so far
# (90th percentile 3-4%), so the plain rule ended all three such runs at epochs 66-74 with every
# health item held, while the seed's failure took its val loss to about 3x (27.2 at epoch 13).
# Measured and replayed by `python scripts/study.py patience` (docs/study.md, section 14).
FLOOR_TOLERANCE = 0.05


def patience_step(best: float, bad_epochs: int, val: float, min_delta: float = 0.0,
                  floor_tolerance: float = 0.0) -> tuple[float, int]:
    """One epoch of the rule: (best val loss so far, epochs counted against the run) after an
    epoch with val loss `val` (module docstring). A NaN val loss is never a new best nor holding."""
    if val < best - min_delta:
        return val, 0
    if floor_tolerance > 0 and math.isfinite(best) and val - best <= floor_tolerance * abs(best):
        return best, 0
    return best, bad_epochs + 1


def stop_epoch(val_losses: list[float], patience: int | None, min_delta: float = 0.0,
               floor_tolerance: float = 0.0, epochs: int | None = None) -> int | None:
    """The epoch (1-based) at which the rule ends a run whose per-epoch val losses are
    `val_losses`, or None if it never does within them (or before the run's last epoch,
    `epochs`: a run that reaches it is completed)."""
    if patience is None:
        return None
    best, bad = math.inf, 0
    for epoch, val in enumerate(val_losses, start=1):
        best, bad = patience_step(best, bad, val, min_delta, floor_tolerance)
        if bad >= patience and (epochs is None or epoch < epochs):
            return epoch
    return None
