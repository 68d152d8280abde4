"""The trainer contract: how the search runs any model, this project's JEPA or a user's own.

A space may name its trainer at its top level, `trainer: "package.module:function"`
(importable from the folder the search runs in, or an installed package). The search then calls,
once per trial, in the trial's process:

    function(config: dict, run) -> None

- `config`: the space's fixed values (`base:` when the space gives one, `set:`, `fixed` params)
  and the trial's sampled parameters, as a nested dict: dotted keys expanded, so the parameter
  `vq.commitment_cost` is `config["vq"]["commitment_cost"]`.
- `run.epochs` (int): the trial's budget; `run.seed` (int); `run.dir` (pathlib.Path): the trial's
  own folder for the trainer's files; `run.restored`: the directory of the last reported
  checkpoint when Ray restores the trial (a retry, a resumed search), else None: a trainer that
  never checkpoints still works, a retried trial starts over.
- `run.report(metrics: dict, checkpoint: Path | None = None)`, once per epoch: numbers by name.
  The run counts the epochs itself (`epoch` is set to 1, 2, ...). The checklist reads
  `codebook/usage`, `rank/context`, `rank/target`, `val/loss` (`val/loss_reference` when there
  is one), `grad/norm_mean` and `grad/norm_max` (search/judge.py); an item whose metric the
  trainer never reports is n/a. Every reported number goes to the trial's metrics.jsonl and its
  TensorBoard run, and to Ray with the trial's score.

Run-time mistakes (a value that is not a number, a checklist metric that is not a number, a
checkpoint that is not a folder, a trainer that returns without a single `run.report`) raise
TrainerError in the trial. Such a mistake repeats in every trial, so the search ends after the
first trial that shows it: it prints the message once, exits 2, and resumes (`--resume`) once the
trainer is fixed (search/runner.py: ContractGuard). What can be known before any trial starts
(the trainer cannot be imported, is not a function of (config, run)) is checked by
`load_trainer` when the space is loaded: exit 2.

A report with an infinite value, or a NaN loss (a key ending in `loss`), is a diverged run, as
the JEPA's NaN loss is: `run.report` raises Diverged (not to be caught by the trainer), the epoch
is not recorded, and the trial ends `diverged` with the worst score (search/score.py). Any other
NaN means "not measured this epoch".

The same contract runs a trial's exported config alone: `python scripts/train.py
best_config.yaml` (a "run file": trainer, name, seed, epochs and config, `run_file` below).
"""

from __future__ import annotations

import importlib
import inspect
import math
import numbers
import re
import shutil
import sys
from pathlib import Path
from typing import Callable

from model.config import ConfigError
from model.io import atomic_write_json
from model.runlog import RunLog
from search import metrics as registry


class TrainerError(Exception):
    """A trainer broke the contract at run time (the trial fails with this message)."""


class Diverged(Exception):
    """Raised by `Run.report` on an infinite value or a NaN loss: the run ends as diverged."""

    def __init__(self, epoch: int, keys: list[str]):
        super().__init__(f"diverged at epoch {epoch}: {', '.join(keys)} not finite")
        self.epoch, self.keys = epoch, keys


# How a TrainerError reads in a failed trial's error text (Ray's traceback of the trial).
_TRAINER_ERROR = re.compile(r"^(?:\S+\.)?TrainerError: (.+)$", re.M)


def trainer_error_in(error_text: str) -> str | None:
    """The message of the last TrainerError in a trial's error text, or None when the trial failed
    for another reason (a killed worker, an exception of the trainer's own)."""
    found = _TRAINER_ERROR.findall(error_text or "")
    return found[-1].strip() if found else None


def diverged_keys(row: dict[str, float]) -> list[str]:
    """The keys of a report that make it a diverged run: infinite values, NaN losses."""
    return [k for k, v in row.items() if math.isinf(v) or (math.isnan(v) and k.endswith("loss"))]


def load_trainer(spec: str, source: str = "trainer") -> Callable:
    """'package.module:function' -> the function, importable from the working directory or an
    installed package, taking (config, run). ConfigError naming `source` and what is expected."""
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise ConfigError(f"{source}: {spec!r} is not 'package.module:function'")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # the folder the search runs in, as `python -m` would
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # ImportError, or the module failing on import
        raise ConfigError(f"{source}: cannot import {module_name!r} ({type(err).__name__}: {err}); it must be "
                          "importable from the folder the search runs in or an installed package") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise ConfigError(f"{source}: {module_name} has no function {name!r}")
    try:
        inspect.signature(function).bind(object(), object())
    except TypeError:
        raise ConfigError(f"{source}: {spec} must take two arguments, (config: dict, run), got "
                          f"{name}{inspect.signature(function)}") from None
    return function


def checked(metrics: dict, trainer: str) -> dict[str, float]:
    """The report's metrics if every value is a real number (NaN allowed: not measured this
    epoch), else TrainerError naming the key and what is expected."""
    if not isinstance(metrics, dict):
        raise TrainerError(f"{trainer}: run.report takes a dict of metrics by name, got {type(metrics).__name__}")
    out = {}
    for key, value in metrics.items():
        if not isinstance(key, str):
            raise TrainerError(f"{trainer}: run.report: metric names are strings, got {key!r}")
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            what = ("the checklist reads it as a number (search/metrics.py)" if key in registry.checklist_names()
                    else "metrics are numbers")
            raise TrainerError(f"{trainer}: run.report: {key!r} must be a number ({what}), got "
                               f"{type(value).__name__} {value!r}")
        out[key] = float(value)
    return out


