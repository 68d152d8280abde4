"""The real scripts/train.py in a subprocess on a small real subset of ARC."""

import json
import math

import pytest
import yaml

from model.train import METRIC_KEYS
from tests.conftest import SMALL, run_script

pytestmark = pytest.mark.slow


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_one_epoch_writes_every_key_then_resumes(results):
    proc = run_script("scripts/train.py", "configs/sixth_run.yaml", *SMALL, "--results", str(results))
    assert proc.returncode == 0, proc.stderr
    run_dir = results / "sixth_run"
    for name in ("config.yaml", "command.txt", "versions.json", "metrics.jsonl", "status.json", "checkpoint/state.pt"):
        assert (run_dir / name).is_file(), name
    assert any(p.name.startswith("events.out.tfevents") for p in (run_dir / "tb").iterdir())
    (m,) = read_metrics(run_dir)
    assert set(METRIC_KEYS) <= set(m)
    assert all(math.isfinite(m[k]) for k in METRIC_KEYS)
    assert 0 < m["codebook/usage"] <= 1 and m["rank/context"] >= 1 and m["rank/target"] >= 1
    assert "epoch   1/1" in proc.stdout
    # the epoch's time splits into training steps and evaluation; start-up times are in order
    assert 0 < m["time/train_s"] < m["time/epoch_s"] and m["time/eval_s"] > 0
    assert m["time/train_s"] + m["time/eval_s"] == pytest.approx(m["time/epoch_s"])
    timing = json.loads((run_dir / "timing.json").read_text())
    assert timing["called"] <= timing["data_ready"] <= timing["model_ready"] <= timing["first_step"]

    # the same command again runs under a fresh name (the search prints such a command) ...
    again = run_script("scripts/train.py", "configs/sixth_run.yaml", *SMALL, "--results", str(results))
    assert again.returncode == 0, again.stderr
    assert f"this run is {results / 'sixth_run-2'}" in again.stdout
    assert yaml.safe_load((results / "sixth_run-2" / "config.yaml").read_text())["name"] == "sixth_run-2"
    assert [r["epoch"] for r in read_metrics(run_dir)] == [1]  # the first run is untouched
    # ... an explicit --name that exists is refused without --resume ...
    named = run_script("scripts/train.py", "configs/sixth_run.yaml", *SMALL, "--name", "sixth_run",
                       "--results", str(results))
    assert named.returncode == 2 and "--resume" in named.stderr
    # ... and with --resume continues from the checkpoint to epoch 2
    resumed = run_script("scripts/train.py", str(run_dir / "config.yaml"), "--set", "training.epochs=2",
                         "--results", str(results), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout
    assert [r["epoch"] for r in read_metrics(run_dir)] == [1, 2]
    assert json.loads((run_dir / "timing.json").read_text())["called"] > timing["first_step"]  # this process

    # the standalone reproduce command names the resolved config
    assert "config.yaml" in (run_dir / "command.txt").read_text()


def test_nan_loss_ends_run_as_diverged(results):
    proc = run_script("scripts/train.py", "configs/sixth_run.yaml", *SMALL, "--set", "training.lr=1e20",
                      "--set", "training.grad_clip.max_norm=1e30", "--results", str(results))
    assert proc.returncode == 1
    assert "diverged at epoch 1" in proc.stdout
    status = json.loads((results / "sixth_run" / "status.json").read_text())
    assert status["status"] == "diverged"


@pytest.mark.parametrize("config", ["vq_gradient", "vq_gumbel", "vq_fsq", "context_last", "context_attention",
                                    "context_gru", "loss_weights", "diagnostic_no_vq", "stable_production"])
def test_each_seed_option_config_trains_one_epoch(results, config):
    proc = run_script("scripts/train.py", f"configs/{config}.yaml", *SMALL, "--results", str(results))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (m,) = read_metrics(results / config)
    assert set(METRIC_KEYS) <= set(m)
    if config == "diagnostic_no_vq":
        assert math.isnan(m["codebook/usage"])
    else:
        assert 0 < m["codebook/usage"] <= 1 and m["codebook/perplexity"] >= 1


def test_augment_copies_multiplies_the_steps_of_an_epoch(results):
    steps = {}
    for copies in (1, 3):
        proc = run_script("scripts/train.py", "configs/vq_gentle.yaml", *SMALL, "--set",
                          f"data.augment_copies={copies}", "--name", f"copies{copies}", "--results", str(results))
        assert proc.returncode == 0, proc.stderr[-3000:]
        (m,) = read_metrics(results / f"copies{copies}")
        steps[copies] = m["step"]
    assert steps[1] > 0 and steps[3] in (3 * steps[1], 3 * steps[1] + 1, 3 * steps[1] + 2)  # drop_last
