"""The final race: the exploration's best configs retrained on fresh seeds at the production budget.

A search's exploration (TPE + ASHA) judges each config on one seed at up to `budget.max_epochs`;
the trial that scores best on one seed is, more often than not, the luckiest rather than the most
robust. The race (the space's `final: {top_k, seeds, epochs}`, search/space.py: Final) then runs
each of the top_k trials on `seeds` fresh seeds for `epochs` epochs, as Ray Tune trials of a second
experiment, `<experiment>/final/`, on the same cluster, dashboard and storage, resumable the same
way. Its anchors are SMAC3's intensification (a challenger gets more seeds only while it keeps up
with the incumbent) and irace's racing (candidates are dropped as the evidence against them
accumulates); here the evidence is exact rather than statistical:

- every checklist item judged over every epoch so far (search/judge.py: SETTLED_ON_FAILURE) that
  a run has failed stays failed, so `checklist/can_pass` (reported each epoch) bounds the items
  the run can pass when it ends;
- a finalist's standing is the items passed in its *worst* seed; once some finalist has finished
  all its seeds with W items in its worst, any finalist whose worst seed can no longer reach W
  (`eliminated`) is stopped, and its seeds not yet started never run (search/runner.py:
  RaceScheduler applies the rule to the live trials).

Finalists run in the exploration's order, seed after seed (the incumbent first), so the bar is set
as early as possible. The winner (`ranking`) passes the most items in its worst seed, then has the
largest mean health margin (the fractional part of the score: search/score.py). With
`--no-early-stopping` nothing is stopped: every finalist runs every seed.

    results/<experiment>/race_plan.json     the finalists, seeds and epochs, fixed when the race starts
    results/<experiment>/final/trial_<id>/  one Ray trial per (finalist, seed): run/ as in the exploration
    results/<experiment>/race.json          the outcome (`race_outcome`): per finalist and seed, the
                                            verdict; the ranking, the winner, the trial-epochs run
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from model.io import atomic_write_json
from search.export import RACE_OUTCOME_FILE, planned_epochs, read_json, read_jsonl, read_trials
from search.judge import checklist, ranked, verdict
from search.metrics import item_ids
from search.score import margin_of
from search.targets import read_judging

RACE_DIR = "final"  # the race's Ray experiment, inside the search's
PLAN_FILE = "race_plan.json"
RACE_KEY = "race"  # a race trial's config: {"race": {"finalist": trial id, "seed": s, "params": {...}}}


# --------------------------------------------------------------------------------------------
# The plan: who races, on which seeds


def make_plan(exp_dir: Path, top_k: int, seeds: int, epochs: int, seed_base: int) -> dict:
    """The race's finalists (the exploration's top_k trials by final score, search/judge.py:
    ranked, best first), seeds and epochs, and its entries in the order they run: finalist by
    finalist, seed by seed."""
    finalists = ranked(read_trials(exp_dir), read_judging(exp_dir).mode)[:top_k]
    seed_list = [seed_base + i for i in range(seeds)]
    return {"top_k": top_k, "seeds": seed_list, "epochs": epochs,
            "finalists": [{"trial_id": t.trial_id, "score": t.final("score"), "params": t.params} for t in finalists],
            "entries": [{"finalist": t.trial_id, "seed": s, "params": t.params} for t in finalists for s in seed_list]}


# --------------------------------------------------------------------------------------------
# The racing rule


@dataclass(frozen=True)
class SeedRun:
    """One finalist's run on one seed, as far as it has gone: `ended` (its trainer's last epoch,
    an early stop, a collapse, a divergence or an error), `passed` (items passed at its latest
    report) and `can_pass` (the most it can pass when it ends; None: not started)."""

    ended: bool
    passed: int = 0
    can_pass: int | None = None

    @property
    def upper_bound(self) -> int:
        if self.ended:
            return self.passed
        return len(item_ids()) if self.can_pass is None else self.can_pass


def from_result(ended: bool, result: dict | None) -> SeedRun:
    """A SeedRun from a trial's latest report (None: it has not reported); a diverged trial's
    last report carries no checklist and counts as passing nothing."""
    if not result:
        return SeedRun(ended=ended)
    passed = int(result.get("checklist/passed", 0))
    can_pass = result.get("checklist/can_pass")
    return SeedRun(ended=ended, passed=passed, can_pass=None if can_pass is None else int(can_pass))


def eliminated(runs: dict[str, list[SeedRun]]) -> set[str]:
    """The finalists that can no longer win: the upper bound of the items passed in their worst
    seed is below the items passed in the worst seed of a finalist whose runs have all ended.

        bar  = max over finished finalists f of  min over f's seeds of passed
        out  = {g unfinished : min over g's seeds of upper_bound < bar}
    """
    finished = {f: min(r.passed for r in rs) for f, rs in runs.items() if rs and all(r.ended for r in rs)}
    if not finished:
        return set()
    bar = max(finished.values())
    return {f for f, rs in runs.items() if f not in finished and min(r.upper_bound for r in rs) < bar}


# --------------------------------------------------------------------------------------------
# The outcome, read from the race's trial folders


def ranking(finalists: list[dict]) -> list[dict]:
    """Finalists best first: the most items passed in the worst seed, then the largest mean
    health margin, then the exploration's order (each finalist: {"worst_passed", "mean_margin",
    "order"})."""
    return sorted(finalists, key=lambda f: (-f["worst_passed"], -f["mean_margin"], f["order"]))


def race_outcome(exp_dir: Path) -> dict | None:
    """The race as its files show it (None: no race started): per finalist and seed the run's
    status, epochs and checklist verdict; each finalist's worst-seed items and mean margin; the
    ranking and winner; whether every planned run has ended (or was dropped); the trial-epochs run
    against the K x S x epochs of a race without stopping."""
    exp_dir = Path(exp_dir)
    plan = read_json(exp_dir / PLAN_FILE)
    if not plan:
        return None
    judging = read_judging(exp_dir)
    runs = {(t.params[RACE_KEY]["finalist"], t.params[RACE_KEY]["seed"]): t
            for t in read_trials(exp_dir / RACE_DIR, judging) if RACE_KEY in t.params} if (exp_dir / RACE_DIR).is_dir() else {}
    ended_statuses = ("completed", "early_stopped", "diverged", "collapsed", "failed")
    seed_runs = {f["trial_id"]: [from_result(runs[(f["trial_id"], s)].status in ended_statuses, runs[(f["trial_id"], s)].last)
                                 if (f["trial_id"], s) in runs else SeedRun(ended=False) for s in plan["seeds"]]
                 for f in plan["finalists"]}
    out = eliminated(seed_runs)
    finalists, epochs_run = [], 0
    for order, f in enumerate(plan["finalists"]):
        seeds = {}
        for s, seed_run in zip(plan["seeds"], seed_runs[f["trial_id"]]):
            t = runs.get((f["trial_id"], s))
            rows = read_jsonl(t.path / "run" / "metrics.jsonl") if t is not None else []
            epochs_run += len(rows)
            items = checklist(rows, planned_epochs(t) or plan["epochs"], judging.targets) if t is not None else {}
            seeds[str(s)] = {"trial_id": t.trial_id if t is not None else None,
                             "status": (t.status if seed_run.ended or f["trial_id"] not in out else "dropped")
                             if t is not None else ("dropped" if f["trial_id"] in out else "not started"),
                             "epochs": len(rows), "passed": seed_run.passed, "score": t.final("score") if t else math.nan,
                             "verdict": verdict(items) if items else None, "checklist": items or None}
        margins = [margin_of(v["score"]) for v in seeds.values()]
        finalists.append({"trial_id": f["trial_id"], "order": order, "exploration_score": f["score"],
                          "params": f["params"], "dropped": f["trial_id"] in out,
                          "finished": all(r.ended for r in seed_runs[f["trial_id"]]),
                          "worst_passed": min(v["passed"] for v in seeds.values()),
                          "total": max((v["verdict"]["total"] for v in seeds.values() if v["verdict"]), default=len(item_ids())),
                          "mean_margin": (sum(m if math.isfinite(m) else 0.0 for m in margins) / len(margins)),
                          "seeds": seeds})
    order = ranking(finalists)
    finished = all(f["finished"] or f["dropped"] for f in finalists)
    planned_epochs_total = len(plan["finalists"]) * len(plan["seeds"]) * plan["epochs"]
    return {"seeds": plan["seeds"], "epochs": plan["epochs"], "finished": finished,
            "winner": order[0]["trial_id"] if order and finished else None,
            "ranking": [f["trial_id"] for f in order], "finalists": {f["trial_id"]: f for f in order},
            "trial_epochs": epochs_run, "trial_epochs_without_stopping": planned_epochs_total}


def summary(outcome: dict) -> str:
    """One line for the console, the report and best_trial.json: '8/8 in 2/2 fresh seeds at 80
    epochs' when the winner passes every item in every seed, else what it passed in its worst."""
    f = outcome["finalists"][outcome["winner"]]
    seeds = f["seeds"].values()
    every = sum(v["verdict"] is not None and not v["verdict"]["failed"] for v in seeds)
    return (f"{f['worst_passed']}/{f['total']} in {every}/{len(outcome['seeds'])} fresh seeds at {outcome['epochs']} epochs"
            if every == len(outcome["seeds"]) else
            f"{f['worst_passed']}/{f['total']} in its worst of {len(outcome['seeds'])} fresh seeds at "
            f"{outcome['epochs']} epochs (every item in {every}/{len(outcome['seeds'])})")


def failures(outcome: dict, trial_id: str) -> list[str]:
    """Which items a finalist failed in which seeds: ['seed 2001: ran all 80 epochs, ...', ...]."""
    return [f"seed {s}: " + (", ".join(v["verdict"]["failed"]) if v["verdict"] else v["status"])
            for s, v in outcome["finalists"][trial_id]["seeds"].items()
            if v["verdict"] is None or v["verdict"]["failed"]]


def write_outcome(exp_dir: Path) -> dict | None:
    """race.json from the race's files (None: no race)."""
    outcome = race_outcome(exp_dir)
    if outcome is not None:
        if outcome["winner"] is not None:
            outcome["summary"] = summary(outcome)
            outcome["winner_failures"] = failures(outcome, outcome["winner"])
        atomic_write_json(Path(exp_dir) / RACE_OUTCOME_FILE, outcome)
    return outcome
