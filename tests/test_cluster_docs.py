"""docs/cluster.md's files and commands, checked offline: the `ray up` cluster YAML against the
schema Ray ships, the KubeRay RayJob's shape, and every search command on the page parsed by
scripts/search.py's own parser."""

import copy
import re
import shlex
import sys

import pytest
import yaml

from tests.conftest import ROOT



def _load_search_script():
    """scripts/search.py as a module named search_script (its own name would shadow the package)."""
    import importlib.util

    saved = list(sys.path)
    spec = importlib.util.spec_from_file_location("search_script", ROOT / "scripts" / "search.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.path[:] = saved  # the script puts the repository root first on sys.path
    return module


search_parser = _load_search_script().build_parser

DOC = (ROOT / "docs" / "cluster.md").read_text()


def test_ray_up_cluster_yaml_validates_against_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "deploy" / "ray-cluster-aws.yaml").read_text())
    validate_config(prepare_config(copy.deepcopy(config)))  # what `ray up` runs before it launches anything
    broken = {**copy.deepcopy(config), "max_wrokers": 4}
    with pytest.raises(Exception, match="max_wrokers"):
        validate_config(prepare_config(broken))
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"  # one token on every node
    assert all("RAY_AUTH_MODE=token" in " ".join(config[k]) for k in ("head_start_ray_commands", "worker_start_ray_commands"))
    assert "pip install torch==2.13.0" in " ".join(config["setup_commands"])  # the README's pin
    assert "pip install -c constraints.txt" in " ".join(config["setup_commands"])  # and its lock
    gpu = config["available_node_types"]["gpu_worker"]["node_config"]["InstanceType"]
    assert gpu.startswith("g")  # a GPU instance type


def test_kuberay_rayjob_hands_token_and_credentials_to_every_pod_and_runs_a_search():
    job = yaml.safe_load((ROOT / "deploy" / "kuberay-rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    cluster = job["spec"]["rayClusterSpec"]
    pods = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    for pod in pods:
        (container,) = pod["spec"]["containers"]
        names = {e["name"]: e for e in container["env"]}
        assert names["RAY_AUTH_MODE"]["value"] == "token"
        assert names["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "ray-auth-token"
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(names)
    workers = cluster["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert workers["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert cluster["rayVersion"].startswith("2.60")
    args = search_args(job["spec"]["entrypoint"])
    assert args.storage.startswith("s3://") and args.address == "auto" and args.gpu == 0.25


def search_args(command: str):
    """The arguments of a `python scripts/search.py ...` command, parsed by the script's parser."""
    words = shlex.split(command)
    words = words[words.index("scripts/search.py") + 1:]
    args = search_parser().parse_args(words)
    assert (ROOT / args.space).is_file(), args.space
    return args


def test_every_search_command_in_the_doc_parses_and_its_files_exist():
    commands = [line.strip() for line in DOC.splitlines() if "python scripts/search.py" in line and line.startswith("    ")]
    assert len(commands) >= 3
    for command in commands:
        search_args(command.split(" -- ", 1)[-1])
    for path in re.findall(r"\]\(\.\./(deploy/[^)]+)\)", DOC):
        assert (ROOT / path).is_file(), path
    for path in re.findall(r"`(tests/[a-z_]+\.py)`", DOC):
        assert (ROOT / path).is_file(), path


def test_dockerfile_uses_the_installed_ray_and_the_readmes_torch_pin():
    import ray

    text = (ROOT / "deploy" / "Dockerfile").read_text()
    assert f"FROM rayproject/ray:{ray.__version__}-py311-gpu" in text
    assert "pip install --no-cache-dir torch==2.13.0" in text and "WORKDIR /app" in text
    assert "-c /app/constraints.txt" in text  # the tested versions (the lock)
    assert "torch==2.13.0" in (ROOT / "README.md").read_text()
