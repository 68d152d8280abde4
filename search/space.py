"""Search spaces: a YAML file -> a validated SearchSpace -> an Optuna define-by-run function.

A space file::

    base: configs/vq_gentle.yaml        # training config the trials start from
    set: {data.max_tasks: 60}           # fixed overrides of the base (optional)
    params:                             # searched, in this order (later ones may refer to earlier)
      vq.refresh_enabled: {dist: categorical, choices: [true, false]}
      vq.refresh_interval: {dist: logint, low: 500, high: 5000, when: {vq.refresh_enabled: true}}
      loss.temperature_min: {dist: loguniform, low: 0.03, high: 0.1}
      loss.temperature_max: {dist: loguniform, low: 0.1, high: 0.3, at_least: loss.temperature_min}
      training.num_threads: {dist: fixed, value: 1}
    objective: {goal: health, targets: calibrated, collapse_usage_floor: 0.02, ...}
    budget: {num_samples: 24, max_epochs: 15, grace_period: 3, reduction_factor: 3}
    resources: {cpu: 1, gpu: 0}
    seed: 0

dist is one of uniform, loguniform, int, logint, categorical, fixed. `when` samples a parameter
only if earlier parameters have the given values, or one of a list of values (else the base
config's value stands);
`at_least` raises the lower bound to an earlier parameter's sampled value (temperature_max >=
temperature_min). Every bound and choice is checked against the trainer's own config rules
before Ray starts, so a space cannot propose a config the trainer would reject.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dataclasses import replace

import difflib

from model.config import (ConfigError, leaf_keys, TrainConfig, config_from_dict, format_validation_error,
                          read_yaml_mapping, set_dotted)

from search.metrics import check_names
from search.targets import COLLAPSE_PATIENCE, COLLAPSE_USAGE_FLOOR, Targets, by_name, mode_of

Scalar = bool | int | float | str | None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Param(_Strict):
    dist: Literal["uniform", "loguniform", "int", "logint", "categorical", "fixed"] = Field(
        description="Distribution: uniform/loguniform floats, int/logint integers, categorical, fixed.")
    low: float | None = Field(default=None, description="Lower bound (inclusive) for numeric dists.")
    high: float | None = Field(default=None, description="Upper bound (inclusive) for numeric dists.")
    choices: list[Scalar | list[Scalar]] | None = Field(
        default=None, description="Options for categorical (a list option, e.g. FSQ levels, is stored "
        "in the Optuna study as its JSON text).")
    value: Scalar | list[Scalar] = Field(default=None, description="The value for fixed.")
    when: dict[str, Scalar | list[Scalar]] = Field(
        default_factory=dict,
        description="Sample only if these earlier params have these values (a list: any of them).")
    at_least: str | None = Field(default=None, description="Earlier param whose value raises `low`.")

    @model_validator(mode="after")
    def _check(self) -> "Param":
        numeric = self.dist in ("uniform", "loguniform", "int", "logint")
        if numeric:
            if self.low is None or self.high is None:
                raise ValueError(f"{self.dist} needs low and high")
            if self.low >= self.high:
                raise ValueError(f"empty range: low ({self.low}) must be < high ({self.high})")
            if self.dist.startswith("log") and self.low <= 0:
                raise ValueError(f"log range must be > 0, got low={self.low}")
            if self.dist in ("int", "logint") and (self.low != int(self.low) or self.high != int(self.high)):
                raise ValueError("int bounds must be whole numbers")
        elif self.low is not None or self.high is not None:
            raise ValueError(f"low/high do not apply to {self.dist}")
        if self.dist == "categorical" and not self.choices:
            raise ValueError("categorical needs a non-empty list of choices")
        if self.dist != "categorical" and self.choices is not None:
            raise ValueError(f"choices do not apply to {self.dist}")
        if self.at_least is not None and not numeric:
            raise ValueError("at_least applies to numeric dists only")
        return self

    def candidate_values(self) -> list[Any]:
        """Values that must each be acceptable to the trainer (bounds, choices, the fixed value)."""
        if self.dist == "categorical":
            return list(self.choices)
        if self.dist == "fixed":
            return [self.value]
        cast = int if self.dist in ("int", "logint") else float
        return [cast(self.low), cast(self.high)]


class Objective(_Strict):
    """The search's score (search/score.py: checklist pass count + health margin), targets from search/targets.py."""

    goal: Literal["health", "collapse"] = Field(
        default="health",
        description="health: maximise the score (find configs that train well). collapse: minimise it "
        "(a failure-seeking search: TPE and ASHA chase the least healthy configs; diverged trials "
        "never win).")
    targets: Literal["calibrated", "seed"] = Field(
        default="calibrated",
        description="Which thresholds the score uses (search/targets.py): calibrated (measured against "
        "the no-VQ diagnostic by `scripts/study.py calibrate`; the seed's when not calibrated) or seed "
        "(the checklist's literal 15%, 10, 20). The values in force are frozen into the experiment's "
        "targets.json when it starts.")
    usage_target: float | None = Field(default=None, gt=0, le=1,
                                       description="Override of the target set's codebook usage.")
    context_rank_target: float | None = Field(default=None, gt=0,
                                              description="Override of the target set's context rank.")
    target_rank_target: float | None = Field(default=None, gt=0,
                                             description="Override of the target set's target rank.")
    final_val_loss_target: float | None = Field(default=None, gt=0,
                                                description="Override of the target set's final val-loss bar.")
    usage_weight: float = Field(default=1.0, ge=0, description="Weight of usage in the health margin (the score's tie-break).")
    context_rank_weight: float = Field(default=1.0, ge=0, description="Weight of context rank in the health margin.")
    target_rank_weight: float = Field(default=1.0, ge=0, description="Weight of target rank in the health margin.")
    collapse_usage_floor: float = Field(default=COLLAPSE_USAGE_FLOOR, ge=0, le=1,
                                        description="Collapse stopper (goal health only; a collapse search "
                                        "watches collapsing trials to the end): usage below this ...")
    collapse_patience: int = Field(default=COLLAPSE_PATIENCE, ge=1, description="... for this many epochs in a row ends the trial.")
    multi_objective: bool = Field(
        default=False,
        description="true: Optuna's NSGA-II searches the Pareto front of (codebook usage max, context "
        "rank max, val loss min) at each trial's last epoch instead of the one checklist score; ASHA "
        "still stops trials by the score, and the report shows the front.")

    def resolved_targets(self) -> Targets:
        """The target set named by `targets`, with any explicit override applied."""
        base = by_name(self.targets)
        overrides = {"usage": self.usage_target, "context_rank": self.context_rank_target,
                     "target_rank": self.target_rank_target, "final_val_loss": self.final_val_loss_target}
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if not overrides:
            return base
        return replace(base, **overrides, source=f"{base.source}, overridden in the space: "
                       + ", ".join(f"{k}={v:g}" for k, v in overrides.items()))

    @property
    def mode(self) -> str:
        return mode_of(self.goal)

    @model_validator(mode="after")
    def _check(self) -> "Objective":
        if self.goal == "collapse" and self.multi_objective:
            raise ValueError("goal: collapse searches the single score; multi_objective must be false")
        if self.usage_weight + self.context_rank_weight + self.target_rank_weight <= 0:
            raise ValueError("at least one weight must be > 0")
        return self


