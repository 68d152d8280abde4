"""The search's objective: a bounded composite of codebook usage and effective rank.

    s_u = min(1, usage / usage_target)              (usage = 0 when there are no codes)
    s_c = min(1, rank_context / context_rank_target)
    s_t = min(1, rank_target / target_rank_target)
    health = (w_u s_u + w_c s_c + w_t s_t) / (w_u + w_c + w_t)          in [0, 1]
    score  = health                         if any target is missed   (in [0, 1))
           = 1 + 1 / (1 + val_loss)         if every target is met    (in (1, 2])
    score  = -1                             for a diverged trial (NaN/inf loss)

Each term is increasing in its metric and capped at its target, so a trial cannot buy rank
with usage past the target; among healthy trials (every target met) the lower val loss wins.
A collapsed trial misses at least one target, so it scores below every healthy one.
The targets come from search/targets.py: the space's `objective.targets` picks the calibrated set
(default) or the seed's literal one (usage 15%, context rank 10, target rank 20).

With `objective.goal: collapse` the search looks for failure: ASHA and Optuna minimise the same
score. A diverged trial (NaN/inf) is a different failure from the seed's collapse, so under that
goal it scores DIVERGED_SCORE_COLLAPSE_GOAL, above every finite score, and never wins.
"""

from __future__ import annotations

import math

from search.targets import SEED

DIVERGED_SCORE = -1.0
DIVERGED_SCORE_COLLAPSE_GOAL = 3.0  # > 2, the highest finite score


def diverged_score(goal: str) -> float:
    """The score of a diverged trial: the worst value for the goal (health: max, collapse: min)."""
    return DIVERGED_SCORE_COLLAPSE_GOAL if goal == "collapse" else DIVERGED_SCORE


def goal_mode(goal: str) -> str:
    """'max' for goal health, 'min' for goal collapse: how ASHA, Optuna and the export rank scores."""
    return "min" if goal == "collapse" else "max"


def composite_score(usage: float, rank_context: float, rank_target: float, val_loss: float,
                    usage_target: float = SEED.usage, context_rank_target: float = SEED.context_rank,
                    target_rank_target: float = SEED.target_rank, usage_weight: float = 1.0,
                    context_rank_weight: float = 1.0, target_rank_weight: float = 1.0) -> float:
    if not math.isfinite(val_loss):
        return DIVERGED_SCORE
    usage = 0.0 if not math.isfinite(usage) else usage
    parts = [(min(1.0, usage / usage_target), usage_weight),
             (min(1.0, rank_context / context_rank_target), context_rank_weight),
             (min(1.0, rank_target / target_rank_target), target_rank_weight)]
    if all(s >= 1.0 for s, _ in parts):
        return 1.0 + 1.0 / (1.0 + max(0.0, val_loss))
    return sum(s * w for s, w in parts) / sum(w for _, w in parts)


def epoch_score(metrics: dict, objective) -> float:
    """composite_score of one epoch's trainer metrics with a space's `objective` targets and weights."""
    o, t = objective, objective.resolved_targets()
    return composite_score(metrics["codebook/usage"], metrics["rank/context"], metrics["rank/target"],
                           metrics["val/loss"], usage_target=t.usage,
                           context_rank_target=t.context_rank, target_rank_target=t.target_rank,
                           usage_weight=o.usage_weight, context_rank_weight=o.context_rank_weight,
                           target_rank_weight=o.target_rank_weight)
