#!/usr/bin/env python
"""Wall time of a whole search on this machine, as a user runs it, against a reference commit.

    python bench/search_wall_time.py [spaces/vq_gentle.yaml] [--reference COMMIT] [--verify SEEDS]
                                     [--keep FOLDER] [--out FILE]
    python bench/search_wall_time.py --from results/study-main [--reference-from EXPERIMENT] [--out FILE]

Runs `scripts/search.py SPACE` in a subprocess and reports the wall time, the trials by status,
the trial-epochs ASHA let run out of the budget's maximum, the best final score, the share of
the cores' time spent in the trials' epochs and, when the space has a final race, what the race
ran against a race without stopping and its winner's verdict over its fresh seeds. The search runs in a checkout of HEAD (git worktree),
so edits to the working tree during the run change nothing; with --reference it first runs the
same search at COMMIT (its own space file and code) in the same sitting, and the section shows
the ratio against the goal (issue 22: at most 0.6x). With --verify N, `scripts/verify.py --seeds N`
then retrains this commit's winner and runner-up with fresh seeds, and the section says which
checklist items pass in every seed. --keep keeps the experiments there (default: a temporary
folder). With --from it reads an experiment that already ran instead (its search_time.json,
and verify.json when there is one), and with --reference-from the reference's experiment beside
it. Prints a Markdown section; --out writes it to a file.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)

from bench.common import commit, emit, shown_command  # noqa: E402

WALL_GOAL = 0.6  # issue 22: the main command's wall time at most 0.6x the reference commit's


@dataclass
class Search:
    label: str  # "this commit (abc1234)" or "reference (c2cbabb)"
    exp: Path  # the experiment folder
    wall_s: float
    how: str  # how the wall time was measured


def checkout(ref: str, folder: Path) -> Path:
    """A detached checkout of `ref` in `folder` (git worktree); removed by the caller."""
    subprocess.run(["git", "worktree", "add", "--detach", str(folder), ref], cwd=ROOT, check=True,
                   capture_output=True, text=True)
    return folder


def run_search(tree: Path, space: str, storage: Path, name: str, label: str) -> Search:
    """scripts/search.py SPACE of the code in `tree` (its packages first on the path, its own Ray)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, str(tree / "scripts" / "search.py"), space, "--storage", str(storage),
                           "--name", name], cwd=tree, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{label}: the search failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True).stdout.strip()
    (storage / name / "commit.txt").write_text(head + "\n")  # what --from names it by later
    return Search(label, storage / name, wall, "the search process, start to exit")


def experiment_wall_time(exp: Path) -> tuple[float, str]:
    """(seconds, how measured) of a finished experiment."""
    timing = exp / "search_time.json"
    if timing.is_file():
        sessions = json.loads(timing.read_text())["sessions"]
        return sum(s["wall_s"] for s in sessions), f"the search's own search_time.json ({len(sessions)} session(s))"
    spans = [json.loads(p.read_text()) for p in exp.glob("*/run/placement.json")]
    return (max(p.get("end", p["start"]) for p in spans) - min(p["start"] for p in spans),
            "first trial's start to last trial's end (placement.json; Ray's start and the export add seconds)")


def epoch_seconds(exp: Path) -> float:
    """Seconds the trials spent in their epochs (training and evaluation), from each trial's
    run/metrics.jsonl (time/epoch_s), summed over trials, the final race's included."""
    return sum(json.loads(line)["time/epoch_s"] for pattern in ("*/run/metrics.jsonl", "final/*/run/metrics.jsonl")
               for path in exp.glob(pattern) for line in path.read_text().splitlines() if line.strip())


def race_lines(exp: Path) -> list[str]:
    """The final race (race.json, search/race.py), if the search had one: what it ran against a
    race without stopping, its share of the wall time (search_time.json's phases), its winner."""
    path = exp / "race.json"
    if not path.is_file():
        return []
    race = json.loads(path.read_text())
    sessions = json.loads((exp / "search_time.json").read_text())["sessions"] if (exp / "search_time.json").is_file() else []
    timed = [s for s in sessions if "race_done" in s and "trials_done" in s]
    race_s = sum(s["race_done"] - s["trials_done"] for s in timed)
    n = len(race["finalists"])
    dropped = sum(f["dropped"] for f in race["finalists"].values())
    lines = [f"Final race: the top {n} trials on fresh seeds {race['seeds']} at {race['epochs']} epochs each: "
             f"{race['trial_epochs']} trial-epochs of the {race['trial_epochs_without_stopping']} a race without "
             f"stopping runs ({race['trial_epochs'] / race['trial_epochs_without_stopping']:.0%}), {dropped} of {n} "
             "finalists dropped"
             + (f", {race_s / 60:.1f} min of the wall time" if timed else "") + ". "
             + (f"Its winner, trial {race['winner']}: {race['summary']}." if race.get("winner") else "It has not finished."), ""]
    return lines + [f"- the winner failed in {line}" for line in race.get("winner_failures", [])] + (
        [""] if race.get("winner_failures") else [])


def limited_by(epoch_s: float, wall: float, cores: int) -> str:
    """The conclusion, from the same run: the share of the cores' wall time spent in epochs."""
    share = epoch_s / (wall * cores)
    part = "the trials' epochs" if share >= 0.5 else "what runs outside the epochs"
    return (f"Limited by: {part}: "
            f"epochs take {share:.0%} of the wall time x {cores} cores ({epoch_s / 60:.1f} of "
            f"{wall * cores / 60:.1f} core-minutes); the rest is trial start-up, checkpoints, Ray, and cores idle "
            "while ASHA waits at a rung or the last trials run alone.")