class Budget(_Strict):
    num_samples: int = Field(default=24, ge=1, description="Trials.")
    max_epochs: int = Field(default=15, ge=1, description="Epochs of a trial that is never stopped.")
    grace_period: int = Field(default=3, ge=1, description="ASHA: epochs before a trial can be stopped.")
    reduction_factor: int = Field(default=3, ge=2, description="ASHA: keep 1/reduction_factor at each rung.")
    max_concurrent: int = Field(default=0, ge=0, description="Concurrent trials; 0 = as many as resources allow.")
    early_stopping: bool = Field(
        default=True, description="ASHA and the collapse stopper; false runs every trial to max_epochs "
        "(the baseline of bench/search_efficiency.py).")
    max_failures: int = Field(default=1, ge=0, description="Retries of a crashed trial from its last checkpoint.")

    @model_validator(mode="after")
    def _check(self) -> "Budget":
        if self.grace_period > self.max_epochs:
            raise ValueError(f"grace_period ({self.grace_period}) must be <= max_epochs ({self.max_epochs})")
        return self


class Final(_Strict):
    """The final race (search/race.py): after the exploration (TPE + ASHA, one seed per trial at
    max_epochs), the top_k trials are retrained on `seeds` fresh seeds at the production budget,
    as Ray Tune trials; a finalist that can no longer beat the best on the items passed in its
    worst seed is stopped. The winner is the finalist passing the most items in its worst seed,
    then the largest mean health margin."""

    top_k: int = Field(default=2, ge=1, description="Finalists: the exploration's best trials by final score.")
    seeds: int = Field(default=2, ge=1, description="Fresh seeds each finalist is retrained on.")
    epochs: int = Field(default=80, ge=1, description="The production budget of every race run (the seed's 80): no "
                        "ASHA; the trainer's own early stopping stands, and the checklist's 'ran all epochs' judges it.")
    seed_base: int = Field(default=2000, ge=0, description="The race's seeds are seed_base, seed_base + 1, ...: never "
                           "the trials' own seed, nor scripts/verify.py's (1000, 1001, ...).")


