#!/usr/bin/env python
"""Wall time of the README's test command on this machine.

    python bench/test_suite_time.py [--out FILE]

Runs `python -m pytest -q` (the README's test command) and then its fast selection, `-m "not
slow"` (the README's edit loop), each in a subprocess, and reports their wall times and the
closing counts pytest printed. Prints a Markdown section; --out writes it to a file.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)

from bench.common import commit, emit, shown_command  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="write the Markdown section to this file")
    args = parser.parse_args(argv)
    rows = []
    for label, selection in (("the README's test command", []), ("the fast selection for the edit loop", ["-m", "not slow"])):
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", *selection], cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - started
        closing = next((line.strip("= ") for line in reversed(proc.stdout.splitlines()) if line.strip()), "")
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
            return 1
        command = " ".join(["python -m pytest -q", *(f'-m "{a}"' if a != "-m" else "" for a in selection[1:])]).strip()
        rows.append(f"| {label}: `{command}` | {wall / 60:.1f} min | {closing} |")
    text = "\n".join([
        "## Test suite wall time", "",
        f"`{shown_command('test_suite_time.py', argv)}` at commit {commit()} on {platform.node()} "
        f"({os.cpu_count()} CPUs), one after the other.", "",
        "| run | wall time | pytest's closing line |", "|---|---|---|", *rows, ""])
    emit(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
