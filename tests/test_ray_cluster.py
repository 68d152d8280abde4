"""The tests' own Ray clusters are stopped by their process groups and leave every other Ray alone
(tests/ray_cluster.py)."""

import re
import subprocess

import pytest

from tests.conftest import ROOT, assert_bystander_answers
from tests.ray_cluster import RayNode, answers, free_port, ray_env

pytestmark = pytest.mark.slow


def test_stopping_a_test_cluster_leaves_a_cluster_started_outside_running(bystander):
    """Start a head and a worker node the way the cluster fixtures do, stop them: none of their
    processes is left, and the cluster that no test started (another port and temp dir, as a
    user's search would have) still answers `ray status`."""
    env, port = ray_env(), free_port()
    head = RayNode(["--head", "--num-cpus=1", f"--port={port}", "--include-dashboard=false",
                    "--disable-usage-stats"], env)
    nodes = [head]
    try:
        assert head.returncode == 0, head.stderr
        nodes.append(RayNode([f"--address=127.0.0.1:{port}", "--num-cpus=1", "--disable-usage-stats"], env))
        assert nodes[1].returncode == 0, nodes[1].stderr
        assert answers(f"127.0.0.1:{port}", env) and head.pids() and nodes[1].pids()
    finally:
        for node in reversed(nodes):
            node.stop()
    assert not head.pids() and not nodes[1].pids()
    assert not answers(f"127.0.0.1:{port}", env, timeout=5)
    assert_bystander_answers(bystander)


def test_no_test_script_or_doc_runs_a_bare_ray_stop():
    """`ray stop` ends every Ray of the user on the machine; nothing this repository runs on a
    user's machine may call it (deploy/'s cluster-launcher YAML runs on the cluster's own nodes)."""
    tracked = subprocess.run(["git", "ls-files", "tests", "scripts", "search", "study", "bench", "docs",
                              "README.md", ".ci"], cwd=ROOT, capture_output=True, text=True, check=True)
    runs_it = re.compile(r"""RAY,\s*"stop"|"ray",\s*"stop"|(^[ \t]*(\$ |- )?|[;&|(]\s*)ray stop\b""", re.M)
    offenders = [name for name in tracked.stdout.split() if (ROOT / name).is_file()
                 and name != "tests/test_ray_cluster.py" and runs_it.search((ROOT / name).read_text(errors="ignore"))]
    assert offenders == []