class Resources(_Strict):
    cpu: float = Field(default=1.0, gt=0, description="CPUs per trial (torch threads = max(1, int(cpu))).")
    gpu: float = Field(default=0.0, ge=0, le=1, description="GPU fraction per trial (0.5: two trials per GPU).")


class SearchSpace(_Strict):
    trainer: str | None = Field(
        default=None,
        description="'package.module:function' trained per trial through the trainer contract "
        "(search/contract.py, docs/own_model.md); none: this project's JEPA trainer (model/train.py).")
    base: str | None = Field(
        default=None,
        description="Config the trials start from (relative to the space file or cwd). Required for the "
        "JEPA trainer (a training config, every key validated); optional for a contract trainer (any mapping).")
    set: dict[str, Any] = Field(default_factory=dict, description="Fixed overrides of the base, dotted keys.")
    params: dict[str, Param] = Field(min_length=1, description="Searched parameters, dotted keys, in order.")
    objective: Objective = Objective()
    budget: Budget = Budget()
    resources: Resources = Resources()
    final: Final | None = Field(
        default=None, description="The final race over fresh seeds at the production budget (Final); absent or "
        "null: none, the exploration's best trial is the answer (scripts/search.py --no-final-race turns it off too).")
    seed: int = Field(default=0, ge=0, description="Seeds the sampler, and a contract trainer's trials (run.seed; "
                      "the JEPA trainer's trials take their base config's seed).")
    sampler: Literal["tpe", "random"] = Field(
        default="tpe", description="Optuna sampler (single objective; multi-objective uses NSGA-II).")
    metrics: dict[str, str] = Field(
        default_factory=dict, description="A trainer of your own: the checklist's metric names mapped to the names "
        "it reports, e.g. {rank/context: rank/encoder} (search/metrics.py; the JEPA reports the checklist's names). "
        "Absent: the base run file's `metrics:`, if it has one.")

    @model_validator(mode="after")
    def _check(self) -> "SearchSpace":
        if self.trainer is None and self.base is None:
            raise ValueError("base: a training config is needed (or name a `trainer:` of your own, search/contract.py)")
        if self.metrics and self.trainer is None:
            raise ValueError("metrics: a name map is for a trainer of your own (`trainer:`); the JEPA trainer "
                             "reports the checklist's names")
        check_names(self.metrics)
        return self


