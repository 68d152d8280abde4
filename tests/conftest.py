import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# A small real-data subset: the first 60 ARC-AGI-1 task ids (sorted), about 260 examples.
SMALL = ["--set", "data.max_tasks=60", "--set", "training.epochs=1"]


def run_script(*args: str, cwd: Path = ROOT, timeout: int = 300, env: dict | None = None):
    """Run a repo script in a fresh interpreter; returns CompletedProcess (text)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


@pytest.fixture
def results(tmp_path):
    return tmp_path / "results"
