"""A broken trainer stops the search once, clearly; a non-finite report is a diverged trial.

Real searches (scripts/search.py in a subprocess, real Ray and Optuna) of small trainers written
to a temporary folder, as a user's own trainer would be (docs/own_model.md)."""

import csv
import json
import textwrap

import optuna
import pytest

from tests.conftest import ROOT, run_script

pytestmark = pytest.mark.slow

SPACE = textwrap.dedent("""
    trainer: mine:train
    params:
      x: {dist: uniform, low: 0, high: 1}
    objective: {targets: seed, target_rank_weight: 0.0}
    budget: {num_samples: 4, max_epochs: 3, grace_period: 3, reduction_factor: 2, max_concurrent: 2}
    resources: {cpu: 1}
    sampler: random
    seed: 3
""")

TRAINER = textwrap.dedent("""
    def train(config, run):
        for epoch in range(1, run.epochs + 1):
            run.report({"val/loss": 1.0 / epoch, "codebook/usage": USAGE})
""")


def search(tmp_path, *extra):
    return run_script(str(ROOT / "scripts" / "search.py"), "space.yaml", "--storage", "results", "--name", "s", *extra,
                      cwd=tmp_path, timeout=300)


def test_a_wrongly_typed_metric_ends_the_search_at_once_and_resumes_once_fixed(tmp_path):
    """A string for a checklist metric: exit 2 after the first trial that shows it, the message
    (trainer, key, value, what is expected) once, the resume command; with the trainer fixed,
    --resume ends with exactly the budget in the study."""
    (tmp_path / "space.yaml").write_text(SPACE)
    (tmp_path / "mine.py").write_text(TRAINER.replace("USAGE", '"high"'))
    proc = search(tmp_path)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    message = "mine:train: run.report: 'codebook/usage' must be a number"
    assert proc.stderr.count("error: the trainer broke its contract in trial") == 1
    assert message in proc.stderr.split("error: the trainer broke")[1] and "got str 'high'" in proc.stderr
    assert "--resume" in proc.stderr.splitlines()[-1]
    shown = proc.stdout + proc.stderr
    assert "search.contract.TrainerError" not in shown and 'File "' not in shown, "the one message, no traceback"
    exp = tmp_path / "results" / "s"
    ran = [p for p in exp.glob("trial_*/run/metrics.jsonl")]
    assert len(ran) <= 2, "the search stopped after the first broken trial (2 run at once)"
    record = exp / "contract_error.json"
    assert f"(the trial's whole error text: {record})" in proc.stderr
    assert "search.contract.TrainerError: mine:train" in json.loads(record.read_text())["error"]

    (tmp_path / "mine.py").write_text(TRAINER.replace("USAGE", "0.5"))
    resumed = search(tmp_path, "--resume")
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{exp / 'study.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 4
    assert not (exp / "contract_error.json").exists()


def test_a_trainer_that_never_reports_is_named_as_such(tmp_path):
    (tmp_path / "space.yaml").write_text(SPACE)
    (tmp_path / "mine.py").write_text("def train(config, run):\n    return None\n")
    proc = search(tmp_path)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "mine:train returned without calling run.report" in proc.stderr


def test_an_infinite_or_nan_loss_is_a_diverged_trial_and_the_search_goes_on(tmp_path):
    """Trials with x < 0.5 report an infinite val loss at epoch 2: recorded as diverged (the
    JEPA's NaN is), the others complete, the search exits 0 with a best config."""
    (tmp_path / "space.yaml").write_text(SPACE)
    (tmp_path / "mine.py").write_text(textwrap.dedent("""
        def train(config, run):
            for epoch in range(1, run.epochs + 1):
                loss = float("inf") if config["x"] < 0.5 and epoch == 2 else 1.0 / epoch
                run.report({"val/loss": loss, "codebook/usage": 0.5})
    """))
    proc = search(tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    exp = tmp_path / "results" / "s"
    rows = list(csv.DictReader((exp / "trials.csv").open()))
    params = {r["trial_id"]: json.loads((exp / f"trial_{r['trial_id']}" / "params.json").read_text()) for r in rows}
    for r in rows:
        assert r["status"] == ("diverged" if params[r["trial_id"]]["x"] < 0.5 else "completed"), rows
        status = json.loads((exp / f"trial_{r['trial_id']}" / "run" / "status.json").read_text())
        assert status["status"] == r["status"]
    assert any(r["status"] == "diverged" for r in rows) and any(r["status"] == "completed" for r in rows)
