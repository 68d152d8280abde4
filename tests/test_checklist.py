from search.checklist import evaluate_checklist


def row(epoch, usage=0.2, ctx=12.0, tgt=25.0, val=5.0, gmean=3.0, gmax=10.0):
    return {"epoch": epoch, "codebook/usage": usage, "rank/context": ctx, "rank/target": tgt,
            "val/loss": val, "grad/norm_mean": gmean, "grad/norm_max": gmax}


def test_healthy_history_passes_everything():
    items = evaluate_checklist([row(1, val=7.9), row(2, val=7.5)], planned_epochs=2)
    assert all(v["pass"] for v in items.values()), items


def test_each_failure_is_caught():
    items = evaluate_checklist([row(1, val=5.0), row(2, usage=0.1, val=11.0, gmax=200.0, ctx=1.4)], planned_epochs=3)
    failed = {k for k, v in items.items() if not v["pass"]}
    assert failed == {"usage_above_15pct_throughout", "no_val_spike_over_2x", "grad_norm_max_below_150",
                      "context_rank_above_10", "completed_all_epochs", "final_val_loss_below_8"}
    assert items["no_val_spike_over_2x"]["value"] == 11.0 / 5.0


def test_empty_history_fails():
    assert not evaluate_checklist([], 3)["ran"]["pass"]
