"""The judge: how a run did by the seed's checklist, and which trial of a search won.

Everything that judges a run or picks a trial calls this module: the score (search/score.py),
the Ray adapter, export, report, verify, the study and the benches.

- `judge(history, planned_epochs, targets)`: the checklist on a run's per-epoch metrics
  (metrics.jsonl rows), under the targets in force and under the seed's literal ones, in one
  call. The usage, rank and final val-loss bars come from a `Targets` (search/targets.py); the
  spike and gradient-norm bars are the seed's in both sets.
- the items are the registry's checks (search/metrics.py: one per judged metric, its rule and
  bar); the rules are applied here only: an item whose metric the run never reports (absent, or NaN in
  every epoch: a run without a codebook has no usage) is n/a, neither pass nor fail; the final
  val-loss item reads `val/loss_reference` where the run reports it (the val loss under the
  fixed loss weights the bar was calibrated with: model/jepa.py REFERENCE_WEIGHTS), else
  `val/loss`; the spike item is a ratio of the run's own val losses.
- `across_seeds(...)`: per item, how many runs (seeds) passed it, its pass rate and values.
- `ranked(trials, mode, ...)`: a search's trials best first under the objective's mode, the one
  order export's best_trial.json, the report and verify use.

Each item is a dict (JSON as it is in best_trial.json and verify.json):

    {"pass": True | False | None (n/a), "value": the number that decided it, "epoch": where (or
     None), "threshold": the bar, "label": what it judges, e.g. "usage > 15% every epoch"}

The seed's isotropy item (> 1e-5) is left out: its measure sat near 1e-5 in healthy and
collapsed runs alike; ours (model/metrics.py) is reported but has no agreed threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

from search import metrics
from search.targets import SEED, Targets


def sign(mode: str) -> int:
    """+1 for mode max (goal health), -1 for mode min (goal collapse): better means larger sign * value."""
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    return 1 if mode == "max" else -1


def _reported(history: list[dict], key: str) -> bool:
    """Does the run report `key`: a finite value in at least one epoch?"""
    return any(isinstance(h.get(key), (int, float)) and math.isfinite(h[key]) for h in history)


def _item(ok: bool | None, value, epoch, threshold, label: str) -> dict:
    return {"pass": None if ok is None else bool(ok), "value": value, "epoch": epoch, "threshold": threshold,
            "label": label}


def _extreme(history: list[dict], key: str, worst=min) -> tuple[float, int]:
    """(worst value of key over the history, its epoch); NaN counts as worst."""
    pairs = [(h[key] if math.isfinite(h[key]) else -math.inf if worst is min else math.inf, h["epoch"])
             for h in history]
    return worst(pairs, key=lambda p: p[0])


def _judged(rule: str, history: list[dict], key: str, bar: float) -> tuple[bool, float, int | None]:
    """(pass, the deciding value, its epoch) of a check's rule (search/metrics.py: RULES) on the
    run's rows, reading `key`."""
    last = history[-1]
    if rule == "min_above":
        value, at = _extreme(history, key, min)
        return value > bar, value, at
    if rule == "max_below":
        value, at = _extreme(history, key, max)
        return value < bar, value, at
    if rule == "spike_below":
        spikes = [(b[key] / a[key], b["epoch"]) for a, b in zip(history, history[1:]) if a[key] > 0]
        value, at = max(spikes, default=(1.0, None), key=lambda p: p[0])
        return value <= bar, value, at
    value = last.get(key, math.nan)
    ok = {"last_above": value > bar, "last_below": value < bar, "last_at_least": value >= bar}[rule]
    return ok, value, last["epoch"]


def checklist(history: list[dict], planned_epochs: int, targets: Targets = SEED) -> dict[str, dict]:
    """Each item id (search/metrics.py: item_ids()) -> {"pass", "value", "epoch", "threshold", "label"} under `targets`,
    one per checked metric of the registry (search/metrics.py). An item whose metric (nor its
    or_else) the run never reports is n/a. An empty history fails (one item, "ran")."""
    if not history:
        return {"ran": _item(False, 0, None, 1, "ran at least one epoch")}
    items = {}
    for m in metrics.checked_metrics():
        c = m.check
        bar = metrics.bar_of(c, targets, planned_epochs)
        key = m.name if _reported(history, m.name) else c.or_else if c.or_else and _reported(history, c.or_else) else None
        label = c.label.format(bar=m.show_bar(bar)) + (c.note if key == m.name else "")
        items[c.item] = (_item(None, None, None, bar, label) if key is None
                         else _item(*_judged(c.rule, history, key, bar), bar, label))
    return items


