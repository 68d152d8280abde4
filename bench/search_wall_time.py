#!/usr/bin/env python
"""Wall time of a whole search on this machine, as a user runs it.

    python bench/search_wall_time.py [spaces/vq_gentle.yaml] [--out FILE]

Runs `scripts/search.py SPACE` in a subprocess into a temporary folder and reports the wall
time, the trials by status, the trial-epochs ASHA let run out of the budget's maximum, and the
best final score. Prints a Markdown section; --out writes it to a file.
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
    args = parser.parse_args(argv)

    from search.space import load_space

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
    epochs = sum(int(r["epochs"]) for r in rows)
    statuses = Counter(r["status"] for r in rows)
    best = max(float(r["score"]) for r in rows if r["score"])
    command = shown_command("search_wall_time.py", argv)
    text = "\n".join([
        "## Default search wall time",
        "",
        f"`{command}` at commit {commit()} on {platform.node()} ({os.cpu_count()} CPUs): `scripts/search.py {args.space}` with its "
        f"default budget ({budget.num_samples} trials, ASHA from {budget.grace_period} to {budget.max_epochs} "
        f"epochs, reduction factor {budget.reduction_factor}).",
        "",
        "| wall time | trials | trial-epochs run | of the maximum (trials x max epochs) | best final score |",
        "|---|---|---|---|---|",
        f"| {wall / 60:.1f} min | {len(rows)} ({', '.join(f'{n} {s}' for s, n in sorted(statuses.items()))}) "
        f"| {epochs} | {epochs / (budget.num_samples * budget.max_epochs):.0%} | {best:.4f} |",
        "",
        "Limited by: the trials' training steps on the machine's CPU cores (one trial per core).",
        "",
    ])
    emit(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
