"""search/judge.py: the checklist on hand-built histories, the n/a rule, the display by item id,
counts across seeds and the ranking of trials, each against values worked out by hand."""

import math
from pathlib import Path

import pytest

from search.judge import across_seeds, checklist, format_item, judge, ranked, sign, verdict
from search.metrics import item_ids
from search.targets import SEED, Targets


def row(epoch, usage=0.2, ctx=12.0, tgt=25.0, val=5.0, gmean=3.0, gmax=10.0, ref=None):
    return {"epoch": epoch, "codebook/usage": usage, "rank/context": ctx, "rank/target": tgt,
            "val/loss": val, "val/loss_reference": val if ref is None else ref,
            "grad/norm_mean": gmean, "grad/norm_max": gmax}


def test_healthy_history_passes_everything():
    items = checklist([row(1, val=7.9), row(2, val=7.5)], planned_epochs=2)
    assert list(items) == list(item_ids()) and all(v["pass"] for v in items.values()), items
    assert verdict(items) == {"passed": 8, "total": 8, "failed": [], "n/a": []}


def test_each_failure_is_caught_with_its_value_and_epoch():
    items = checklist([row(1, val=5.0), row(2, usage=0.1, val=11.0, gmax=200.0, ctx=1.4)], planned_epochs=3)
    failed = {k for k, v in items.items() if not v["pass"]}
    assert failed == {"usage_throughout", "no_val_spike", "grad_norm_max",
                      "context_rank", "completed_all_epochs", "final_val_loss"}
    assert items["no_val_spike"]["value"] == 11.0 / 5.0 and items["no_val_spike"]["epoch"] == 2
    assert (items["usage_throughout"]["value"], items["usage_throughout"]["epoch"]) == (0.1, 2)
    assert items["usage_throughout"]["label"] == "usage > 15% every epoch"
    assert items["grad_norm_max"]["label"] == "grad norm max < 150 every epoch"


def test_each_item_is_shown_by_its_id():
    items = checklist([row(1, val=5.0), row(2, usage=0.1, val=11.0, gmax=200.0, ctx=1.4)], planned_epochs=3)
    assert format_item("usage_throughout", items["usage_throughout"]) == "FAIL: min 10.0% @2"
    assert format_item("no_val_spike", items["no_val_spike"]) == "FAIL: max 2.20x @2"  # a ratio, shown as one
    assert format_item("grad_norm_max", items["grad_norm_max"]) == "FAIL: max 200 @2"
    assert format_item("context_rank", items["context_rank"]) == "FAIL: 1.4 @2"
    assert format_item("completed_all_epochs", items["completed_all_epochs"]) == "FAIL: 2 @2"


def test_targets_change_the_bars_and_the_labels():
    history = [row(1, ctx=12.0, tgt=18.0)]
    seed = checklist(history, 1, SEED)
    assert not seed["target_rank"]["pass"] and seed["context_rank"]["pass"]
    lower = checklist(history, 1, Targets(0.15, 13.0, 15.0, "test"))
    assert lower["target_rank"]["pass"] and not lower["context_rank"]["pass"]
    assert lower["target_rank"]["label"] == "target rank > 15 at the end"


def test_one_call_judges_under_the_targets_in_force_and_the_seeds():
    j = judge([row(1, ctx=12.0, tgt=18.0)], 1, Targets(0.15, 13.0, 15.0, "test"))
    assert j.items["target_rank"]["pass"] and not j.seed_items["target_rank"]["pass"]
    assert j.verdict["failed"] == ["context rank > 13 at the end"]
    assert j.seed_verdict["failed"] == ["target rank > 20 at the end"]
    assert set(j.as_dict()) == {"verdict", "checklist", "verdict_seed_targets", "checklist_seed_targets"}


