"""The trainer contract (search/contract.py): a user's trainer is found, checked and run; what it
reports is checked; and a search of a trainer written outside the package runs end to end, judged
through its space's name map (the toy calls its context rank `rank/encoder`)."""

import csv
import json
import math
import sys
import textwrap

import pytest
import yaml

from model.config import ConfigError
from search.contract import Run, TrainerError, load_trainer, read_run_file, run_file
from tests.conftest import ROOT, run_script

TOY = textwrap.dedent('''
    """A user's own trainer, outside the package: a toy whose codebook fills up at a rate it is given."""
    import json
    from pathlib import Path


    def train(config, run):
        rate = config["model"]["rate"]
        start = 0
        if run.restored is not None:  # Ray restored the trial: continue where its checkpoint was
            start = json.loads((Path(run.restored) / "state.json").read_text())["epoch"]
        for epoch in range(start + 1, run.epochs + 1):
            usage = min(1.0, rate * epoch)
            metrics = {"val/loss": 1.0 / epoch + run.seed * 1e-3, "codebook/usage": usage,
                       "rank/encoder": 2.0 + 20.0 * usage, "grad/norm_mean": 1.0, "grad/norm_max": 2.0}
            if config.get("broken"):
                metrics["codebook/usage"] = "most of them"
            checkpoint = Path(run.dir) / "checkpoint"
            checkpoint.mkdir(exist_ok=True)
            (checkpoint / "state.json").write_text(json.dumps({"epoch": epoch}))
            run.report(metrics, checkpoint=checkpoint)


    def not_a_trainer(config):
        pass
''')


