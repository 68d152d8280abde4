"""The metrics a search reads, declared once.

Each `Metric` says what it measures, which way is healthy, how a value is shown, and where it
appears: the checklist item that judges it (`check`), the console's trial table (`column`),
best_trial.json's final values and trials.csv (`summary`), TensorBoard's HParams view (`hparam`),
the report's curves (`curve`) and the multi-objective search (`pareto`). Everything that shows or
judges a metric reads this table: the judge (search/judge.py), the score's item count
(search/score.py), the contract's checks (search/contract.py), the console (search/runner.py),
TensorBoard's hparams (search/trainable.py), the export and the report. Adding a judged metric is
one `Metric(...)` here plus the code that computes it in the trainer.

A trainer may report any other metric too: it is logged (metrics.jsonl, TensorBoard, Ray's
results), never dropped; only the metrics declared here are judged or shown. A trainer of the
user's own whose names differ from the checklist's maps them in its space
(`metrics: {rank/context: rank/encoder}`): `aliased(row, names)` adds the checklist's name beside
the trainer's own in every row (search/contract.py: Run).

The order of REGISTRY is the order of the checklist's items, of the table's columns (after the
status, epoch and score) and of the summaries.
"""

from __future__ import annotations

from dataclasses import dataclass

from search.targets import GRAD_MAX_MAX, GRAD_MEAN_MAX, SPIKE_RATIO, Targets

# How a check judges its metric over a run's per-epoch rows (a NaN counts as the worst value):
RULES = {
    "min_above": "its lowest value over every epoch is above the bar",
    "max_below": "its highest value over every epoch is below the bar",
    "spike_below": "no epoch's value is more than the bar times the epoch before's",
    "last_above": "its value at the last epoch is above the bar",
    "last_below": "its value at the last epoch is below the bar",
    "last_at_least": "its value at the last epoch is at least the bar",
}
# Rules judged over every epoch so far: once failed, no later epoch can pass them again.
SETTLED_ON_FAILURE = ("min_above", "max_below", "spike_below")
PLANNED_EPOCHS = "planned_epochs"  # a bar: the run's planned epochs


@dataclass(frozen=True)
class Check:
    """A checklist item on one metric. `bar` is a number, a field of Targets (the targets in
    force: search/targets.py) or PLANNED_EPOCHS; `label` is its text with `{bar}` for the bar as
    the metric shows it. `or_else`: the metric read where the run does not report this one (its
    label then drops `note`)."""

    item: str  # the item's id (best_trial.json, verify.json)
    rule: str  # a key of RULES
    bar: float | str
    label: str
    or_else: str | None = None
    note: str = ""  # appended to the label when this metric (not or_else) is read

    def __post_init__(self):
        if self.rule not in RULES:
            raise ValueError(f"Check {self.item!r}: rule {self.rule!r} is not one of {', '.join(RULES)}")


@dataclass(frozen=True)
class Metric:
    name: str  # the key in metrics.jsonl, Ray's results and TensorBoard
    means: str  # what it measures, a few words (the report's axis titles)
    better: str = ""  # "higher" | "lower" | "": which way is healthy (the multi-objective search's direction)
    percent: bool = False  # a fraction shown as a percentage
    fmt: str = ".4g"  # format spec of a value (a percentage: of 100 * value)
    check: Check | None = None
    column: str | None = None  # the console trial table's column title; None: not a column
    summary: bool = False  # best_trial.json's final values, trials.csv's columns
    hparam: bool = False  # a metric of TensorBoard's HParams view
    curve: bool = False  # a panel of the report's curves
    pareto: bool = False  # an objective of `objective.multi_objective`

    def show(self, value) -> str:
        """A value as a person reads it: '3.9%', '6.41'."""
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return str(value)
        return f"{100 * value:{self.fmt}}%" if self.percent else f"{value:{self.fmt}}"

    def show_bar(self, bar: float) -> str:
        return f"{100 * bar:g}%" if self.percent else f"{bar:g}"