def budget_of(exp: Path):
    """The budget in an experiment's copy of its space (read as it is: its base path may not
    resolve from where the experiment now lies)."""
    import yaml

    from search.space import Budget

    return Budget.model_validate(yaml.safe_load((exp / "space.yaml").read_text()).get("budget", {}))


def row(search: Search, cores: int) -> tuple[str, str]:
    """(table row, limited-by line) of one search."""
    budget = budget_of(search.exp)
    trials = list(csv.DictReader((search.exp / "trials.csv").open()))
    epochs = sum(int(t["epochs"]) for t in trials)
    statuses = Counter(t["status"] for t in trials)
    best = max(float(t["score"]) for t in trials if t["score"])
    epoch_s = epoch_seconds(search.exp)
    text = (f"| {search.label} | {search.wall_s / 60:.1f} min | {len(trials)} "
            f"({', '.join(f'{n} {s}' for s, n in sorted(statuses.items()))}) | {epochs} | "
            f"{epochs / (budget.num_samples * budget.max_epochs):.0%} | {best:.4f} | {epoch_s / (search.wall_s * cores):.0%} |")
    return text, limited_by(epoch_s, search.wall_s, cores)


def verify_lines(exp: Path) -> list[str]:
    """What scripts/verify.py found for the experiment's winner (verify.json), if it ran."""
    path = exp / "verify.json"
    if not path.is_file():
        return []
    report = json.loads(path.read_text())
    best = json.loads((exp / "best_trial.json").read_text())["trial_id"]
    items = report["trials"].get(best, {})
    missed = [f"{item} ({s['pass_rate']:.0%})" for item, s in items.items() if s["pass_rate"] < 1]
    verdict = ("passes every checklist item in every seed" if items and not missed
               else f"misses in some seed: {', '.join(missed)}")
    command = report["command"].replace(f"{ROOT}/", "")  # no absolute paths in the docs
    return [f"Its winner, trial {best}, retrained by `{command}` (seeds {report['seeds']}): {verdict}.", ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("space", nargs="?", default="spaces/vq_gentle.yaml")
    parser.add_argument("--reference", help="also run the search at this commit, first, in the same sitting")
    parser.add_argument("--verify", type=int, default=0, metavar="SEEDS",
                        help="then scripts/verify.py --seeds SEEDS on this commit's experiment")
    parser.add_argument("--keep", help="keep the experiments in this folder (default: a temporary one)")
    parser.add_argument("--out", help="write the Markdown section to this file")
    parser.add_argument("--from", dest="experiment", help="read this finished experiment instead of running one")
    parser.add_argument("--reference-from", help="with --from: the reference commit's finished experiment")
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    if args.experiment:
        searches = []
        for path, label in ((args.reference_from, "reference"), (args.experiment, "this experiment")):
            if path:
                exp = Path(path)
                wall, how = experiment_wall_time(exp)
                searches.append(Search(f"{label} ({exp.name}, {_commit_of(exp)})", exp, wall, how))
        return section(searches, args, argv, cores, verify_lines(searches[-1].exp))

    work = Path(tempfile.mkdtemp(prefix="wall-"))
    storage = Path(args.keep).resolve() if args.keep else work / "results"
    head = commit().split()[0]
    trees = []
    try:
        searches = []
        if args.reference:
            trees.append(checkout(args.reference, work / "reference"))
            searches.append(run_search(trees[-1], args.space, storage, "reference", f"reference ({args.reference})"))
        trees.append(checkout("HEAD", work / "head"))
        searches.append(run_search(trees[-1], args.space, storage, "head", f"this commit ({head})"))
        extra = []
        if args.verify:
            subprocess.run([sys.executable, str(trees[-1] / "scripts" / "verify.py"), str(searches[-1].exp),
                            "--seeds", str(args.verify)], cwd=trees[-1], check=True, capture_output=True,
                           env={**os.environ, "PYTHONPATH": str(trees[-1])})
            extra = verify_lines(searches[-1].exp)
        return section(searches, args, argv, cores, extra)
    finally:
        for tree in trees:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def _commit_of(exp: Path) -> str:
    """The commit an experiment ran at, as the bench's checkout recorded it (commit.txt), else unknown."""
    path = exp / "commit.txt"
    return path.read_text().strip() if path.is_file() else "commit not recorded"


def section(searches: list[Search], args, argv, cores: int, extra: list[str]) -> int:
    budget = budget_of(searches[-1].exp)
    lines = ["## Default search wall time", "",
             f"`{shown_command('search_wall_time.py', argv)}` at commit {commit()} on {platform.node()} ({cores} CPUs): "
             f"`scripts/search.py {args.experiment + '/space.yaml' if args.experiment else args.space}` with its default "
             f"budget ({budget.num_samples} trials, ASHA from {budget.grace_period} to {budget.max_epochs} epochs, "
             f"reduction factor {budget.reduction_factor}). Wall time: {searches[-1].how}.", "",
             "| code | wall time | trials | trial-epochs run | of the maximum (trials x max epochs) | best final "
             "score (search/score.py: items passed + margin) | epochs' share of the core time |",
             "|---|---|---|---|---|---|---|"]
    rows = [row(s, cores) for s in searches]
    lines += [text for text, _ in rows] + [""]
    if len(searches) == 2:
        ratio = searches[1].wall_s / searches[0].wall_s
        lines += [f"Wall time against the reference commit: {ratio:.2f}x (goal: at most {WALL_GOAL:g}x: "
                  f"{'met' if ratio <= WALL_GOAL else 'not met'}). The two searches ran one after the other on the "
                  "same machine; ASHA's decisions depend on which trial reports first, so the trials they ran differ.",
                  ""]
    lines += [rows[-1][1], "", *race_lines(searches[-1].exp), *extra]
    emit("\n".join(lines), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