@pytest.fixture
def user_folder(tmp_path, monkeypatch):
    """A folder of the user's with their trainer module, as the working directory."""
    (tmp_path / "mytrainer.py").write_text(TOY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("mytrainer", None)


def test_a_trainer_is_found_from_the_working_folder_and_checked(user_folder):
    assert load_trainer("mytrainer:train").__name__ == "train"
    for spec, message in (("mytrainer", "is not 'package.module:function'"),
                          ("nosuchmodule:train", "cannot import 'nosuchmodule'"),
                          ("mytrainer:missing", "mytrainer has no function 'missing'"),
                          ("mytrainer:not_a_trainer", "must take two arguments, (config: dict, run)")):
        with pytest.raises(ConfigError) as err:
            load_trainer(spec, "space.yaml: trainer")
        assert message in str(err.value)
        assert str(err.value).startswith("space.yaml: trainer: ")


def test_a_run_numbers_checks_and_records_each_report(tmp_path):
    seen = []
    run = Run("toy:train", epochs=3, seed=7, dir=tmp_path / "run", score=lambda history: {"score": 1.5 * len(history)},
              send=lambda row, checkpoint, final: seen.append((row["epoch"], final)))
    run.report({"val/loss": 2, "codebook/usage": 0.5})
    run.report({"val/loss": 1.0, "codebook/usage": math.nan})  # NaN: not measured this epoch
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[0]["val/loss"] == 2.0 and seen == [(1, False), (2, False)]
    with pytest.raises(TrainerError, match="'codebook/usage' must be a number \\(the checklist reads it as a number"):
        run.report({"codebook/usage": "high"})
    with pytest.raises(TrainerError, match="'note' must be a number \\(metrics are numbers\\), got str"):
        run.report({"note": "hello"})
    with pytest.raises(TrainerError, match="must be a number"):
        run.report({"flag": True})
    with pytest.raises(TrainerError, match="checkpoint must be a folder"):
        run.report({"val/loss": 1.0}, checkpoint=tmp_path / "nothing-here")
    assert run.close() == "early_stopped"  # 2 of 3 epochs: the trainer returned before its budget
    assert json.loads((tmp_path / "run" / "status.json").read_text()) == {"status": "early_stopped", "epochs": 2}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tb"))
    events.Reload()
    assert {"val/loss", "codebook/usage", "score"} <= set(events.Tags()["scalars"])
    assert [s.value for s in events.Scalars("score")] == [1.5, 3.0]  # scored on the history so far


def test_a_contract_space_nests_its_parameters_and_its_run_file_is_checked(user_folder):
    from search.space import load_space

    (user_folder / "space.yaml").write_text("trainer: mytrainer:train\nset: {model.rate: 0.1}\n"
                                            "params:\n  model.width: {dist: int, low: 2, high: 8}\n")
    loaded = load_space(user_folder / "space.yaml")
    assert loaded.base == {"model": {"rate": 0.1}} and loaded.trainer == "mytrainer:train"
    assert loaded.contract_config({"model.width": 4, "opt.lr": 0.1}) == {"model": {"rate": 0.1, "width": 4},
                                                                          "opt": {"lr": 0.1}}
    (user_folder / "bad.yaml").write_text("trainer: mytrainer:not_a_trainer\nparams:\n  x: {dist: uniform, low: 0, high: 1}\n")
    with pytest.raises(ConfigError, match="bad.yaml: trainer: mytrainer:not_a_trainer must take two arguments"):
        load_space(user_folder / "bad.yaml")
    (user_folder / "nobase.yaml").write_text("params:\n  x: {dist: uniform, low: 0, high: 1}\n")
    with pytest.raises(ConfigError, match="base: a training config is needed"):
        load_space(user_folder / "nobase.yaml")
    good = run_file("mytrainer:train", "r", 0, 3, {})
    assert read_run_file(good, "f.yaml") == good
    with pytest.raises(ConfigError, match="f.yaml: epochs: must be int"):
        read_run_file({**good, "epochs": "three"}, "f.yaml")
    with pytest.raises(ConfigError, match="f.yaml: optimizer: unknown key"):
        read_run_file({**good, "optimizer": "adam"}, "f.yaml")
    # the name map (checklist name -> the trainer's): only names the checklist reads, mapped to a name
    named = run_file("mytrainer:train", "r", 0, 3, {}, {"rank/context": "rank/encoder"})
    assert read_run_file(named, "f.yaml")["metrics"] == {"rank/context": "rank/encoder"}
    with pytest.raises(ConfigError, match="f.yaml: metrics.rank/encoder: not a metric the checklist reads "
                                          r"\(allowed: codebook/usage, rank/context"):
        read_run_file({**good, "metrics": {"rank/encoder": "rank/context"}}, "f.yaml")
    (user_folder / "badmap.yaml").write_text("trainer: mytrainer:train\nmetrics: {rank/contxt: rank/encoder}\n"
                                             "params:\n  model.width: {dist: int, low: 2, high: 8}\n")
    with pytest.raises(ConfigError, match="badmap.yaml: .*metrics.rank/contxt: not a metric the checklist reads"):
        load_space(user_folder / "badmap.yaml")


def test_a_bad_trainer_stops_the_search_before_any_trial(tmp_path):
    (tmp_path / "space.yaml").write_text("trainer: nosuchmodule:train\nparams:\n  x: {dist: uniform, low: 0, high: 1}\n")
    proc = run_script(str(ROOT / "scripts" / "search.py"), str(tmp_path / "space.yaml"), "--storage",
                      str(tmp_path / "results"), cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{tmp_path / 'space.yaml'}: trainer: cannot import 'nosuchmodule'" in proc.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_a_trainer_written_outside_the_package_is_searched_exported_rerun_and_verified(user_folder):
    """As docs/own_model.md has a user do: their module and space in their folder, the search run
    from there; the first trial whose trainer reports a string ends the search (exit 2, the message,
    the resume command); the user fixes the trainer and resumes; the best config names the trainer
    and scripts/train.py runs it; verify retrains it; the target-rank item is n/a."""
    (user_folder / "space.yaml").write_text(textwrap.dedent("""
        trainer: mytrainer:train
        set: {model.rate: 0.05}
        metrics: {rank/context: rank/encoder}
        params:
          model.rate: {dist: loguniform, low: 0.02, high: 0.5}
          broken: {dist: categorical, choices: [false, true]}
        objective: {targets: seed, target_rank_weight: 0.0}
        budget: {num_samples: 5, max_epochs: 3, grace_period: 3, reduction_factor: 2, max_failures: 0}
        resources: {cpu: 1}
        sampler: random
        seed: 3
    """))
    command = [str(ROOT / "scripts" / "search.py"), "space.yaml", "--storage", "results", "--name", "mine"]
    proc = run_script(*command, cwd=user_folder, timeout=600)
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]  # the random sampler draws broken early
    assert "mytrainer:train: run.report: 'codebook/usage' must be a number" in proc.stderr
    exp = user_folder / "results" / "mine"
    (user_folder / "mytrainer.py").write_text(TOY.replace('"most of them"', "usage"))  # the user's fix
    proc = run_script(*command, "--resume", cwd=user_folder, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = list(csv.DictReader((exp / "trials.csv").open()))
    assert len(rows) == 5 and {r["broken"] for r in rows} == {"True", "False"}
    assert all(r["status"] == "completed" and r["epochs"] == "3" for r in rows), rows
    best = yaml.safe_load((exp / "best_config.yaml").read_text())
    assert best["trainer"] == "mytrainer:train" and best["epochs"] == 3 and "broken" in best["config"]
    summary = json.loads((exp / "best_trial.json").read_text())
    assert summary["checklist"]["target_rank"]["pass"] is None  # never reported: n/a
    # judged through the name map: the checklist's context rank is the toy's rank/encoder at its last epoch
    last = json.loads((exp / f"trial_{summary['trial_id']}" / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert summary["checklist"]["context_rank"]["value"] == last["rank/encoder"] == last["rank/context"]
    assert best["metrics"] == {"rank/context": "rank/encoder"}  # the run file keeps the map for train.py and verify
    assert "target rank > 20 at the end" in summary["verdict"]["n/a"]
    assert "| n/a |" in (exp / "report.md").read_text()
    rerun = run_script(str(ROOT / "scripts" / "train.py"), str(exp / "best_config.yaml"), "--results", "runs",
                       cwd=user_folder)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    trial = json.loads(next(p for p in exp.glob(f"trial_{summary['trial_id']}/run/metrics.jsonl")).read_text()
                       .splitlines()[-1])
    again = json.loads((user_folder / "runs" / "mine-best" / "metrics.jsonl").read_text().splitlines()[-1])
    assert again == trial  # the same trainer, config and seed: the same run
    verify = run_script(str(ROOT / "scripts" / "verify.py"), str(exp), "--seeds", "2", "--top", "1", cwd=user_folder)
    assert verify.returncode == 0, verify.stderr[-3000:]
    items = json.loads((exp / "verify.json").read_text())["trials"][summary["trial_id"]]
    assert items["target_rank"]["pass_rate"] is None and items["completed_all_epochs"]["pass_rate"] == 1.0
    assert items["context_rank"]["applicable"] == 2  # the retrained seeds are judged through the map too
    losses = items["final_val_loss"]["values"]
    assert losses == pytest.approx([1 / 3 + 1000e-3, 1 / 3 + 1001e-3])  # run.seed: the fresh seeds reached the trainer


@pytest.mark.slow
def test_the_adapter_and_space_of_docs_own_model_search_as_written(tmp_path):
    """docs/own_model.md's two blocks, saved as it says, searched from their folder on a small budget."""
    import re

    text = (ROOT / "docs" / "own_model.md").read_text()
    blocks = dict(re.findall(r"```(?:python|yaml)\n# (\S+)\n(.*?)```", text, re.S))
    assert set(blocks) == {"my_vq.py", "my_space.yaml"}
    for name, body in blocks.items():
        (tmp_path / name).write_text(body)
    proc = run_script(str(ROOT / "scripts" / "search.py"), "my_space.yaml", "--num-samples", "3", "--max-epochs", "3",
                      cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    exp = tmp_path / "results" / "my_space"
    assert yaml.safe_load((exp / "best_config.yaml").read_text())["trainer"] == "my_vq:train"
    assert "## Top 3 trials" in (exp / "report.md").read_text()
    assert "n/a" in next(line for line in proc.stdout.splitlines() if line.startswith("checklist: "))