class LoadedSpace:
    """A validated space with its base config resolved to a plain dict (empty for a contract
    trainer without one). `trainer_root`: the folder the search runs in, where a trial's
    process imports a contract trainer from."""

    def __init__(self, path: Path, space: SearchSpace, base_path: Path | None, base: dict[str, Any],
                 metric_names: dict[str, str] | None = None):
        self.path, self.space, self.base_path, self.base = path, space, base_path, base
        self.trainer_root = str(Path.cwd())
        # a contract trainer's names for the checklist's metrics: the space's `metrics:`, else its base run file's
        self.metric_names = dict(space.metrics or metric_names or {})

    @property
    def trainer(self) -> str | None:
        return self.space.trainer

    def trial_config(self, params: dict[str, Any], *, epochs: int, name: str, num_threads: int,
                     seed: int | None = None) -> TrainConfig:
        """The complete training config of one JEPA trial (the Ray adapter's only dict-to-typed step);
        `seed` replaces the base config's (a final-race run), None keeps it."""
        raw = copy.deepcopy(self.base)
        for key, value in params.items():
            set_dotted(raw, key, value)
        if seed is not None:
            set_dotted(raw, "seed", seed)
        set_dotted(raw, "training.epochs", epochs)
        set_dotted(raw, "training.num_threads", num_threads)
        set_dotted(raw, "name", name)
        return config_from_dict(raw, source=f"trial {name}")

    def contract_config(self, params: dict[str, Any]) -> dict[str, Any]:
        """A contract trainer's `config`: the base and `set:` (already in self.base) with the
        trial's parameters, dotted keys expanded into nested dicts."""
        raw = copy.deepcopy(self.base)
        for key, value in params.items():
            set_dotted(raw, key, value)
        return raw


def _resolve_base(space_path: Path, base: str) -> Path:
    for candidate in (space_path.parent / base, Path(base), space_path.parent.parent / base):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"{space_path}: base: config file {base!r} not found "
                      f"(looked next to the space file and in the current folder)")


def load_space(path: str | Path) -> LoadedSpace:
    """Read and validate a space file; ConfigError (file and key named) on any problem."""
    path = Path(path)
    raw = read_yaml_mapping(path)
    try:
        space = SearchSpace.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, str(path), SearchSpace)) from None

    if space.trainer is not None:
        return _load_contract_space(path, space)
    base_path = _resolve_base(path, space.base)
    base = read_yaml_mapping(base_path)
    for key, value in space.set.items():
        set_dotted(base, key, value)
    try:
        config_from_dict(base, source=str(base_path))
    except ConfigError as err:
        raise ConfigError(f"{path}: base/set: the base config is not valid:\n{err}") from None

    known = leaf_keys()
    for key in space.params:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            section = key.rsplit(".", 1)[0] + "." if "." in key else ""
            same = [k for k in known if k.startswith(section)] if section else known
            raise ConfigError(f"{path}: params.{key}: unknown training config key{hint} "
                              f"(keys under {section or 'the top level'}: "
                              f"{', '.join(k.removeprefix(section) for k in same) or 'none: unknown section'})")
    _check_params(path, space.params, base)
    for key in space.params:
        if key in ("training.epochs", "name"):
            raise ConfigError(f"{path}: params.{key}: set by the search itself (budget.max_epochs, trial name)")
    return LoadedSpace(path, space, base_path, base)


def _check_params(path: Path, params: dict[str, Param], base: dict[str, Any] | None = None) -> None:
    """Parameter by parameter, in order: `when` and `at_least` name earlier parameters only, and
    (given the JEPA trainer's base config) every value a parameter can take is one the trainer accepts."""
    seen: list[str] = []
    for key, param in params.items():
        for ref in list(param.when) + ([param.at_least] if param.at_least else []):
            if ref not in seen:
                raise ConfigError(f"{path}: params.{key}: refers to {ref!r}, which is not an earlier parameter "
                                  f"(earlier: {', '.join(seen) or 'none'})")
        for value in param.candidate_values() if base is not None else ():
            problem = _value_error(base, key, value)
            if problem:
                raise ConfigError(f"{path}: params.{key}: value {value!r} is not accepted by the trainer: {problem}")
        seen.append(key)


