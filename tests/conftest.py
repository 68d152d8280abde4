import os
import subprocess
import sys
import time
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


def wait_for(predicate, timeout: float = 240, every: float = 0.5):
    """Poll predicate until it returns something truthy (returned), or fail after timeout seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out waiting")


@pytest.fixture(scope="session")
def bystander():
    """A Ray cluster the tests did not start, as a user's search beside the suite would be: its own
    process group, temp dir and port. Each fixture that starts a cluster asserts, after its
    teardown, that this one still answers (tests/ray_cluster.py)."""
    from tests.ray_cluster import RayNode, free_port, ray_env

    env, port = ray_env(), free_port()
    node = RayNode(["--head", "--num-cpus=1", f"--port={port}", "--include-dashboard=false",
                    "--disable-usage-stats"], env)
    try:
        assert node.returncode == 0, node.stderr
        yield f"127.0.0.1:{port}", env
    finally:
        node.stop()


def assert_bystander_answers(bystander) -> None:
    from tests.ray_cluster import answers

    address, env = bystander
    assert answers(address, env), f"the Ray cluster at {address}, which no test started, no longer answers"
