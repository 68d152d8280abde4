"""Faults injected for real during a search: a NaN loss, SIGKILL of a trial's worker, SIGINT and
SIGKILL of the driver. The search must keep going and lose nothing."""

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from tests.conftest import ROOT, run_script, wait_for

pytestmark = pytest.mark.slow


def write_space(tmp_path: Path, extra_params: str = "", budget: str = "", base_set: str = "") -> Path:
    text = (ROOT / "spaces" / "smoke.yaml").read_text().replace("../configs/", f"{ROOT}/configs/")
    text = text.replace("params:\n", f"params:\n{extra_params}")
    text = text.replace("set:\n", f"set:\n{base_set}")
    if budget:
        text = text.split("budget:")[0] + budget
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def rows(exp: Path) -> list[dict]:
    return list(csv.DictReader((exp / "trials.csv").open()))


def start(space: Path, storage: Path, name: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "scripts/search.py", str(space), "--storage", str(storage),
                             "--name", name, *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            start_new_session=True)



def test_nan_trial_is_recorded_as_diverged_and_the_search_completes(tmp_path):
    space = write_space(tmp_path, "  training.lr: {dist: categorical, choices: [1.0e-3, 1.0e20]}\n",
                        base_set="  training.grad_clip.max_norm: 1.0e30\n")
    text = space.read_text().replace("seed: 0", "seed: 0\nsampler: random").replace("num_samples: 4", "num_samples: 6")
    space.write_text(text)
    proc = run_script("scripts/search.py", str(space), "--storage", str(tmp_path / "r"), "--name", "nan", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    exp = tmp_path / "r" / "nan"
    statuses = {r["status"] for r in rows(exp)}
    lrs = {float(r["training.lr"]) for r in rows(exp)}
    assert lrs == {1e-3, 1e20}, "the random sampler drew both learning rates"
    diverged = [r for r in rows(exp) if r["status"] == "diverged"]
    assert diverged and all(float(r["training.lr"]) == 1e20 for r in diverged)
    assert statuses & {"completed", "stopped"}
    best = json.loads((exp / "best_trial.json").read_text())
    assert best["params"]["training.lr"] == 1e-3
    study = optuna.load_study(study_name="nan", storage=f"sqlite:///{exp / 'study.db'}")
    assert all(t.value == -1.0 for t in study.trials if t.params["training.lr"] == 1e20)


def kill_worker_after_an_epoch(exp: Path, killed: set, trial: str | None = None) -> str:
    """SIGKILL a trial's worker once it has reported an epoch since it started: the first trial
    to do so, or the given one (after a restart: its new worker, after a new report)."""
    def victim():
        for placement in sorted(exp.glob(f"{trial or '*'}/run/placement.json")):
            info = json.loads(placement.read_text())
            reported_since_start = info.get("end", 0) > info["start"]  # `end` = time of the latest report
            if info["pid"] not in killed and reported_since_start:
                return info["pid"], placement.parent.parent.name
        return None

    pid, name = wait_for(victim)
    os.kill(pid, signal.SIGKILL)
    killed.add(pid)
    return name


def test_worker_killed_twice_fails_its_trial_and_the_search_goes_on(tmp_path):
    # one kill and a resume from the checkpoint, epoch for epoch: tests/test_cluster_storage.py
    # (the same Ray retry, with the checkpoint in a bucket and the worker on another node)
    kills, expected = 2, "failed"
    # 200 tasks and 6 epochs: long enough that a kill lands mid-run, after Ray synced the report
    space = write_space(tmp_path, budget="budget: {num_samples: 2, max_epochs: 6, grace_period: 6, "
                        "reduction_factor: 2, max_failures: 1, max_concurrent: 1}\nresources: {cpu: 1}\nseed: 0\n")
    space.write_text(space.read_text().replace("data.max_tasks: 60", "data.max_tasks: 200"))
    exp = tmp_path / "r" / "kill"
    proc = start(space, tmp_path / "r", "kill")
    try:
        killed: set = set()
        trial = kill_worker_after_an_epoch(exp, killed)
        for _ in range(kills - 1):  # kill its retry too: the trial has no retries left
            kill_worker_after_an_epoch(exp, killed, trial)
        assert proc.wait(timeout=600) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    by_id = {r["trial_id"]: r for r in rows(exp)}
    assert len(by_id) == 2
    victim = next(r for r in rows(exp) if trial.endswith(r["trial_id"]))
    assert victim["status"] == expected
    others = [r for r in rows(exp) if r["trial_id"] != victim["trial_id"]]
    assert len(others) == 1
    assert all(r["status"] == "completed" for r in others), "the search went on"


def test_driver_killed_then_resumed_finishes_the_budget(tmp_path):
    # SIGKILL, the harder case; Ctrl-C's clean stop and its resume hint: tests/test_dashboard.py
    sig = signal.SIGKILL
    space = write_space(tmp_path, budget="budget: {num_samples: 5, max_epochs: 3, grace_period: 1, "
                        "reduction_factor: 2}\nresources: {cpu: 1}\nseed: 0\n")
    exp = tmp_path / "r" / "driver"
    proc = start(space, tmp_path / "r", "driver")
    try:
        # wait until at least one trial has finished, then a random extra delay
        wait_for(lambda: (exp / "trials.csv").is_file() and any(
            r["status"] in ("completed", "stopped") for r in rows(exp)))
        delay = random.Random(int(time.time())).uniform(0, 6)
        time.sleep(delay)
        finished_before = {r["trial_id"]: (exp / f"trial_{r['trial_id']}" / "result.json").read_text()
                           for r in rows(exp) if r["status"] == "completed"}
        proc.send_signal(sig)  # the driver process alone; Ray's own processes share its fate
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert (exp / "best_config.yaml").is_file(), "best so far survives the interruption"
    killed = optuna.load_study(study_name="driver", storage=f"sqlite:///{exp / 'study.db'}").trials
    budget_ran = len(killed) == 5 and all(t.state.is_finished() for t in killed)  # killed while exporting
    resumed = run_script("scripts/search.py", str(space), "--storage", str(tmp_path / "r"), "--name", "driver",
                         "--resume", timeout=600)
    assert resumed.returncode == 0, f"delay {delay:.1f}s\n" + resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert budget_ran or "Resumed: " in resumed.stdout, "the study was reconciled with Ray's restored trials"
    final = rows(exp)
    assert len(final) == 5, "the number of trials equals the budget"
    assert all(r["status"] in ("completed", "stopped", "collapsed") for r in final)
    for trial_id, text in finished_before.items():  # finished trials keep their result
        assert (exp / f"trial_{trial_id}" / "result.json").read_text() == text
    study = optuna.load_study(study_name="driver", storage=f"sqlite:///{exp / 'study.db'}")
    states = [t.state for t in study.trials]
    assert len(study.trials) == 5, [(t.number, t.state, t.params) for t in study.trials]
    assert optuna.trial.TrialState.RUNNING not in states
    assert len({json.dumps(t.params, sort_keys=True) for t in study.trials}) == 5, "no duplicates"
    # every Ray trial is one study trial with the same params (the smoke space has no constants)
    ray_params = sorted(json.dumps(json.loads(p.read_text()), sort_keys=True) for p in exp.glob("*/params.json"))
    assert ray_params == sorted(json.dumps(t.params, sort_keys=True) for t in study.trials)