def _load_contract_space(path: Path, space: SearchSpace) -> LoadedSpace:
    """A space for a trainer of the user's own: the trainer must import and take (config, run)
    (search/contract.py: load_trainer); the base, if any, is any mapping; parameter keys are the
    trainer's own, so only their distributions and references are checked here."""
    from search.contract import load_trainer

    load_trainer(space.trainer, f"{path}: trainer")
    base_path = _resolve_base(path, space.base) if space.base is not None else None
    base = read_yaml_mapping(base_path) if base_path is not None else {}
    names = {}
    if "trainer" in base:  # a run file (python scripts/train.py runs it): its config is the base, its name map too
        from search.contract import read_run_file

        if base["trainer"] != space.trainer:
            raise ConfigError(f"{path}: base: {base_path} is a run file of trainer {base['trainer']!r}, "
                              f"not the space's {space.trainer!r}")
        names = read_run_file(base, str(base_path)).get("metrics", {})
        base = base.get("config") or {}
    for key, value in space.set.items():
        set_dotted(base, key, value)
    _check_params(path, space.params)
    return LoadedSpace(path, space, base_path, base, names)


def _value_error(base: dict[str, Any], key: str, value: Any) -> str | None:
    """Why the trainer rejects `key: value` on top of base (None if it accepts it). Only errors
    located at `key` count: cross-field rules (temperature_min <= temperature_max) depend on the
    other sampled values and are kept by `at_least`."""
    raw = copy.deepcopy(base)
    set_dotted(raw, key, value)
    try:
        TrainConfig.model_validate(raw)
    except ValidationError as err:
        parts = tuple(key.split("."))
        mine = [e for e in err.errors() if tuple(str(p) for p in e["loc"])[: len(parts)] == parts]
        if mine:
            return format_validation_error(mine, "", TrainConfig).removeprefix(": ")
    return None


class DefineByRun:
    """Optuna define-by-run function for a space (a picklable object: Ray checkpoints it)."""

    def __init__(self, params: dict[str, Param]):
        self.params = params

    def __call__(self, trial) -> dict[str, Any]:
        sampled: dict[str, Any] = {}
        constants: dict[str, Any] = {}
        for key, p in self.params.items():
            if not all(_matches(sampled.get(ref, constants.get(ref)), want) for ref, want in p.when.items()):
                continue  # condition off: the base config's value stands
            if p.dist == "fixed":
                constants[key] = p.value
                continue
            if p.dist == "categorical":
                if all(not isinstance(c, list) for c in p.choices):
                    sampled[key] = trial.suggest_categorical(key, p.choices)
                else:  # Optuna stores scalars only: sample the JSON text, hand the trainer the list
                    text = trial.suggest_categorical(key, [json.dumps(c) for c in p.choices])
                    sampled[key] = constants[key] = json.loads(text)
                continue
            low = p.low
            if p.at_least is not None:
                low = max(low, sampled[p.at_least] if p.at_least in sampled else constants[p.at_least])
            if p.dist in ("int", "logint"):
                low = int(math.ceil(low))
                sampled[key] = trial.suggest_int(key, low, max(low, int(p.high)), log=p.dist == "logint")
            else:
                sampled[key] = trial.suggest_float(key, low, max(low, p.high), log=p.dist == "loguniform")
        return constants  # OptunaSearch merges these over the sampled values

    def optuna_params(self, config: dict[str, Any]) -> dict[str, Any]:
        """A trial's config as Optuna stores its parameters (what __call__ suggested for it):
        list-valued choices as their JSON text, constants left out. For re-creating a study
        trial from a Ray trial (search/optuna_search.py: reconcile)."""
        return {key: json.dumps(config[key]) if p.dist == "categorical" and any(isinstance(c, list) for c in p.choices)
                else config[key] for key, p in self.params.items() if p.dist != "fixed" and key in config}


def _matches(value: Any, want: Any) -> bool:
    return value in want if isinstance(want, list) else value == want
