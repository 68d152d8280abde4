"""search/metrics.py: a metric declared in the registry alone is judged by the checklist, counted
by the score, shown in the console's trial table and in the item's text, and exported to
trials.csv and best_trial.json; the name map puts a trainer's own name under the checklist's."""

import csv
import json

import pytest
import yaml

from search import metrics
from search.export import export_best
from search.judge import checklist, format_item
from search.metrics import item_ids
from search.runner import trial_table
from search.score import run_score


def row(epoch, dead):
    return {"epoch": epoch, "codebook/usage": 0.5, "rank/context": 12.0, "rank/target": 25.0, "val/loss": 5.0,
            "val/loss_reference": 5.0, "grad/norm_mean": 3.0, "grad/norm_max": 10.0, "score": 8.5,
            "codebook/dead": dead}


@pytest.fixture
def dead_codes(monkeypatch):
    """One declaration: the fraction of dead codes, judged 'below 50% every epoch', a table column
    and a summary value."""
    dead = metrics.Metric("codebook/dead", "dead codes", "lower", percent=True, fmt=".1f", column="dead",
                          summary=True, check=metrics.Check("few_dead_codes", "max_below", 0.5,
                                                            "dead codes < {bar} every epoch"))
    monkeypatch.setattr(metrics, "REGISTRY", (*metrics.REGISTRY, dead))
    return dead


def test_a_metric_declared_once_is_judged_scored_shown_and_exported(dead_codes, tmp_path):
    assert item_ids()[-1] == "few_dead_codes"
    # judged: its rule, its bar, its label, its deciding value and epoch; settled once failed
    history = [row(1, 0.2), row(2, 0.6)]
    item = checklist(history, planned_epochs=2)["few_dead_codes"]
    assert item == {"pass": False, "value": 0.6, "epoch": 2, "threshold": 0.5, "label": "dead codes < 50% every epoch"}
    assert "few_dead_codes" in metrics.settled_on_failure()
    assert format_item("few_dead_codes", item) == "FAIL: max 60.0% @2"
    # scored: the pass count the score carries has one more item when it passes
    assert int(run_score([row(1, 0.2), row(2, 0.3)], 2)) == int(run_score(history, 2)) + 1 == 9
    # a trainer that does not report it: n/a, as any item
    assert checklist([{k: v for k, v in r.items() if k != "codebook/dead"} for r in history], 2)["few_dead_codes"]["pass"] is None
    # shown: a column of the console's trial table
    table = trial_table([{"trial_id": "t1", "status": "RUNNING", "config": {}, "result": history[-1]}],
                        metrics.table_columns(), {})
    header = [c.strip() for c in table[1].strip("|").split("|")]
    assert header[-1] == "dead" and table[-2].strip("|").split("|")[-1].strip() == "0.6"
    # exported: trials.csv's columns and best_trial.json's final values and checklist
    trial = tmp_path / "trial_t1"
    (trial / "run").mkdir(parents=True)
    (trial / "params.json").write_text("{}")
    (trial / "result.json").write_text("".join(json.dumps({**r, "trial_id": "t1"}) + "\n" for r in history))
    (trial / "run" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    (trial / "run" / "config.yaml").write_text(yaml.safe_dump({"trainer": "m:train", "name": "t1", "seed": 0,
                                                                "epochs": 2, "config": {}}))
    export_best(tmp_path)
    assert [r["codebook/dead"] for r in csv.DictReader((tmp_path / "trials.csv").open())] == ["0.6"]
    best = json.loads((tmp_path / "best_trial.json").read_text())
    assert best["final"]["codebook/dead"] == 0.6 and best["checklist"]["few_dead_codes"]["pass"] is False


def test_the_name_map_puts_a_trainers_name_under_the_checklists():
    names = metrics.check_names({"rank/context": "rank/encoder"})
    row = metrics.aliased({"epoch": 1, "rank/encoder": 7.0, "loss/mine": 1.0}, names)
    assert row == {"epoch": 1, "rank/encoder": 7.0, "loss/mine": 1.0, "rank/context": 7.0}  # nothing dropped
    assert checklist([row], 1)["context_rank"]["value"] == 7.0
    with pytest.raises(ValueError, match="metrics.rank/encoder: not a metric the checklist reads"):
        metrics.check_names({"rank/encoder": "rank/context"})
    with pytest.raises(ValueError, match="metrics.rank/context: must be the name your trainer reports"):
        metrics.check_names({"rank/context": 3})


def test_the_registry_gives_each_place_its_metrics_in_order():
    assert item_ids() == ("usage_throughout", "context_rank", "target_rank", "no_val_spike", "grad_norm_mean",
                          "grad_norm_max", "completed_all_epochs", "final_val_loss")
    assert list(metrics.table_columns()) == ["epoch", "score", "codebook/usage", "rank/context", "rank/target",
                                             "val/loss_reference"]
    assert metrics.pareto() == (["codebook/usage", "rank/context", "val/loss_reference"], ["max", "max", "min"])
    assert metrics.target_lines(metrics.Targets(0.1, 2.0, 3.0, "t", 4.0)) == {
        "codebook/usage": 0.1, "rank/context": 2.0, "rank/target": 3.0, "val/loss_reference": 4.0}
    with pytest.raises(ValueError, match="rule 'above' is not one of"):
        metrics.Check("x", "above", 1.0, "x")
