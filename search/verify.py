"""Was the winner luck? The top trials of a search retrained from scratch on fresh seeds and judged
by the checklist: what `scripts/verify.py` runs (its docstring says how to call it).

- `verify_plan(...)`: which trials (by final score; after a final race, its finalists in its
  order, at its production epochs), which seeds (SEED_BASE, SEED_BASE + 1, ...: never the search's
  nor its race's, search/space.py Final.seed_base) and how many epochs each run gets.
- `verify(...)`: the runs (the caller's scripts/train.py in subprocesses, `jobs` at a time, under
  <experiment>/verify/), each judged; verify.json (per trial and item: how many seeds passed, pass
  rate, mean and spread of the deciding values, the versions it ran with) and report.md refreshed.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from model.io import atomic_write_json
from search.export import RACE_OUTCOME_FILE, TrialRecord, planned_epochs, read_json, read_trials
from search.judge import across_seeds, checklist, ranked
from search.runs import TrainRun, train_subprocess
from search.targets import read_judging
from search.versions import drift, installed

SEED_BASE = 1000


@dataclass(frozen=True)
class VerifyRun:
    trial: TrialRecord
    seed: int
    epochs: int

    @property
    def name(self) -> str:
        return f"{self.trial.trial_id}-seed{self.seed}"


def verify_plan(exp_dir: Path, top: int, seeds: int, epochs: int | None = None,
                log=print) -> list[VerifyRun]:
    """The runs: the top `top` trials, each on `seeds` fresh seeds, for `epochs` (default: its
    budget; after a final race, the race's production epochs)."""
    judging = read_judging(exp_dir)
    trials = ranked(read_trials(exp_dir), judging.mode)  # the order best_trial.json is picked by
    race = read_json(exp_dir / RACE_OUTCOME_FILE)
    if race.get("winner"):  # after a final race: its finalists in its order, at its production budget
        by_id = {t.trial_id: t for t in trials}
        trials = [by_id[trial_id] for trial_id in race["ranking"]]
        log(f"verifying the final race's finalists in its order ({race['summary']} for its winner) "
            f"at {race['epochs']} epochs, on seeds it never used")
    return [VerifyRun(t, SEED_BASE + i, epochs or (race["epochs"] if race.get("winner") else planned_epochs(t)))
            for t in trials[:top] for i in range(seeds)]


def verify(exp_dir: Path, plan: list[VerifyRun], train_script: Path, jobs: int, command: str) -> tuple[dict, list[TrainRun]]:
    """Train the plan's runs with `train_script` (the caller's scripts/train.py), judge each, write
    verify.json; returns its contents and the runs (a run that failed has its `error`)."""
    from search.report import write_report  # matplotlib: only once there is something to report

    judging = read_judging(exp_dir)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        runs = list(pool.map(lambda r: train_subprocess(train_script, r.trial.path / "run" / "config.yaml", r.name,
                                                        exp_dir / "verify",
                                                        [f"--seed={r.seed}", f"--epochs={r.epochs}", "--threads=1"]),
                             plan))
    judged: dict[str, list[dict]] = {}
    for r, run in zip(plan, runs):
        judged.setdefault(r.trial.trial_id, []).append(checklist(run.rows, r.epochs, judging.targets))
    report = {"command": command, "seeds": sorted({r.seed for r in plan}), "targets": judging.targets.as_dict(),
              "versions": installed(), "versions_differ": drift(exp_dir),
              "trials": {trial_id: across_seeds(items) for trial_id, items in judged.items()}}
    atomic_write_json(exp_dir / "verify.json", report)
    write_report(exp_dir)
    return report, runs
