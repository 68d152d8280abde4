#!/usr/bin/env python
"""Wall time of a whole search on this machine, as a user runs it.

    python bench/search_wall_time.py [spaces/vq_gentle.yaml] [--out FILE]
    python bench/search_wall_time.py --from results/study-main [--out FILE]

Runs `scripts/search.py SPACE` in a subprocess into a temporary folder and reports the wall
time, the trials by status, the trial-epochs ASHA let run out of the budget's maximum, and the
best final score. With --from it reads an experiment that already ran instead (the search's own
search_time.json, or, for an experiment from before it, the span from its first trial's start to
its last trial's end in the trials' placement.json). Prints a Markdown section; --out writes it
to a file.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)

from bench.common import commit, emit, shown_command  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("space", nargs="?", default="spaces/vq_gentle.yaml")
    parser.add_argument("--out", help="write the Markdown section to this file")
    parser.add_argument("--from", dest="experiment", help="read this finished experiment instead of running one")
    args = parser.parse_args(argv)

    from search.space import load_space

    if args.experiment:
        exp = Path(args.experiment)
        budget = load_space(exp / "space.yaml").space.budget
        wall, how = experiment_wall_time(exp)
        rows = list(csv.DictReader((exp / "trials.csv").open()))
        return section(rows, wall, how, budget, args, argv, epoch_seconds(exp), os.cpu_count() or 1)
    budget = load_space(args.space).space.budget
    with tempfile.TemporaryDirectory() as storage:
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "search.py"), args.space, "--storage", storage,
                               "--name", "bench"], cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
            return 1
        rows = list(csv.DictReader((Path(storage) / "bench" / "trials.csv").open()))
        epoch_s = epoch_seconds(Path(storage) / "bench")
    return section(rows, wall, "the search process, start to exit", budget, args, argv, epoch_s, os.cpu_count() or 1)


def experiment_wall_time(exp: Path) -> tuple[float, str]:
    """(seconds, how measured) of a finished experiment."""
    import json

    timing = exp / "search_time.json"
    if timing.is_file():
        sessions = json.loads(timing.read_text())["sessions"]
        return sum(s["wall_s"] for s in sessions), f"the search's own search_time.json ({len(sessions)} session(s))"
    spans = [json.loads(p.read_text()) for p in exp.glob("*/run/placement.json")]
    return (max(p.get("end", p["start"]) for p in spans) - min(p["start"] for p in spans),
            "first trial's start to last trial's end (placement.json; Ray's start and the export add seconds)")


def epoch_seconds(exp: Path) -> float:
    """Seconds the trials spent in their epochs (training and evaluation), from each trial's
    run/metrics.jsonl (time/epoch_s), summed over trials."""
    import json

    return sum(json.loads(line)["time/epoch_s"] for path in exp.glob("*/run/metrics.jsonl")
               for line in path.read_text().splitlines() if line.strip())


def limited_by(epoch_s: float, wall: float, cores: int) -> str:
    """The conclusion, from the same run: the share of the cores' wall time spent in epochs."""
    share = epoch_s / (wall * cores)
    part = "the trials' epochs" if share >= 0.5 else "what runs outside the epochs"
    return (f"Limited by: {part}: "
            f"epochs take {share:.0%} of the wall time x {cores} cores ({epoch_s / 60:.1f} of "
            f"{wall * cores / 60:.1f} core-minutes); the rest is trial start-up, checkpoints, Ray, and cores idle "
            "while ASHA waits at a rung or the last trials run alone.")


def section(rows: list[dict], wall: float, how: str, budget, args, argv, epoch_s: float, cores: int) -> int:
    epochs = sum(int(r["epochs"]) for r in rows)
    statuses = Counter(r["status"] for r in rows)
    best = max(float(r["score"]) for r in rows if r["score"])
    command = shown_command("search_wall_time.py", argv)
    text = "\n".join([
        "## Default search wall time",
        "",
        f"`{command}` at commit {commit()} on {platform.node()} ({os.cpu_count()} CPUs): `scripts/search.py "
        f"{args.experiment + '/space.yaml' if args.experiment else args.space}` with its "
        f"default budget ({budget.num_samples} trials, ASHA from {budget.grace_period} to {budget.max_epochs} "
        f"epochs, reduction factor {budget.reduction_factor}). Wall time: {how}.",
        "",
        "| wall time | trials | trial-epochs run | of the maximum (trials x max epochs) | best final score (search/score.py: items passed + margin) |",
        "|---|---|---|---|---|",
        f"| {wall / 60:.1f} min | {len(rows)} ({', '.join(f'{n} {s}' for s, n in sorted(statuses.items()))}) "
        f"| {epochs} | {epochs / (budget.num_samples * budget.max_epochs):.0%} | {best:.4f} |",
        "",
        limited_by(epoch_s, wall, cores),
        "",
    ])
    emit(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
