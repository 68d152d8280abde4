"""Run scripts/train.py in a subprocess and read back what it wrote (verify, the study).

The caller names the script (scripts/verify.py its sibling, the study the repository's) and the
folder it runs in, so the installed package needs no path into the repository.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class TrainRun:
    name: str
    rows: list[dict] = field(default_factory=list)  # metrics.jsonl
    status: str = ""
    wall_s: float = 0.0
    error: str = ""  # stderr tail when train.py failed to run (exit other than 0 or 1)


def train_subprocess(train_script: Path, config: Path, name: str, results: Path, overrides: list[str],
                     cwd: Path | None = None) -> TrainRun:
    """python TRAIN_SCRIPT CONFIG --set ... --name NAME --results RESULTS (a fresh run) in `cwd`
    (default: this process's working directory, where a contract trainer imports from). An
    override that starts with -- is passed as a flag (--seed=1000), the others as --set KEY=VALUE."""
    shutil.rmtree(results / name, ignore_errors=True)
    cmd = [sys.executable, str(train_script), str(config),
           *[a for o in overrides for a in ((o,) if o.startswith("--") else ("--set", o))],
           "--name", name, "--results", str(results)]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd or Path.cwd())
    run = TrainRun(name, wall_s=time.perf_counter() - started)
    metrics, status = results / name / "metrics.jsonl", results / name / "status.json"
    if metrics.is_file():
        run.rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    run.status = json.loads(status.read_text())["status"] if status.is_file() else f"error (exit {proc.returncode})"
    if proc.returncode not in (0, 1):
        run.error = proc.stderr[-2000:]
    return run