class Run:
    """What a trainer gets besides its config. Each report is numbered, checked, logged by the
    run log every trainer writes through (model/runlog.py: RunLog; dir/metrics.jsonl, a restored
    run's rewritten to the restored epochs, and the TensorBoard run dir/tb) with the scalars of
    `score(history)` (the search's: its score and checklist values), and then handed on by
    `send(row, checkpoint, final)` (the search's: tune.report; scripts/train.py's: keep the
    checkpoint, print a line), last, since Ray may end a stopped trial's thread there. `names`
    (the space's `metrics:` map, checklist name -> the trainer's own) adds the checklist's name
    beside the trainer's in each row (search/metrics.py: aliased)."""

    def __init__(self, trainer: str, epochs: int, seed: int, dir: Path, restored: Path | None = None,
                 history: list[dict] | None = None, score: Callable[[list[dict]], dict[str, float]] | None = None,
                 send: Callable[[dict, Path | None, bool], None] | None = None, names: dict[str, str] | None = None):
        self.trainer, self.epochs, self.seed, self.dir, self.restored = trainer, epochs, seed, Path(dir), restored
        self.dir.mkdir(parents=True, exist_ok=True)
        self.history = list(history or [])
        self._score, self._send, self._names = score, send, dict(names or {})
        self._log = RunLog(self.dir, epochs, self.history, line=None)  # rewrites metrics.jsonl to the history

    def report(self, metrics: dict, checkpoint: Path | None = None) -> None:
        row = registry.aliased({**checked(metrics, self.trainer), "epoch": len(self.history) + 1}, self._names)
        if checkpoint is not None and not Path(checkpoint).is_dir():
            raise TrainerError(f"{self.trainer}: run.report: checkpoint must be a folder, got {checkpoint!r}")
        if not_finite := diverged_keys(row):
            raise Diverged(row["epoch"], not_finite)
        self.history.append(row)
        if self._log.writer is None:
            self._log.open_tensorboard()
        self._log.epoch(row, (lambda: self._score(self.history)) if self._score else None)
        if self._send is not None:
            self._send(row, Path(checkpoint) if checkpoint else None, row["epoch"] >= self.epochs)

    def close(self, diverged: bool = False) -> str:
        """Close the TensorBoard writer, write status.json; returns the status: diverged, completed
        (the budget ran out) or early_stopped (the trainer returned before it)."""
        self._log.close()
        status = "diverged" if diverged else "completed" if len(self.history) >= self.epochs else "early_stopped"
        atomic_write_json(self.dir / "status.json", {"status": status, "epochs": len(self.history)})
        return status


# --------------------------------------------------------------------------------------------
# Run files: a trial's whole config for a contract trainer, as scripts/train.py runs it


def run_file(trainer: str, name: str, seed: int, epochs: int, config: dict, names: dict[str, str] | None = None) -> dict:
    """The file a contract trial writes as run/config.yaml (and the export as best_config.yaml);
    `metrics`, the space's name map (checklist name -> the trainer's), where it has one."""
    return {"trainer": trainer, "name": name, "seed": seed, "epochs": epochs, "config": config,
            **({"metrics": dict(names)} if names else {})}


RUN_FILE_KEYS = {"trainer": str, "name": str, "seed": int, "epochs": int, "config": dict}
OPTIONAL_RUN_FILE_KEYS = {"metrics": dict}


def read_run_file(raw: dict, source: str) -> dict:
    """A run file's keys, checked: ConfigError naming the file, the key and what is allowed."""
    unknown = sorted(set(raw) - set(RUN_FILE_KEYS) - set(OPTIONAL_RUN_FILE_KEYS))
    if unknown:
        raise ConfigError(f"{source}: {unknown[0]}: unknown key (allowed: "
                          f"{', '.join([*RUN_FILE_KEYS, *OPTIONAL_RUN_FILE_KEYS])})")
    for key, kind in RUN_FILE_KEYS.items():
        if key not in raw:
            raise ConfigError(f"{source}: {key}: missing (a run file has {', '.join(RUN_FILE_KEYS)})")
        if not isinstance(raw[key], kind) or isinstance(raw[key], bool):
            raise ConfigError(f"{source}: {key}: must be {kind.__name__}, got {raw[key]!r}")
    if raw["epochs"] < 1:
        raise ConfigError(f"{source}: epochs: must be >= 1, got {raw['epochs']}")
    if "metrics" in raw:
        if not isinstance(raw["metrics"], dict):
            raise ConfigError(f"{source}: metrics: must be a mapping (checklist name: your trainer's name), "
                              f"got {raw['metrics']!r}")
        try:
            registry.check_names(raw["metrics"])
        except ValueError as err:
            raise ConfigError(f"{source}: {err}") from None
    return raw


EPOCH_FILE = ".run_epoch"  # in a kept checkpoint: the epoch it belongs to


def keep_checkpoint(checkpoint: Path, folder: Path, epoch: int) -> None:
    """Copy a reported checkpoint to `folder`, with the epoch it belongs to (EPOCH_FILE inside),
    for a later --resume: the new copy is complete before it replaces the previous one."""
    new, old = folder.with_name(f".{folder.name}.new"), folder.with_name(f".{folder.name}.old")
    shutil.rmtree(new, ignore_errors=True)
    shutil.copytree(checkpoint, new)
    (new / EPOCH_FILE).write_text(str(epoch))
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    new.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def kept_checkpoint(folder: Path) -> tuple[Path | None, int]:
    """(the kept checkpoint, its epoch), or (None, 0) when there is none."""
    if (folder / EPOCH_FILE).is_file():
        return folder, int((folder / EPOCH_FILE).read_text())
    return None, 0
