"""scripts/search.py for real: Ray Tune, Optuna, ASHA, on a small subset of the real ARC data."""

import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from tests.conftest import ROOT, assert_bystander_answers, run_script
from tests.ray_cluster import RAY, RayNode, free_ports, ray_env

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    storage = tmp_path_factory.mktemp("results")
    proc = run_script("scripts/search.py", "spaces/smoke.yaml", "--storage", str(storage), "--name", "smoke",
                      timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, storage / "smoke"


def ray_trials(exp: Path) -> list[dict]:
    trials = []
    for params in sorted(exp.glob("*/params.json")):
        results = [json.loads(line) for line in (params.parent / "result.json").read_text().splitlines()]
        trials.append({"path": params.parent, "params": json.loads(params.read_text()), "results": results})
    return trials


def test_smoke_search_writes_every_output(smoke):
    proc, exp = smoke
    assert "Ray dashboard: http://127.0.0.1:" in proc.stdout and "ray get-auth-token" in proc.stdout
    best_line = next(line for line in proc.stdout.splitlines() if line.startswith("best trial "))
    assert "checklist items passed)" in best_line or "checklist item passed)" in best_line
    assert any(line.startswith("checklist: ") and "items pass" in line for line in proc.stdout.splitlines())
    assert "Result logdir: " not in proc.stdout and f"Results: {exp}" in proc.stdout  # not Ray's scratch copy
    progress = [line for line in proc.stdout.splitlines() if line.startswith("Progress: ")]
    assert progress and "/4 trials ended" in progress[-1] and "trial-epochs" in progress[-1]
    assert "Checkpoint successfully created" not in proc.stdout + proc.stderr  # one line per epoch, gone ...
    assert any("Checkpoint successfully created" in p.read_text() for p in exp.glob("*/run/checkpoints.log"))
    for name in ("best_config.yaml", "best_trial.json", "trials.csv", "study.db", "tuner.pkl", "space.yaml",
                 "command.txt", "search_time.json", "versions.json"):
        assert (exp / name).is_file(), name
    from search.versions import installed

    assert json.loads((exp / "versions.json").read_text()) == installed()  # what it ran with
    trials = ray_trials(exp)
    assert len(trials) == 4
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    tb = EventMultiplexer().AddRunsFromDirectory(str(exp))
    tb.Reload()
    assert len(tb.Runs()) == len(trials) == 4  # one TensorBoard run per trial, not Ray's copy beside it
    for t in trials:
        assert not any(t["path"].glob("events.out.tfevents*")), "Ray's TensorBoard logger is off"
        run = str((t["path"] / "run" / "tb").relative_to(exp))
        scalars = set(tb.Runs()[run]["scalars"])
        assert {"score", "score/best", "codebook/usage", "rank/context", "checklist/passed",
                "checklist/usage_throughout"} <= scalars
        scores = [e.value for e in tb.Scalars(run, "score")]
        assert scores == pytest.approx([r["score"] for r in t["results"]], abs=1e-6)
        assert [e.step for e in tb.Scalars(run, "codebook/usage")] == [r["epoch"] for r in t["results"]]  # none purged
        assert run in tb.PluginRunToTagToContent("hparams"), "the trial's parameters in the HParams view"
        for r in t["results"]:
            for key in ("score", "score/best", "codebook/usage", "rank/context", "rank/target", "val/loss"):
                assert key in r
    rows = list(csv.DictReader((exp / "trials.csv").open()))
    assert len(rows) == 4 and {r["status"] for r in rows} <= {"completed", "early_stopped", "stopped", "collapsed"}
    best = json.loads((exp / "best_trial.json").read_text())
    best_value = max(t["results"][-1]["score"] for t in trials)  # the objective: final score
    assert best["value"] == pytest.approx(best_value)
    assert set(best["checklist"]) >= {"usage_throughout", "context_rank", "target_rank", "final_val_loss"}
    judging = json.loads((exp / "targets.json").read_text())  # frozen at the search's start
    assert best["targets"] == judging["targets"] and best["seed_targets"] == judging["seed"]
    assert best["verdict"]["passed"] == sum(v["pass"] for v in best["checklist"].values())
    # the objective judges the whole run so far, as the checklist does: each report's score is the
    # checklist's pass count on the trial's rows up to that epoch (against its budget) plus the margin
    from search.score import items_passed, run_score
    from search.targets import Targets

    targets = Targets(**judging["targets"])
    for t in trials:
        rows = [json.loads(x) for x in (t["path"] / "run" / "metrics.jsonl").read_text().splitlines()]
        planned = yaml.safe_load((t["path"] / "run" / "config.yaml").read_text())["training"]["epochs"]
        for i, r in enumerate(t["results"]):
            assert r["score"] == pytest.approx(run_score(rows[: i + 1], planned, targets))
            assert r["checklist/passed"] == items_passed(r["score"])
    assert f"({best['verdict']['passed']} checklist item" in best_line
    assert best["verdict_seed_targets"]["total"] == len(best["checklist_seed_targets"])


def test_reused_workers_keep_each_trial_to_itself(smoke, tmp_path):
    """Trials share worker processes (Ray's reuse_actors). Each trial's files are in its own folder
    and nothing carries over from the trial its worker ran before (weights, optimiser state,
    generators, the quantizer's buffers, torch's threads): the trial of the worker that had run
    the most trials, retrained alone in a fresh process, gives the same numbers."""
    _, exp = smoke
    placements = {t: json.loads((t / "run" / "placement.json").read_text()) for t in sorted(exp.glob("trial_*"))}
    assert len(placements) == 4
    assert max(p["worker_trials"] for p in placements.values()) > 1, "no worker ran a second trial"
    assert len({p["pid"] for p in placements.values()}) < len(placements)
    for folder, placement in placements.items():  # the trial's own files, in its own folder
        trial_id = folder.name.removeprefix("trial_")
        assert yaml.safe_load((folder / "run" / "config.yaml").read_text())["name"] == trial_id
        results = [json.loads(x) for x in (folder / "result.json").read_text().splitlines()]
        metrics = [json.loads(x) for x in (folder / "run" / "metrics.jsonl").read_text().splitlines()]
        assert [m["epoch"] for m in metrics] == [r["epoch"] for r in results]
        assert len(list((folder / "run" / "tb").glob("events.out.tfevents*"))) == 1
        assert (folder / "run" / "timing.json").is_file() and list(folder.glob("checkpoint_*/state.pt"))
        if placement["worker_trials"] > 1:  # taken over from another trial: no process start, no data load
            timing = json.loads((folder / "run" / "timing.json").read_text())
            assert placement["worker_assigned"] > placement["process_start"]
            assert timing["first_step"] > placement["worker_assigned"]
    # the console's "(trial_<id> pid=...) epoch ..." lines name the trial the worker runs now, not the
    # one it started with: each line's losses are that trial's (Ray folds similar lines, so not all show)
    console = re.findall(r"\(trial_([0-9a-f]{8}) pid=\d+\)\S* epoch +(\d+)/\d+ \| train ([\d.]+) \| val ([\d.]+)",
                         smoke[0].stdout)
    assert console
    for trial_id, epoch, train_loss, val_loss in console:
        row = [json.loads(x) for x in (exp / f"trial_{trial_id}" / "run" / "metrics.jsonl").read_text().splitlines()][
            int(epoch) - 1]
        assert (f"{row['train/loss']:.4f}", f"{row['val/loss']:.4f}") == (train_loss, val_loss), trial_id
    folder = max(placements, key=lambda f: placements[f]["worker_trials"])
    proc = run_script("scripts/train.py", str(folder / "run" / "config.yaml"), "--name", "alone",
                      "--results", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    in_search = [json.loads(x) for x in (folder / "run" / "metrics.jsonl").read_text().splitlines()]
    alone = [json.loads(x) for x in (tmp_path / "alone" / "metrics.jsonl").read_text().splitlines()]
    assert len(alone) >= len(in_search) >= 1
    for a, b in zip(in_search, alone):  # ASHA may have stopped the trial: its epochs are a prefix
        assert {k: v for k, v in a.items() if not k.startswith("time/")} == pytest.approx(
            {k: v for k, v in b.items() if not k.startswith("time/")}, rel=1e-6, abs=1e-9, nan_ok=True)


def test_exported_best_config_trains_as_is(smoke, tmp_path):
    _, exp = smoke
    proc = run_script("scripts/train.py", str(exp / "best_config.yaml"), "--set", "training.epochs=1",
                      "--results", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "epoch   1/1" in proc.stdout


def test_stopped_trials_are_pruned_in_the_study(smoke):
    _, exp = smoke
    study = optuna.load_study(study_name="smoke", storage=f"sqlite:///{exp / 'study.db'}")
    trials = ray_trials(exp)
    assert len(study.trials) == len(trials)
    states = []
    for ot in study.trials:
        (ray_trial,) = [t for t in trials if all(t["params"].get(k) == v for k, v in ot.params.items())]
        finished = ray_trial["results"][-1]["trial/finished"] == 1.0
        assert ot.state == (optuna.trial.TrialState.COMPLETE if finished else optuna.trial.TrialState.PRUNED)
        # every reported epoch is an intermediate value, with the value Ray saw
        assert ot.intermediate_values == {int(r["epoch"]): r["score"] for r in ray_trial["results"]}
        assert ot.value == ray_trial["results"][-1]["score"]
        states.append(ot.state)
    assert optuna.trial.TrialState.PRUNED in states and optuna.trial.TrialState.COMPLETE in states


def test_export_best_script_by_another_metric(smoke):
    _, exp = smoke
    proc = run_script("scripts/export_best.py", str(exp), "--metric", "val/loss", "--mode", "min", "--reduce", "best")
    assert proc.returncode == 0, proc.stderr
    best = json.loads((exp / "best_trial.json").read_text())
    assert best["metric"] == "val/loss" and best["reduce"] == "best"
    lowest = min(min(r["val/loss"] for r in t["results"]) for t in ray_trials(exp))
    assert best["value"] == pytest.approx(lowest)
    run_script("scripts/export_best.py", str(exp))  # restore the default export for other tests


def test_existing_experiment_is_not_overwritten(smoke):
    _, exp = smoke
    before = (exp / "trials.csv").stat().st_mtime_ns
    proc = run_script("scripts/search.py", "spaces/smoke.yaml", "--storage", str(exp.parent), "--name", "smoke")
    assert proc.returncode == 2
    assert "--resume" in proc.stderr and "--name" in proc.stderr and "Traceback" not in proc.stderr
    assert (exp / "trials.csv").stat().st_mtime_ns == before


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    depth = best = 0
    for _, step in events:
        depth += step
        best = max(best, depth)
    return best


def test_fractional_gpus_pack_four_trials_per_gpu(tmp_path):
    """One logical GPU, trials at gpu 0.25 (and cpu 0.25, so the GPU is what limits them): four
    trials share the GPU at once, never five. Each trial outlasts the start of the fourth worker
    (60 epochs, ~30 s): on 2 cores Ray starts trial workers two at a time, and the fourth began its
    trial ~12 s after the first (with 8 epochs, ~3.5 s trials, the overlap was 2; with 24, ~12 s, 3)."""
    proc = run_script("scripts/search.py", "spaces/smoke.yaml", "--storage", str(tmp_path), "--name", "gpu",
                      "--num-gpus", "1", "--gpu", "0.25", "--cpu", "0.25", "--num-samples", "6",
                      "--max-epochs", "60", "--no-early-stopping", timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    placements = [json.loads(p.read_text()) for p in (tmp_path / "gpu").glob("*/run/placement.json")]
    assert len(placements) == 6
    for p in placements:
        assert p["gpu_ids"] == ["0"] and p["cuda_visible_devices"] == "0"
    assert max_overlap([(p["start"], p["end"]) for p in placements]) == 4  # four at once, never five


def test_report_matches_the_stored_metrics(smoke):
    proc, exp = smoke
    assert "report:" in proc.stdout
    text = (exp / "report.md").read_text()
    for png in ("curves.png", "params.png"):
        assert (exp / png).stat().st_size > 10_000 and f"]({png})" in text
    trials = ray_trials(exp)
    assert f"{len(trials)} trials:" in text
    top = text.split("## Top", 1)[1].split("\n## ", 1)[0]  # the top-trials section only
    table = [line for line in top.splitlines() if line.startswith("| `")]
    assert len(table) == len(trials)
    finals = sorted((t["results"][-1]["score"] for t in trials), reverse=True)
    shown = [float(line.split("|")[4]) for line in table]  # the final-score column, best first
    assert shown == pytest.approx([round(f, 5) for f in finals], abs=1e-5)
    from search.judge import format_item, judge
    from search.targets import read_judging

    targets = read_judging(exp).targets
    for t in trials:  # each row's checklist is the one evaluated on that trial's history
        history = [json.loads(x) for x in (t["path"] / "run" / "metrics.jsonl").read_text().splitlines()]
        judgement = judge(history, 2, targets)
        row = next(line for line in table if line.startswith(f"| `{t['path'].name.removeprefix('trial_')}`"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[-9:-1] == [format_item(k, v) for k, v in judgement.items.items()]
        assert cells[-1] == f"{judgement.seed_verdict['passed']}/8"
        assert "x @" in cells[-6] or cells[-6].startswith("pass: max 1.00x")  # the spike shown as a ratio
    # the report's best trial is the one best_trial.json names (one ranking, search/judge.py)
    best = json.loads((exp / "best_trial.json").read_text())["trial_id"]
    assert f"Best trial: `{best}`" in text and table[0].startswith(f"| `{best}`")
    header = next(line for line in top.splitlines() if line.startswith("| trial"))
    assert "usage > 15% every epoch" in header  # columns say what they judge
    assert "Ran with python " in text and "torch " in text and "optuna " in text and "scripts/search.py" in text


def test_verify_retrains_the_best_with_fresh_seeds_and_says_when_versions_differ(smoke, tmp_path):
    _, exp = smoke
    recorded = json.loads((exp / "versions.json").read_text())
    (exp / "versions.json").write_text(json.dumps({**recorded, "optuna": "4.0.0"}))  # as if searched then
    try:
        proc = run_script("scripts/verify.py", str(exp), "--seeds", "2", "--top", "1", "--epochs", "1", timeout=600)
    finally:
        (exp / "versions.json").write_text(json.dumps(recorded))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"note: verifying with optuna {recorded['optuna']} here, 4.0.0 when the experiment ran" in proc.stdout
    verify = json.loads((exp / "verify.json").read_text())
    assert verify["versions"] == recorded and len(verify["versions_differ"]) == 1
    assert "Verified with other versions than the search ran with: optuna" in (exp / "report.md").read_text()
    (trial_id, items) = next(iter(verify["trials"].items()))
    assert verify["seeds"] == [1000, 1001]
    assert len(items["final_val_loss"]["values"]) == 2
    runs = sorted((exp / "verify").iterdir())
    assert [r.name for r in runs] == [f"{trial_id}-seed1000", f"{trial_id}-seed1001"]
    losses = [json.loads((r / "metrics.jsonl").read_text().splitlines()[-1])["val/loss_reference"] for r in runs]
    assert items["final_val_loss"]["values"] == pytest.approx(losses)
    assert losses[0] != losses[1]  # fresh seeds, not a replay
    assert "## Verification" in (exp / "report.md").read_text()


def test_multi_objective_search_survives_ctrl_c_resumes_and_reports_the_pareto_front(tmp_path):
    """NSGA-II (whose sampler holds a thread lock in Optuna 5.1) end to end: started, stopped by
    Ctrl-C once a trial has ended, resumed with --resume to the full budget, reported."""
    import signal
    import time

    space = tmp_path / "space.yaml"
    text = (ROOT / "spaces" / "smoke.yaml").read_text().replace("../configs/", f"{ROOT}/configs/")
    space.write_text(text + "objective: {multi_objective: true}\n")
    command = [sys.executable, "scripts/search.py", str(space), "--storage", str(tmp_path), "--name", "pareto"]
    exp = tmp_path / "pareto"
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not (exp / "trials.csv").is_file() or not any(
                r["status"] in ("completed", "stopped") for r in csv.DictReader((exp / "trials.csv").open())):
            assert proc.poll() is None and time.time() < deadline, proc.stdout.read()[-3000:]
            time.sleep(0.5)
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        output = proc.communicate(timeout=180)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "Traceback" not in output and "pickle" not in output, output[-3000:]
    if proc.returncode == 130:  # stopped before the budget: resume it (it may have just finished)
        resumed = run_script(*command[1:], "--resume", timeout=600)
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        assert "Resumed: " in resumed.stdout
    else:
        assert proc.returncode == 0, output[-3000:]
    study = optuna.load_study(study_name="pareto", storage=f"sqlite:///{exp / 'study.db'}")
    assert len(study.directions) == 3 and len(study.trials) == 4
    assert optuna.trial.TrialState.RUNNING not in [t.state for t in study.trials]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    for t in complete:  # the values are the trial's last-epoch metrics
        (result,) = [json.loads(x) for x in (exp / f"trial_{t.user_attrs['ray_trial_id']}" / "result.json")
                     .read_text().splitlines()][-1:]
        assert t.values == [result["codebook/usage"], result["rank/context"], result["val/loss_reference"]]
    text = (exp / "report.md").read_text()
    assert "## Pareto front" in text and (exp / "pareto.png").stat().st_size > 10_000
    assert text.count("| `") >= len(study.best_trials)
    assert (exp / "best_config.yaml").is_file()  # the checklist score still picks one config


@pytest.fixture
def cluster_with_dashboard(bystander):
    """A head node with its dashboard, stopped by its own process group (tests/ray_cluster.py)."""
    port, dashboard = free_ports(2)  # distinct (two free_port() calls may return one port twice)
    env = ray_env()
    head = RayNode(["--head", "--num-cpus=2", f"--port={port}", "--include-dashboard=true",
                    "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--disable-usage-stats"], env)
    try:
        assert head.returncode == 0, head.stderr
        yield f"http://127.0.0.1:{dashboard}", env
    finally:
        head.stop()
        assert_bystander_answers(bystander)


def test_search_as_a_submitted_job_shows_its_console_in_the_job_logs(cluster_with_dashboard, tmp_path):
    """README: `ray job submit -- python scripts/search.py ...` puts the search's console in the
    dashboard's job page (the driver logs of a job started by hand are not shown there)."""
    address, env = cluster_with_dashboard
    entry = [sys.executable, str(ROOT / "scripts" / "search.py"), str(ROOT / "spaces" / "smoke.yaml"),
             "--storage", str(tmp_path), "--name", "job", "--max-epochs", "1"]
    submit = [RAY, "job", "submit", "--address", address, "--submission-id", "smoke-job", "--", *entry]
    # The job agent answers some seconds after `ray start` returns (README): until then the head
    # refuses the job ("No available agent ...", after waiting 10 s itself) and nothing is created.
    deadline = time.time() + 120
    while True:
        proc = subprocess.run(submit, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
        if "No available agent to submit job" not in proc.stdout + proc.stderr or time.time() > deadline:
            break
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    logs = subprocess.run([RAY, "job", "logs", "--address", address, "smoke-job"], capture_output=True, text=True,
                          timeout=120, env=env)
    assert logs.returncode == 0, logs.stderr
    assert "best trial " in logs.stdout and "checklist: " in logs.stdout  # what the job page shows
    assert (tmp_path / "job" / "best_config.yaml").is_file()
