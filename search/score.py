"""The search's objective: the seed's checklist, judged on the run so far, plus a health margin.

    items  = search/judge.py's items on the trial's history up to this epoch, against the
             trial's whole budget (usage judged *throughout*, ranks and val loss at this epoch,
             gradient norms and spikes over every epoch so far, "ran all epochs" passing only once
             the trial has run its budget, so an ASHA-stopped trial never outranks a finished one
             on that item)
    margin = weighted geometric mean of  usage_min / usage_target,
                                         rank_context / context_rank_target,
                                         rank_target / target_rank_target
             (usage_min: lowest usage over the run so far; 0 when there are no codes)
    score  = passed(items) + margin / (1 + margin)          in [0, n_items + 1)
    score  = -1                                              for a diverged trial (NaN/inf loss)

So the search optimises what the checklist judges, item by item: a trial that passes more items
always scores higher (the integer part is the pass count), and no item is out of the search's
sight (usage *throughout* is in it, which a final-epoch score cannot see). Among trials passing
the same items, the larger margin over the collapse bars wins. The margin is uncapped on
purpose: it is the tie-break among trials that all pass, and it is chosen by measurement:
docs/study.md's rank-correlation section (`python scripts/study.py rankcorr`) compares how well
its order and val loss's order repeat across seeds. The targets come from search/targets.py (the
space's `objective.targets`: calibrated or seed).

Items a trainer never reports a metric for are n/a (search/judge.py) and count as not passed:
the score counts passed items only. Within one search every trial runs the same trainer and
reports the same metrics, so the same items apply to every trial and scores compare; a trial
that reports no codebook (usage n/a) scores below an otherwise equal one that keeps its codes,
as a search for a VQ model should. A margin ratio whose metric is n/a makes the margin 0 unless
its weight is 0 (a trainer without a target encoder: set `objective.target_rank_weight: 0`).

With `objective.goal: collapse` the search looks for failure: ASHA and Optuna minimise the same
score. A diverged trial (NaN/inf) is a different failure from the seed's collapse, so under that
goal it scores DIVERGED_SCORE_COLLAPSE_GOAL, above every finite score, and never wins.
"""

from __future__ import annotations

import math

from search.judge import checklist
from search.targets import SEED, Targets

DIVERGED_SCORE = -1.0
DIVERGED_SCORE_COLLAPSE_GOAL = 100.0  # above every finite score (at most n_items + 1)


def diverged_score(goal: str) -> float:
    """The score of a diverged trial: the worst value for the goal (health: max, collapse: min)."""
    return DIVERGED_SCORE_COLLAPSE_GOAL if goal == "collapse" else DIVERGED_SCORE


def health_margin(usage_min: float, rank_context: float, rank_target: float, targets: Targets = SEED,
                  weights: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> float:
    """Weighted geometric mean of the three ratios metric / target (1 = exactly at every bar).

        margin = exp( sum_i w_i log(r_i) / sum_i w_i ),   r = (usage_min / usage_target,
                                                              rank_context / context_rank_target,
                                                              rank_target / target_rank_target)

    A ratio <= 0 or NaN with a positive weight (no codes, no rank) makes the margin 0."""
    ratios = (usage_min / targets.usage, rank_context / targets.context_rank, rank_target / targets.target_rank)
    total = sum(weights)
    log_sum = 0.0
    for r, w in zip(ratios, weights):
        if w == 0:
            continue
        if not (math.isfinite(r) and r > 0):
            return 0.0
        log_sum += w * math.log(r)
    return math.exp(log_sum / total)


def checklist_score(items: dict[str, dict], margin: float) -> float:
    """passed(items) + margin / (1 + margin): the pass count first (n/a items are not passed), the
    margin within it."""
    return sum(i["pass"] is True for i in items.values()) + margin / (1.0 + margin)


def run_score(history: list[dict], planned_epochs: int, targets: Targets = SEED,
              weights: tuple[float, float, float] = (1.0, 1.0, 1.0), goal: str = "health") -> float:
    """The objective of a run whose per-epoch rows (metrics.jsonl) are `history`, judged against a
    plan of `planned_epochs`. A metric the run does not report counts as NaN (its ratio then
    zeroes the margin unless its weight is 0); a reported val loss that is not finite is a diverged run."""
    if not history or not math.isfinite(history[-1].get("val/loss", 0.0)):
        return diverged_score(goal)
    return checklist_score(checklist(history, planned_epochs, targets), run_margin(history, targets, weights))


def run_margin(history: list[dict], targets: Targets = SEED,
               weights: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> float:
    """health_margin of a run's per-epoch rows: its lowest usage over the run (no codes: 0) and
    its ranks at the last epoch; 0 for a run without epochs."""
    if not history:
        return 0.0
    last = history[-1]
    usages = [h.get("codebook/usage", math.nan) for h in history]
    usage_min = min((0.0 if not math.isfinite(u) else u) for u in usages)  # no codes: usage 0
    return health_margin(usage_min, last.get("rank/context", math.nan), last.get("rank/target", math.nan),
                         targets, weights)


def objective_score(history: list[dict], planned_epochs: int, objective) -> float:
    """run_score with a space's `objective` (search/space.py: Objective) targets, weights and goal."""
    o = objective
    return run_score(history, planned_epochs, o.resolved_targets(),
                     (o.usage_weight, o.context_rank_weight, o.target_rank_weight), o.goal)


def items_passed(score: float) -> int | None:
    """The pass count a finite, non-diverged score carries in its integer part."""
    if not math.isfinite(score) or score < 0 or score >= DIVERGED_SCORE_COLLAPSE_GOAL:
        return None
    return int(math.floor(score))


def margin_of(score: float) -> float:
    """The health margin a finite, non-diverged score carries: its fractional part f = m / (1 + m),
    so m = f / (1 - f) (NaN for a diverged or non-finite score)."""
    if items_passed(score) is None:
        return math.nan
    fraction = score - math.floor(score)
    return fraction / (1.0 - fraction)
