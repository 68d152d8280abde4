"""A search on a two-node Ray cluster whose second node cannot see the driver's disk, with its
results in object storage (an S3-compatible server on 127.0.0.1: moto's server mode).

The second node runs in its own mount namespace (`unshare -m`) with a tmpfs over the storage
folder, as a real worker machine would: it shares no disk with the driver there. A local
--storage folder must then be refused before any trial starts; an s3:// URI must work, from
trials on both nodes through a worker killed on the second node and a driver killed with
SIGKILL, to the best config exported back out of the bucket."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import psutil
import pytest
import yaml

from tests.conftest import ROOT, assert_bystander_answers, run_script, wait_for
from tests.ray_cluster import RayNode, free_port, ray_env

pytestmark = pytest.mark.slow
BUCKET = "arc-jepa-test"



@pytest.fixture(scope="module")
def s3_env():
    """moto's S3 server on a free port, a bucket in it, and the AWS variables that point at it."""
    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("moto.server")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    try:
        client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        wait_for(lambda: _up(client), timeout=60)
        client.create_bucket(Bucket=BUCKET)
        yield env, client
    finally:
        server.terminate()
        server.wait(timeout=30)


def _up(client) -> bool:
    try:
        client.list_buckets()
        return True
    except Exception:  # the server is still starting
        return False