def can_still_pass(items: dict[str, dict]) -> int:
    """An upper bound on the items a run judged so far (`items`, checklist of its history up to
    now) can pass once it ends: every item but those already failed for good (search/metrics.py: SETTLED_ON_FAILURE)
    and those n/a (a trainer reports the same metrics every epoch, so an item whose metric it has
    not reported stays n/a). For an ended run, the items it passed are the exact count."""
    settled = metrics.settled_on_failure()
    return sum(i["pass"] is not None and not (k in settled and i["pass"] is False)
               for k, i in items.items() if k != "ran")


def verdict(items: dict[str, dict]) -> dict:
    """{"passed": n, "total": applicable items, "failed": [labels], "n/a": [labels]}."""
    failed = [v["label"] for v in items.values() if v["pass"] is False]
    not_applicable = [v["label"] for v in items.values() if v["pass"] is None]
    return {"passed": sum(v["pass"] is True for v in items.values()), "total": len(items) - len(not_applicable),
            "failed": failed, "n/a": not_applicable}


@dataclass(frozen=True)
class Judgement:
    """A run judged under the targets in force (`items`) and the seed's literal ones (`seed_items`)."""

    items: dict[str, dict]
    seed_items: dict[str, dict]

    @property
    def verdict(self) -> dict:
        return verdict(self.items)

    @property
    def seed_verdict(self) -> dict:
        return verdict(self.seed_items)

    @property
    def passed_all(self) -> bool:
        """Every applicable item passes (with the targets in force)."""
        return not self.verdict["failed"] and "ran" not in self.items

    def as_dict(self) -> dict:
        return {"verdict": self.verdict, "checklist": self.items, "verdict_seed_targets": self.seed_verdict,
                "checklist_seed_targets": self.seed_items}


def judge(history: list[dict], planned_epochs: int, targets: Targets = SEED) -> Judgement:
    """The run judged under `targets` and under the seed's literal targets, in one call."""
    return Judgement(checklist(history, planned_epochs, targets), checklist(history, planned_epochs, SEED))


def _shown(item_id: str, value) -> str:
    """An item's deciding value as its metric shows it, with the rule's word: 'min 3.9%', 'max 1.20x'."""
    m = metrics.item_metric(item_id)
    if m is None:
        return f"{value:.4g}" if isinstance(value, float) else str(value)
    if m.check.rule == "spike_below":
        return f"max {value:.2f}x"
    return {"min_above": "min ", "max_below": "max "}.get(m.check.rule, "") + m.show(value)


def format_item(item_id: str, item: dict) -> str:
    """'pass' / 'FAIL' / 'n/a', with the deciding value and its epoch: 'FAIL: min 3.9% @1'."""
    if item["pass"] is None:
        return "n/a"
    shown = _shown(item_id, item["value"])
    where = f" @{item['epoch']}" if item.get("epoch") is not None else ""
    return f"{'pass' if item['pass'] else 'FAIL'}: {shown}{where}"


def across_seeds(runs: Iterable[dict[str, dict]]) -> dict[str, dict]:
    """One config's runs (seeds), each judged to items (checklist): per item id, how many runs
    passed it, in how many it applies (not n/a), the pass rate over those (None if none), and
    the deciding values with their mean and spread (population std)."""
    runs = list(runs)
    out = {}
    for k in dict.fromkeys(k for items in runs for k in items):
        judged = [items[k] for items in runs if k in items and items[k]["pass"] is not None]
        values = [float(i["value"]) for i in judged if isinstance(i.get("value"), (int, float))]  # summaries may drop them
        mean = sum(values) / len(values) if values else math.nan
        out[k] = {"passed": sum(i["pass"] for i in judged), "applicable": len(judged), "runs": len(runs),
                  "pass_rate": sum(i["pass"] for i in judged) / len(judged) if judged else None,
                  "values": values, "mean": mean,
                  "std": math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)) if values else math.nan}
    return out


def after_first_epoch(history: list[dict]) -> dict[str, float]:
    """The largest per-epoch gradient-norm mean and max after the first epoch (the first is a
    transient the no-VQ reference fails too): for reading the gradient items, not an item."""
    return {"mean": max((r["grad/norm_mean"] for r in history[1:]), default=math.nan),
            "max": max((r["grad/norm_max"] for r in history[1:]), default=math.nan)}


def ranked(trials: list, mode: str, metric: str = "score", reduce: str = "last") -> list:
    """A search's trials best first: those with a finite `metric` (at their last report, reduce
    "last": the search's objective; or its best over the run, "best") and a trainer config on
    disk (a trial that never started has none), ordered by the mode's sign. Trials are
    search/export.py's TrialRecords."""
    s = sign(mode)
    scored = [t for t in trials if math.isfinite(t.value(metric, mode, reduce)) and (t.path / "run" / "config.yaml").is_file()]
    return sorted(scored, key=lambda t: -s * t.value(metric, mode, reduce))