def test_final_val_loss_is_judged_under_the_reference_weights_when_reported():
    # a run whose own (weighted) val loss passes the bar, but not its val loss under REFERENCE_WEIGHTS
    items = checklist([row(1, val=5.0, ref=9.0), row(2, val=4.0, ref=8.5)], planned_epochs=2)
    assert not items["final_val_loss"]["pass"] and items["final_val_loss"]["value"] == 8.5
    assert items["final_val_loss"]["label"] == "final val loss < 8 (reference weights)"
    assert items["no_val_spike"]["value"] == 4.0 / 5.0  # the spike is a ratio of the run's own val losses
    assert checklist([row(1, val=9.0, ref=7.0)], planned_epochs=1)["final_val_loss"]["pass"]
    own = [{k: v for k, v in row(1, val=7.0).items() if k != "val/loss_reference"}]  # a trainer without it
    assert checklist(own, 1)["final_val_loss"] == {"pass": True, "value": 7.0, "epoch": 1, "threshold": 8.0,
                                                   "label": "final val loss < 8"}


def test_an_item_whose_metric_is_never_reported_is_not_applicable():
    """A run without a codebook reports usage as NaN; a trainer without a target encoder never
    reports rank/target: those items are n/a, neither passed nor failed."""
    history = [{**{k: v for k, v in row(e).items() if k != "rank/target"}, "codebook/usage": math.nan} for e in (1, 2)]
    items = checklist(history, 2)
    assert items["usage_throughout"]["pass"] is None and items["target_rank"]["pass"] is None
    assert format_item("usage_throughout", items["usage_throughout"]) == "n/a"
    assert verdict(items) == {"passed": 6, "total": 6, "failed": [],
                              "n/a": ["usage > 15% every epoch", "target rank > 20 at the end"]}
    # a metric reported in some epoch applies: a NaN there is its worst value
    items = checklist([row(1, usage=math.nan), row(2)], 2)
    assert items["usage_throughout"]["pass"] is False


def test_empty_history_fails():
    assert not checklist([], 3)["ran"]["pass"]
    assert not judge([], 3).passed_all


def test_counts_across_seeds_by_hand():
    runs = [checklist([row(1, usage=0.3)], 1), checklist([row(1, usage=0.1)], 1),
            checklist([row(1, usage=math.nan)], 1)]  # passes, fails, n/a
    usage = across_seeds(runs)["usage_throughout"]
    assert (usage["passed"], usage["applicable"], usage["runs"]) == (1, 2, 3)
    assert usage["pass_rate"] == 0.5 and usage["values"] == [0.3, 0.1]
    assert usage["mean"] == pytest.approx(0.2) and usage["std"] == pytest.approx(0.1)
    assert across_seeds(runs)["completed_all_epochs"]["pass_rate"] == 1.0


class Trial:
    def __init__(self, path: Path, score: float):
        self.path, self.score = path, score

    def value(self, metric, mode, reduce):
        return self.score


def test_ranked_orders_by_the_mode_and_skips_trials_without_a_config(tmp_path):
    trials = []
    for name, score, has_config in (("a", 5.0, True), ("b", 7.0, True), ("c", 9.0, False), ("d", math.nan, True)):
        (tmp_path / name / "run").mkdir(parents=True)
        if has_config:
            (tmp_path / name / "run" / "config.yaml").write_text("{}")
        trials.append(Trial(tmp_path / name, score))
    assert [t.path.name for t in ranked(trials, "max")] == ["b", "a"]
    assert [t.path.name for t in ranked(trials, "min")] == ["a", "b"]
    assert sign("max") == 1 and sign("min") == -1
    with pytest.raises(ValueError):
        sign("maximum")


def test_the_score_of_a_trainer_that_reports_only_some_metrics():
    """A contract trainer without a target encoder: its target-rank item is n/a and, with that
    ratio's weight 0, the margin comes from the others (search/score.py)."""
    from search.score import health_margin, run_score

    history = [{"epoch": 1, "val/loss": 1.0, "codebook/usage": 0.3, "rank/context": 12.0, "grad/norm_mean": 1.0,
                "grad/norm_max": 2.0}]
    margin = health_margin(0.3, 12.0, math.nan, SEED, (1.0, 1.0, 0.0))
    assert margin == pytest.approx(math.sqrt((0.3 / 0.15) * (12.0 / 10.0)))
    assert run_score(history, 1, SEED, (1.0, 1.0, 0.0)) == pytest.approx(7 + margin / (1 + margin))
    assert run_score(history, 1, SEED) == 7.0  # the target rank's ratio counted: margin 0
    assert run_score([{"epoch": 1, "codebook/usage": 0.3}], 1, SEED, (1.0, 0.0, 0.0)) == pytest.approx(2 + 2 / 3)