def keys(client, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def read_key(client, key: str) -> str:
    return client.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()


@pytest.fixture(scope="module")
def blind_cluster(tmp_path_factory, s3_env, bystander):
    """Head node (1 CPU) here; a second node (1 CPU) in its own mount namespace, where the
    folder `hidden` is an empty tmpfs. Every Ray process gets the S3 variables. Each node is
    stopped by its own process group (tests/ray_cluster.py), never by `ray stop`."""
    base = tmp_path_factory.mktemp("blind")
    hidden = base / "results"
    hidden.mkdir()
    port = free_port()
    env = ray_env(**s3_env[0])
    nodes = []
    try:
        nodes.append(RayNode(["--head", "--num-cpus=1", f"--port={port}", "--include-dashboard=false",
                              "--disable-usage-stats"], env))
        assert nodes[0].returncode == 0, nodes[0].stderr
        nodes.append(RayNode([f"--address=127.0.0.1:{port}", "--num-cpus=1", "--disable-usage-stats"], env,
                             wrap=lambda cmd: ["unshare", "-m", "sh", "-c",
                                               f"mount -t tmpfs tmpfs {hidden} && exec {' '.join(cmd)}"]))
        worker = nodes[1]
        if worker.returncode != 0 and ("unshare" in worker.stderr or "mount" in worker.stderr):
            reason = f"no private mount namespace here: {worker.stderr.strip()[:300]}"
            print(reason)
            pytest.skip(reason)
        assert worker.returncode == 0, worker.stderr
        yield {"address": f"127.0.0.1:{port}", "hidden": hidden, "base": base, "env": env,
               "temp_dir": nodes[0].temp_dir}
    finally:
        for node in reversed(nodes):
            node.stop()
        assert_bystander_answers(bystander)


def write_space(path: Path, budget: str, max_tasks: int = 60) -> Path:
    text = (ROOT / "spaces" / "smoke.yaml").read_text().replace("../configs/", f"{ROOT}/configs/")
    text = text.replace("data.max_tasks: 60", f"data.max_tasks: {max_tasks}")
    path.write_text(text.split("budget:")[0] + budget)
    return path


def other_mount_namespace(pid: int) -> bool:
    """Whether process pid runs in another mount namespace than this test (the second node)."""
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    except OSError:
        return False


def test_orphaned_trial_folders_are_moved_aside_in_the_bucket(s3_env, tmp_path, monkeypatch):
    """An object store moves no folders: set_aside copies then deletes (search/storage.py)."""
    from search.runner import set_aside_orphans
    from search.storage import Location

    env, client = s3_env
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for trial in ("trial_a", "trial_b"):
        client.put_object(Bucket=BUCKET, Key=f"orphans/exp/{trial}/params.json", Body=b"{}")
        client.put_object(Bucket=BUCKET, Key=f"orphans/exp/{trial}/run/metrics.jsonl", Body=b"")
        (tmp_path / "exp" / trial).mkdir(parents=True)
        (tmp_path / "exp" / trial / "params.json").write_text("{}")
    loc = Location(local=tmp_path / "exp", remote=f"s3://{BUCKET}/orphans/exp")
    assert set_aside_orphans(loc, study_ids={"a"}) == ["trial_b"]
    objects = sorted(k for k in keys(client, "orphans/exp/") if not k.endswith("/"))  # no folder markers
    assert objects == [
        "orphans/exp/orphaned/trial_b/params.json", "orphans/exp/orphaned/trial_b/run/metrics.jsonl",
        "orphans/exp/trial_a/params.json", "orphans/exp/trial_a/run/metrics.jsonl"]
    assert (tmp_path / "exp" / "orphaned" / "trial_b" / "params.json").is_file()


def test_a_local_folder_a_node_cannot_see_is_refused(blind_cluster):
    hidden = blind_cluster["hidden"]
    proc = run_script("scripts/search.py", "spaces/smoke.yaml", "--storage", str(hidden), "--name", "local",
                      "--address", blind_cluster["address"], timeout=300, env=blind_cluster["env"])
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "cannot see" in proc.stderr and "s3://bucket/prefix" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not any(hidden.iterdir()), "a refusal writes nothing"
    # a folder that does not exist yet is refused too, and not left behind
    proc = run_script("scripts/search.py", "spaces/smoke.yaml", "--storage", str(hidden / "new" / "deep"),
                      "--name", "local", "--address", blind_cluster["address"], timeout=300, env=blind_cluster["env"])
    assert proc.returncode == 2 and not (hidden / "new").exists()
    # a folder every node sees (a shared filesystem, here one outside the tmpfs) passes the same check
    shared = blind_cluster["base"] / "shared"
    check = ("import sys, ray; from pathlib import Path; from search.runner import check_storage_visible; "
             f"ray.init(address='{blind_cluster['address']}'); n = len([x for x in ray.nodes() if x['Alive']]); "
             "check_storage_visible(ray, Path(sys.argv[1]), sys.argv[1]); print('nodes', n)")
    visible = run_script("-c", check, str(shared), timeout=120, env=blind_cluster["env"])
    assert visible.returncode == 0 and "nodes 2" in visible.stdout, visible.stderr[-2000:]
    assert not shared.exists(), "the check leaves nothing behind"
    refused = run_script("-c", check, str(hidden), timeout=120, env=blind_cluster["env"])
    assert refused.returncode != 0 and "cannot see" in refused.stderr


def test_search_in_a_bucket_runs_on_both_nodes_survives_a_worker_kill_and_exports(blind_cluster, s3_env, tmp_path):
    env, client = blind_cluster["env"], s3_env[1]
    space = write_space(tmp_path / "space.yaml", "budget: {num_samples: 3, max_epochs: 4, grace_period: 4, "
                        "reduction_factor: 2, max_failures: 1, max_concurrent: 2}\nresources: {cpu: 1}\nseed: 0\n",
                        max_tasks=200)
    uri = f"s3://{BUCKET}/exps"
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "search.py"), str(space), "--storage", uri,
                             "--name", "twonode", "--address", blind_cluster["address"]],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**env, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    try:
        # a trial on the second node that has a checkpoint in the bucket: kill its worker process
        def victim():
            for key in keys(client, "exps/twonode/"):
                if key.endswith("run/placement.json"):
                    trial = key.split("/")[2]
                    placement = json.loads(read_key(client, key))
                    if other_mount_namespace(placement["pid"]) and any(
                            "/checkpoint_" in k for k in keys(client, f"exps/twonode/{trial}/")):
                        return trial, placement["pid"], placement["node_id"]
            return None

        trial, pid, second_node = wait_for(victim, timeout=400)
        os.kill(pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out[-4000:]
    stored = keys(client, "exps/twonode/")
    for name in ("best_config.yaml", "best_trial.json", "trials.csv", "study.db", "space.yaml", "targets.json",
                 "report.md", "tuner.pkl"):
        assert f"exps/twonode/{name}" in stored, name
    placements = [json.loads(read_key(client, k)) for k in stored if k.endswith("run/placement.json")]
    # trials ran on both nodes (the killed one's retry may land on either, so its first node counts)
    assert len(placements) == 3 and len({p["node_id"] for p in placements} | {second_node}) == 2
    assert any("/checkpoint_" in k for k in stored)
    # the killed trial resumed from its checkpoint in the bucket: every epoch once, none lost
    epochs = [json.loads(x)["epoch"] for x in read_key(client, f"exps/twonode/{trial}/run/metrics.jsonl").splitlines()]
    assert epochs == [1, 2, 3, 4]
    assert "experiment stored in s3://" in out
    local = tmp_path / "results" / "twonode"
    assert (local / "best_config.yaml").is_file() and (local / "study.db").is_file()  # the driver's own files

    # export from the bucket on a machine that has nothing of it, then train what it exported
    fresh = tmp_path / "elsewhere"
    fresh.mkdir()
    exported = run_script(str(ROOT / "scripts" / "export_best.py"), f"{uri}/twonode", cwd=fresh, env=s3_env[0])
    assert exported.returncode == 0, exported.stderr[-2000:]
    best = fresh / "results" / "twonode" / "best_config.yaml"
    assert yaml.safe_load(best.read_text()) == yaml.safe_load(read_key(client, "exps/twonode/best_config.yaml"))
    trained = run_script(str(ROOT / "scripts" / "train.py"), str(best), "--set", "training.epochs=1", "--results",
                         str(fresh / "runs"), cwd=fresh, timeout=300)
    assert trained.returncode == 0, trained.stderr[-2000:]
    # the report and the verification read the bucket too, and put what they write back in it
    client.delete_object(Bucket=BUCKET, Key="exps/twonode/report.md")
    report = run_script(str(ROOT / "scripts" / "report.py"), f"{uri}/twonode", cwd=fresh, env=s3_env[0])
    assert report.returncode == 0, report.stderr[-2000:]
    assert "# Search report: twonode" in read_key(client, "exps/twonode/report.md")
    verify = run_script(str(ROOT / "scripts" / "verify.py"), f"{uri}/twonode", "--seeds", "1", "--top", "1",
                        "--epochs", "1", cwd=fresh, timeout=300, env=s3_env[0])
    assert verify.returncode == 0, verify.stderr[-2000:]
    assert json.loads(read_key(client, "exps/twonode/verify.json"))["seeds"] == [1000]
    assert any(k.startswith("exps/twonode/verify/") and k.endswith("metrics.jsonl") for k in keys(client, "exps/twonode/"))


def test_driver_sigkill_then_resume_from_the_bucket_finishes_the_budget(blind_cluster, s3_env, tmp_path):
    env, client = blind_cluster["env"], s3_env[1]
    space = write_space(tmp_path / "space.yaml", "budget: {num_samples: 3, max_epochs: 3, grace_period: 1, "
                        "reduction_factor: 2}\nresources: {cpu: 1}\nseed: 0\n")
    uri = f"s3://{BUCKET}/resume"
    args = [sys.executable, str(ROOT / "scripts" / "search.py"), str(space), "--storage", uri, "--name", "killed",
            "--address", blind_cluster["address"]]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**env, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    try:
        wait_for(lambda: any(k.endswith("result.json") for k in keys(client, "resume/killed/")), timeout=300)
        proc.send_signal(signal.SIGKILL)  # the driver alone; its trials end with it
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "resume/killed/tuner.pkl" in keys(client, "resume/killed/")
    resumed = run_script(*args[1:], "--resume", cwd=tmp_path, timeout=600, env=env)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "Resumed: " in resumed.stdout, "the study was reconciled with Ray's restored trials"
    local = tmp_path / "results" / "killed"
    rows = (local / "trials.csv").read_text().splitlines()[1:]
    assert len(rows) == 3, "the number of trials equals the budget"
    study = optuna.load_study(study_name="killed", storage=f"sqlite:///{local / 'study.db'}")
    assert len(study.trials) == 3 and optuna.trial.TrialState.RUNNING not in [t.state for t in study.trials]
    assert len({json.dumps(t.params, sort_keys=True) for t in study.trials}) == 3, "no trial lost or duplicated"
    assert "resume/killed/trials.csv" in keys(client, "resume/killed/")


LOSS_SPACE = """\
trainer: sleepy:train
params:
  x: {dist: uniform, low: 0, high: 1}
objective: {targets: seed, target_rank_weight: 0.0}
budget: {num_samples: 4, max_epochs: 8, grace_period: 8, reduction_factor: 2, max_concurrent: 3, max_failures: 1}
resources: {cpu: 1}
sampler: random
seed: 5
"""

# A user's trainer (docs/own_model.md) that checkpoints every epoch and says where it resumed.
SLEEPY = """\
import json, time

def train(config, run):
    start = 0
    if run.restored is not None:
        start = json.loads((run.restored / "state.json").read_text())["epoch"]
    folder = run.dir / "state"
    folder.mkdir(exist_ok=True)
    for epoch in range(start + 1, run.epochs + 1):
        time.sleep(1.5)
        (folder / "state.json").write_text(json.dumps({"epoch": epoch}))
        run.report({"val/loss": 1.0 / epoch + config["x"], "codebook/usage": 0.5, "train/resumed_at": start},
                   checkpoint=folder)
"""


def test_a_node_lost_mid_search_loses_nothing(blind_cluster, s3_env, tmp_path):
    """A third node joins in its own mount namespace, blind to the storage folder as the second
    and to the head's Ray temp dir too (its trial working folders are its own, as on another
    machine); once a trial on it has a
    checkpoint in the bucket, its raylet is killed with SIGKILL, as a machine that vanishes. The
    trial continues from that checkpoint on another node (FailureConfig), its history comes with
    the checkpoint (the new node has none of its files), every epoch is recorded once, the study
    holds exactly the budget, and the best config exports."""
    env, client = blind_cluster["env"], s3_env[1]
    blind = f"mount -t tmpfs tmpfs {blind_cluster['hidden']} && mount -t tmpfs tmpfs {blind_cluster['temp_dir']}"
    third = RayNode([f"--address={blind_cluster['address']}", "--num-cpus=1", "--disable-usage-stats"], env,
                    wrap=lambda cmd: ["unshare", "-m", "sh", "-c", f"{blind} && exec {' '.join(cmd)}"])
    proc = None
    try:
        assert third.returncode == 0, third.stderr
        (tmp_path / "space.yaml").write_text(LOSS_SPACE)
        (tmp_path / "sleepy.py").write_text(SLEEPY)
        proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "search.py"), "space.yaml", "--storage",
                                 f"s3://{BUCKET}/lost", "--name", "lost", "--address", blind_cluster["address"]],
                                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**env, "PYTHONUNBUFFERED": "1"}, start_new_session=True)

        raylet = [p for p in third.pids() if psutil.Process(p).name() == "raylet"]
        assert len(raylet) == 1, third.pids()
        namespace = os.readlink(f"/proc/{raylet[0]}/ns/mnt")  # the third node's own

        def victim():  # a trial of the third node (its worker is in the node's mount namespace), checkpointed
            for key in keys(client, "lost/lost/"):
                if key.endswith("run/placement.json"):
                    trial, placement = key.split("/")[2], json.loads(read_key(client, key))
                    try:
                        on_third = os.readlink(f"/proc/{placement['pid']}/ns/mnt") == namespace
                    except OSError:
                        continue
                    if on_third and any("/checkpoint_" in k for k in keys(client, f"lost/lost/{trial}/")):
                        return trial, placement["node_id"]
            return None

        found = wait_for(lambda: victim() or proc.poll() is not None, timeout=300)
        assert found is not True, "the search ended before a trial ran on the third node:\n" + proc.stdout.read()[-4000:]
        trial, lost_node = found
        os.kill(raylet[0], signal.SIGKILL)
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        third.stop()
    assert proc.returncode == 0, out[-4000:]
    rows = [json.loads(x) for x in read_key(client, f"lost/lost/{trial}/run/metrics.jsonl").splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, 9)), "every epoch once, none lost"
    resumed_at = {r["train/resumed_at"] for r in rows}
    assert resumed_at - {0.0} and min(resumed_at - {0.0}) < 8, "the retry continued from its checkpoint"
    moved = json.loads(read_key(client, f"lost/lost/{trial}/run/placement.json"))
    assert moved["node_id"] != lost_node, "the trial ended on a node that is still there"
    local = tmp_path / "results" / "lost"
    assert len((local / "trials.csv").read_text().splitlines()[1:]) == 4
    study = optuna.load_study(study_name="lost", storage=f"sqlite:///{local / 'study.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 4, "exactly the budget"
    assert len({json.dumps(t.params, sort_keys=True) for t in study.trials}) == 4, "no trial lost or run twice"
    assert "lost/lost/best_config.yaml" in keys(client, "lost/lost/")