REGISTRY: tuple[Metric, ...] = (
    Metric("score", "score (items passed + margin)", "higher", fmt=".5f", column="score", summary=True,
           hparam=True, curve=True),
    Metric("score/best", "best score so far", "higher", fmt=".5f", summary=True),
    Metric("codebook/usage", "codebook usage", "higher", percent=True, fmt=".1f", column="usage", summary=True,
           hparam=True, curve=True, pareto=True,
           check=Check("usage_throughout", "min_above", "usage", "usage > {bar} every epoch")),
    Metric("codebook/perplexity", "codebook perplexity", "higher", summary=True),
    Metric("rank/context", "context rank", "higher", column="rank_ctx", summary=True, hparam=True, curve=True,
           pareto=True, check=Check("context_rank", "last_above", "context_rank", "context rank > {bar} at the end")),
    Metric("rank/target", "target rank", "higher", column="rank_tgt", summary=True, hparam=True, curve=True,
           check=Check("target_rank", "last_above", "target_rank", "target rank > {bar} at the end")),
    Metric("val/loss", "val loss", "lower", summary=True, hparam=True,
           check=Check("no_val_spike", "spike_below", SPIKE_RATIO, "val loss never over {bar}x the epoch before")),
    Metric("grad/norm_mean", "gradient norm, epoch mean", "lower", fmt=".3g", summary=True,
           check=Check("grad_norm_mean", "max_below", GRAD_MEAN_MAX, "grad norm mean < {bar} every epoch")),
    Metric("grad/norm_max", "gradient norm, epoch max", "lower", fmt=".3g", summary=True,
           check=Check("grad_norm_max", "max_below", GRAD_MAX_MAX, "grad norm max < {bar} every epoch")),
    Metric("epoch", "epochs run", "higher", fmt="g",
           check=Check("completed_all_epochs", "last_at_least", PLANNED_EPOCHS, "ran all {bar} epochs")),
    Metric("val/loss_reference", "val loss (reference weights)", "lower", column="val_loss_ref", summary=True,
           hparam=True, curve=True, pareto=True,
           check=Check("final_val_loss", "last_below", "final_val_loss", "final val loss < {bar}", or_else="val/loss",
                       note=" (reference weights)")),
    Metric("train/loss", "train loss", "lower", summary=True),
    Metric("codes/nmi_colour", "code-colour NMI", hparam=True),
)


def checked_metrics() -> list[Metric]:
    """The metrics the checklist judges, in the checklist's order."""
    return [m for m in REGISTRY if m.check is not None]


def item_ids() -> tuple[str, ...]:
    """The checklist's items, in order."""
    return tuple(m.check.item for m in checked_metrics())


def checklist_names() -> tuple[str, ...]:
    """Every metric name an item reads (its own and its or_else)."""
    return tuple(dict.fromkeys(n for m in checked_metrics() for n in (m.name, m.check.or_else) if n))


def settled_on_failure() -> tuple[str, ...]:
    """Items judged over every epoch so far: once failed, failed for good."""
    return tuple(m.check.item for m in checked_metrics() if m.check.rule in SETTLED_ON_FAILURE)


def item_metric(item: str) -> Metric | None:
    """The metric whose check is `item` (None for an item the registry does not declare, "ran")."""
    return next((m for m in checked_metrics() if m.check.item == item), None)


def table_columns() -> dict[str, str]:
    """The console trial table's metric columns (metric -> title): the epoch, then REGISTRY's."""
    return {"epoch": "epoch", **{m.name: m.column for m in REGISTRY if m.column}}


def summary_names() -> tuple[str, ...]:
    return tuple(m.name for m in REGISTRY if m.summary)


def hparam_names() -> tuple[str, ...]:
    return tuple(m.name for m in REGISTRY if m.hparam)


def curves() -> list[tuple[str, str]]:
    """(metric, title) of the report's curve panels."""
    return [(m.name, m.means) for m in REGISTRY if m.curve]


def pareto() -> tuple[list[str], list[str]]:
    """The multi-objective search's metrics and their modes (max / min)."""
    chosen = [m for m in REGISTRY if m.pareto]
    return [m.name for m in chosen], ["max" if m.better == "higher" else "min" for m in chosen]


def bar_of(check: Check, targets: Targets, planned_epochs: int) -> float:
    """The number a check's bar stands for under `targets` and the run's plan."""
    if check.bar == PLANNED_EPOCHS:
        return planned_epochs
    return getattr(targets, check.bar) if isinstance(check.bar, str) else check.bar


def target_lines(targets: Targets) -> dict[str, float]:
    """The bars set by the targets in force, by metric (the lines on the report's plots)."""
    return {m.name: getattr(targets, m.check.bar) for m in checked_metrics()
            if isinstance(m.check.bar, str) and m.check.bar != PLANNED_EPOCHS}


# --------------------------------------------------------------------------------------------
# A trainer's own names for the checklist's metrics


def check_names(names: dict) -> dict[str, str]:
    """A space's `metrics:` map (checklist name -> the trainer's own name), checked: ValueError
    naming the key and what is allowed."""
    allowed = checklist_names()
    for key, own in names.items():
        if key not in allowed:
            raise ValueError(f"metrics.{key}: not a metric the checklist reads (allowed: {', '.join(allowed)})")
        if not isinstance(own, str) or not own:
            raise ValueError(f"metrics.{key}: must be the name your trainer reports, got {own!r}")
    return dict(names)


def aliased(row: dict, names: dict[str, str]) -> dict:
    """A reported row with each checklist name (`names`' keys) beside the trainer's own name for
    it, so the judge reads it; the trainer's names stay in the row."""
    return {**row, **{key: row[own] for key, own in names.items() if own in row and key not in row}}
