"""The seed's success checklist, evaluated on a run's per-epoch history (metrics.jsonl rows).

The usage, rank and final val-loss bars come from a `Targets` (search/targets.py): the seed's
literal ones or the calibrated ones; reports show both verdicts side by side. The spike and
gradient-norm bars are the seed's in both (search/targets.py). Each item is

    {"pass": bool, "value": the number that decided it, "epoch": where (or None),
     "threshold": the bar, "label": what it judges, e.g. "usage > 15% every epoch"}

The final val-loss item judges `val/loss_reference`: the val loss under the fixed loss weights
the bar was calibrated with (model/jepa.py: REFERENCE_WEIGHTS), not the run's own weighted total,
which a smaller loss weight lowers without any better prediction. For a run trained with those
weights the two are equal. The spike item is a ratio of the run's own val losses.

The seed's isotropy item (> 1e-5) is left out: its measure sat near 1e-5 in healthy and
collapsed runs alike; ours (model/metrics.py) is reported but has no agreed threshold.
"""

from __future__ import annotations

import math

from search.targets import GRAD_MAX_MAX, GRAD_MEAN_MAX, SEED, SPIKE_RATIO, Targets


def _item(ok: bool, value, epoch, threshold, label: str) -> dict:
    return {"pass": bool(ok), "value": value, "epoch": epoch, "threshold": threshold, "label": label}


def _argext(history: list[dict], key: str, worst=min) -> tuple[float, int]:
    """(worst value of key over the history, its epoch); NaN counts as worst."""
    pairs = [(h[key] if math.isfinite(h[key]) else -math.inf if worst is min else math.inf, h["epoch"])
             for h in history]
    value, epoch = worst(pairs, key=lambda p: p[0])
    return value, epoch


def evaluate_checklist(history: list[dict], planned_epochs: int, targets: Targets = SEED) -> dict[str, dict]:
    """Each item -> {"pass", "value", "epoch", "threshold", "label"}. An empty history fails."""
    if not history:
        return {"ran": _item(False, 0, None, 1, "ran at least one epoch")}
    last = history[-1]
    usage_min, usage_at = _argext(history, "codebook/usage", min)
    spikes = [(b["val/loss"] / a["val/loss"], b["epoch"]) for a, b in zip(history, history[1:]) if a["val/loss"] > 0]
    spike, spike_at = max(spikes, default=(1.0, None), key=lambda p: p[0])
    gmean, gmean_at = _argext(history, "grad/norm_mean", max)
    gmax, gmax_at = _argext(history, "grad/norm_max", max)
    pct = f"{100 * targets.usage:g}%"
    return {
        "usage_throughout": _item(usage_min > targets.usage, usage_min, usage_at, targets.usage,
                                  f"usage > {pct} every epoch"),
        "context_rank": _item(last["rank/context"] > targets.context_rank, last["rank/context"], last["epoch"],
                              targets.context_rank, f"context rank > {targets.context_rank:g} at the end"),
        "target_rank": _item(last["rank/target"] > targets.target_rank, last["rank/target"], last["epoch"],
                             targets.target_rank, f"target rank > {targets.target_rank:g} at the end"),
        "no_val_spike": _item(spike <= SPIKE_RATIO, spike, spike_at, SPIKE_RATIO,
                              f"val loss never over {SPIKE_RATIO:g}x the epoch before"),
        "grad_norm_mean": _item(gmean < GRAD_MEAN_MAX, gmean, gmean_at, GRAD_MEAN_MAX,
                                f"grad norm mean < {GRAD_MEAN_MAX:g} every epoch"),
        "grad_norm_max": _item(gmax < GRAD_MAX_MAX, gmax, gmax_at, GRAD_MAX_MAX,
                               f"grad norm max < {GRAD_MAX_MAX:g} every epoch"),
        "completed_all_epochs": _item(last["epoch"] >= planned_epochs, last["epoch"], last["epoch"], planned_epochs,
                                      f"ran all {planned_epochs} epochs"),
        "final_val_loss": _item(last["val/loss_reference"] < targets.final_val_loss, last["val/loss_reference"],
                                last["epoch"], targets.final_val_loss,
                                f"final val loss < {targets.final_val_loss:g} (reference weights)"),
    }


def format_item(item: dict) -> str:
    """'pass' or 'FAIL', with the deciding value and its epoch: 'FAIL: min 3.9% @1'."""
    value, label = item["value"], item["label"]
    if "usage" in label:
        shown = f"min {100 * value:.1f}%"
    elif "spike" in label:
        shown = f"max {value:.2f}x"
    elif "every epoch" in label:
        shown = f"max {value:.3g}"
    else:
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
    where = f" @{item['epoch']}" if item.get("epoch") is not None else ""
    return f"{'pass' if item['pass'] else 'FAIL'}: {shown}{where}"


def verdict(items: dict[str, dict]) -> dict:
    """{"passed": n, "total": m, "failed": [labels of failed items]}."""
    failed = [v["label"] for v in items.values() if not v["pass"]]
    return {"passed": len(items) - len(failed), "total": len(items), "failed": failed}
