from search.checklist import evaluate_checklist, format_item, verdict
from search.targets import SEED, Targets


def row(epoch, usage=0.2, ctx=12.0, tgt=25.0, val=5.0, gmean=3.0, gmax=10.0, ref=None):
    return {"epoch": epoch, "codebook/usage": usage, "rank/context": ctx, "rank/target": tgt,
            "val/loss": val, "val/loss_reference": val if ref is None else ref,
            "grad/norm_mean": gmean, "grad/norm_max": gmax}


def test_healthy_history_passes_everything():
    items = evaluate_checklist([row(1, val=7.9), row(2, val=7.5)], planned_epochs=2)
    assert all(v["pass"] for v in items.values()), items
    assert verdict(items) == {"passed": 8, "total": 8, "failed": []}


def test_each_failure_is_caught_with_its_value_and_epoch():
    items = evaluate_checklist([row(1, val=5.0), row(2, usage=0.1, val=11.0, gmax=200.0, ctx=1.4)], planned_epochs=3)
    failed = {k for k, v in items.items() if not v["pass"]}
    assert failed == {"usage_throughout", "no_val_spike", "grad_norm_max",
                      "context_rank", "completed_all_epochs", "final_val_loss"}
    assert items["no_val_spike"]["value"] == 11.0 / 5.0 and items["no_val_spike"]["epoch"] == 2
    assert (items["usage_throughout"]["value"], items["usage_throughout"]["epoch"]) == (0.1, 2)
    assert format_item(items["usage_throughout"]) == "FAIL: min 10.0% @2"
    assert items["usage_throughout"]["label"] == "usage > 15% every epoch"


def test_targets_change_the_bars_and_the_labels():
    history = [row(1, ctx=12.0, tgt=18.0)]
    seed = evaluate_checklist(history, 1, SEED)
    assert not seed["target_rank"]["pass"] and seed["context_rank"]["pass"]
    lower = evaluate_checklist(history, 1, Targets(0.15, 13.0, 15.0, "test"))
    assert lower["target_rank"]["pass"] and not lower["context_rank"]["pass"]
    assert lower["target_rank"]["label"] == "target rank > 15 at the end"


def test_final_val_loss_is_judged_under_the_reference_weights():
    # a run whose own (weighted) val loss passes the bar, but not its val loss under REFERENCE_WEIGHTS
    items = evaluate_checklist([row(1, val=5.0, ref=9.0), row(2, val=4.0, ref=8.5)], planned_epochs=2)
    assert not items["final_val_loss"]["pass"] and items["final_val_loss"]["value"] == 8.5
    assert items["final_val_loss"]["label"] == "final val loss < 8 (reference weights)"
    assert items["no_val_spike"]["value"] == 4.0 / 5.0  # the spike is a ratio of the run's own val losses
    assert evaluate_checklist([row(1, val=9.0, ref=7.0)], planned_epochs=1)["final_val_loss"]["pass"]


def test_empty_history_fails():
    assert not evaluate_checklist([], 3)["ran"]["pass"]
