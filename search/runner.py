"""The search driver: Ray Tune runs the trials, Optuna (TPE) proposes them, ASHA stops them.

    run_search(loaded, opts)
        start_ray            a local Ray with its dashboard, or join a cluster (--address); begun by
                             scripts/search.py while this module is imported (search/ray_start.py)
        build_trainable      the Ray adapter (search/trainable.py) as the TrialWorker that runs trial after trial
        prepare_experiment   the folder and what describes it: space.yaml, targets.json, command.txt, versions.json
        build_searcher       Optuna through Ray's OptunaSearch, the budget counted in the study (search/optuna_search.py)
        build_scheduler      ASHA on the score (FIFO without early stopping)
        build_tuner          the Tuner: reused workers, storage, collapse stopper, retries, callbacks, console reporter
        (restore_tuner       --resume: Tuner.restore instead of the three above)
        run_race             the final race (the space's `final:`): the top trials on fresh seeds at the
                             production budget, a second Ray experiment in <experiment>/final (search/race.py)
        export_and_report    mirror a URI experiment, set aside orphans, export the best, report
                             (on a helper thread while Ray stops); then search_time.json, upload

    results/<experiment>/               Ray's experiment folder (storage_path/name)
        trial_<id>/                     per trial: params.json, result.json, checkpoints, run/ (the
                                        trainer's own outputs and its TensorBoard run)
        study.db                        the Optuna study (sqlite): optuna-dashboard, importances
        space.yaml, command.txt         the space as given and how to rerun/resume
        versions.json                   torch, ray, optuna, numpy and Python it ran with (search/versions.py)
        best_config.yaml, best_trial.json, trials.csv    (search/export.py)
        report.md, curves.png, params.png, importance.png (search/report.py)
        race_plan.json, race.json, final/   the final race: its plan, outcome and Ray experiment (search/race.py)

The environment Ray reads is set in one place before Ray is imported (search/ray_env.py).

Private Ray APIs the search uses (why pyproject.toml pins Ray below 2.61: each may change in a
minor release, and the tests that cover it are named):
- `ray._private.ray_constants.LOG_PREFIX_ACTOR_NAME` (trial_worker_class): the marker that makes a
  reused worker's console lines name the trial it runs now (tests/test_search_e2e.py, reused workers).
- `ray.tune.trainable.function_trainable.wrap_function` (trial_worker_class): to subclass the function
  trainable as TrialWorker, which hands each trial its worker's record and names it on the dashboard.
- `tune.CLIReporter._progress_str` (ResultsReporter): to replace the "Result logdir" line with where
  the results are and add the progress line.
- OptunaSearch's `_setup_study`, `_ot_study`, `_ot_trials`, `_completed_trials`, `_space`, `_storage`,
  `_sampler`, `_metric`, `_suggest_from_define_by_run_func` and SearchGenerator's `searcher` and
  `total_samples` (search/optuna_search.py): pruned trials told as PRUNED, the study in the
  searcher's snapshot, a restore reconciled with Ray's trials (tests/test_optuna_search.py).
- `TrialScheduler._supports_buffered_results`, `TuneController.stop_trial` and `Trial.init_local_path`
  (RaceScheduler): every race report decided on as it comes, and a dropped finalist's seeds ended
  before they start (tests/test_race.py).
- the `ray.train._internal.storage` logger (search/trainable.py): its per-epoch "Checkpoint
  successfully created" lines go to the trial's run/checkpoints.log instead of the console.
- the `ray.tune.execution.tune_controller` and `ray._private.worker` loggers (QuietTrainerErrors):
  their "Trial task failed" and "Unhandled error" tracebacks are dropped for a TrainerError, which
  the console names once (tests/test_contract_errors.py).
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
import shlex
import shutil
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import optuna
import psutil
from ray import tune
from ray.tune import Callback
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.stopper import Stopper

from model.config import ConfigError
from model.io import atomic_write_json, atomic_write_text
from search import metrics, race, ray_env, versions
from search.contract import trainer_error_in
from search.export import RACE_OUTCOME_FILE, export_best
from search.judge import sign
from search.optuna_search import BudgetedSearch, PruningAwareOptunaSearch, ReconcileAfterRestore, SamplerFactory
from search.race import RACE_DIR, RACE_KEY
from search.ray_start import RayStarted, start_ray
from search.space import DefineByRun, Final, LoadedSpace
from search.storage import DRIVER_FILES, Location, download, remote_file_exists, set_aside, upload
from search.targets import JUDGING_FILE, Judging, collapsed
from search.trainable import WORKER_KEY, run_trial

TABLE_COLUMN_WIDTH = 12  # the console's trial table: values are cut at this width
TABLE_WIDTH = 160  # the console's trial table fits in this many columns; parameters beyond it: trials.csv
TABLE_ROWS = 20  # rows while the search runs (running trials first); the last table shows every trial


def short_names(params: dict) -> dict[str, str]:
    """The trial table's parameter columns: each searched parameter by its last name part
    ('vq.commitment_cost' -> 'commitment_cost'), with its section's first letters where two
    would read the same; trials.csv and the report keep the full names."""
    last = [key.rsplit(".", 1)[-1] for key in params]
    return {key: name if last.count(name) == 1 else f"{key.split('.')[0][:3]}.{name}"
            for key, name in zip(params, last)}


def _cell(value) -> tuple[str, bool]:
    """A table cell's text (numbers to 4 significant digits, text cut at TABLE_COLUMN_WIDTH) and
    whether it is a number (right-aligned)."""
    if isinstance(value, bool) or value is None:
        return ("" if value is None else str(value)), False
    if isinstance(value, numbers.Integral):
        return str(value), True
    if isinstance(value, numbers.Real):
        return f"{value:.4g}", True
    text = str(value)
    return (text if len(text) <= TABLE_COLUMN_WIDTH else text[:TABLE_COLUMN_WIDTH - 1] + "~"), False


def _header_lines(name: str) -> tuple[str, str]:
    """A column header on two lines, split at the underscore that makes the longer line shortest
    ('refresh_usage_threshold' -> 'refresh_usage' over 'threshold'); names of 8 characters or
    fewer stay on one."""
    parts = name.split("_")
    if len(name) <= 8 or len(parts) == 1:
        return name, ""
    splits = [("_".join(parts[:i]), "_".join(parts[i:])) for i in range(1, len(parts))]
    return min(splits, key=lambda ab: max(len(ab[0]), len(ab[1])))


def _render(headers: list[str], rows: list[list[tuple[str, bool]]]) -> list[str]:
    """A psql-style text table (as Ray's) with two-line headers, numbers right-aligned."""
    heads = [_header_lines(h) for h in headers]
    widths = [max([len(a), len(b)] + [len(r[i][0]) for r in rows]) for i, (a, b) in enumerate(heads)]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    head = ["| " + " | ".join(h[line].ljust(w) for h, w in zip(heads, widths)) + " |" for line in (0, 1)
            if line == 0 or any(h[1] for h in heads)]
    body = ["| " + " | ".join(t.rjust(w) if num else t.ljust(w) for (t, num), w in zip(r, widths)) + " |"
            for r in rows]
    return [rule, *head, "|" + rule[1:-1] + "|", *body, rule]


def trial_table(trials: list[dict], metric_columns: dict[str, str], param_columns: dict[str, str],
                width: int = TABLE_WIDTH, max_rows: int | None = None) -> list[str]:
    """The console's trial table. It leads with what the search judges by: trial, status, then
    `metric_columns` (result key -> header: epoch, score, the checklist's values); then as many
    of `param_columns` (config key -> short name, in the space's order) as fit in `width`
    characters, and a line naming the parameters left out (trials.csv and the report have them).
    trials: {"trial_id", "status", "config", "result"} in the order to show; with `max_rows`,
    running trials come first and a line counts those not shown."""
    order = {"RUNNING": 0, "PAUSED": 1, "PENDING": 2, "TERMINATED": 3, "ERROR": 4}
    shown = sorted(trials, key=lambda t: order.get(t["status"], 5))
    hidden = shown[max_rows:] if max_rows is not None else []
    shown = shown[:max_rows] if max_rows is not None else shown
    metrics = [k for k in metric_columns if any(t["result"].get(k) is not None for t in trials)]
    headers = ["trial", "status", *(metric_columns[k] for k in metrics)]
    rows = [[_cell(t["trial_id"]), _cell(t["status"]), *(_cell(t["result"].get(k)) for k in metrics)] for t in shown]
    table, left_out = _render(headers, rows), []
    for key, name in param_columns.items():
        if left_out:  # the space's order: once one does not fit, the rest follow it
            left_out.append(name)
            continue
        wider_rows = [r + [_cell(t["config"].get(key))] for r, t in zip(rows, shown)]
        wider = _render(headers + [name], wider_rows)
        if len(wider[0]) > width:
            left_out.append(name)
            continue
        headers, rows, table = headers + [name], wider_rows, wider
    if hidden:
        counts = {s: sum(t["status"] == s for t in hidden) for s in order if any(t["status"] == s for t in hidden)}
        table.append(f"... {len(hidden)} more trials not shown ({', '.join(f'{n} {s}' for s, n in counts.items())})")
    if left_out:
        table += textwrap.wrap(f"(not shown, to fit {width} columns: {', '.join(left_out)}; all in trials.csv)", width)
    return table


@dataclass(frozen=True)
class SearchOptions:
    exp_dir: Path  # the local experiment folder (for a URI experiment: its driver files and mirror)
    num_samples: int
    max_epochs: int
    cpu: float
    gpu: float
    resume: bool = False
    address: str | None = None
    dashboard_host: str = "127.0.0.1"
    num_gpus: int | None = None  # logical GPUs declared to a local Ray (tests, CPU-only hosts)
    command: str = ""
    max_concurrent: int = 0  # 0: as many trials as resources allow
    early_stopping: bool = True  # ASHA + collapse stopper; False: every trial runs max_epochs
    remote: str | None = None  # <uri>/<name> when --storage is a URI (search/storage.py)
    final: Final | None = None  # the final race (search/race.py); None: the exploration's best is the answer

    @property
    def location(self) -> Location:
        return Location(local=self.exp_dir, remote=self.remote)


def trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


class CollapseStopper(Stopper):
    """Ray Tune stopper: end a trial at once on a NaN/inf loss, or when it meets the collapse
    rule (search/targets.py: collapsed) (state is per trial, in the driver). A collapse search
    (objective.goal: collapse) watches collapsing trials to the end: `usage_rule=False` keeps
    only the NaN/inf part."""

    def __init__(self, floor: float, patience: int, usage_rule: bool = True):
        self.floor, self.patience, self.usage_rule = floor, patience, usage_rule
        self.usage: dict[str, list[float]] = {}

    def __call__(self, trial_id: str, result: dict) -> bool:
        if result.get("trial/diverged") or not all(
                math.isfinite(result.get(k, 0.0)) for k in ("train/loss", "val/loss")):
            return True
        history = self.usage.setdefault(trial_id, [])
        history.append(result.get("codebook/usage", math.nan))
        return self.usage_rule and collapsed(history, self.floor, self.patience)

    def stop_all(self) -> bool:
        return False


class ContractBroken(Exception):
    """A trainer broke the contract in a trial (search/contract.py: TrainerError): the same would
    happen in every trial, so the search ended there. Resumable once the trainer is fixed."""

    def __init__(self, trial_id: str, message: str, record: Path | None = None):
        super().__init__(f"trial {trial_id}: {message}")
        self.trial_id, self.message, self.record = trial_id, message, record  # record: Ray's whole error text


def trial_error_text(trial) -> str:
    """The error text Ray wrote for a failed trial (its traceback), from the driver's copy."""
    path = trial.error_file
    return Path(path).read_text(errors="replace") if path and Path(path).is_file() else ""


class ContractGuard(Callback):
    """Ray Tune callback: the first trial that fails by a TrainerError (whether Ray would retry it
    or not) ends the whole fit, so a broken trainer is not run into the same error trial after
    trial. It writes the message to `record` (CONTRACT_ERROR_FILE in the driver's experiment
    folder) and raises, which ends Tune's loop as a killed driver would: the experiment's state
    keeps the unfinished trials unfinished, so `--resume` runs them once the trainer is fixed.
    `fit_checked` reads the record (a restored Tuner brings its own copy of this callback)."""

    def __init__(self, record: Path):
        self.record = record

    def _check(self, trial) -> None:
        text = trial_error_text(trial)
        message = trainer_error_in(text)
        if message is not None:  # the record keeps Ray's whole error text (the traceback the console leaves out)
            self.record.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.record, {"trial_id": trial.trial_id, "message": message, "error": text})
            raise ContractBroken(trial.trial_id, message)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._check(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._check(trial)


CONTRACT_ERROR_FILE = "contract_error.json"


class QuietTrainerErrors(logging.Filter):
    """Drops Ray's log records of a trial that failed by a TrainerError: Tune's "Trial task failed
    for trial ..." with its traceback, and the "Unhandled error" Ray's worker logs for a trial
    running beside it whose error nobody collects once the guard ends the fit. The console prints
    the one message instead. Any other failure keeps Ray's traceback."""

    LOGGERS = ("ray.tune.execution.tune_controller", "ray._private.worker")

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return trainer_error_in(f"{record.getMessage()}\n{error or ''}") is None


def fit_checked(tuner: tune.Tuner, record: Path) -> ContractBroken | None:
    """tuner.fit(); then the TrainerError that ended it, if any, as ContractBroken (from the
    ContractGuard's record, removed first so that an error fixed since is not reported again)."""
    record.unlink(missing_ok=True)
    quiet = QuietTrainerErrors()
    for name in quiet.LOGGERS:
        logging.getLogger(name).addFilter(quiet)
    try:
        tuner.fit()
    except Exception:  # Tune wraps the guard's ContractBroken in its own error
        if not record.is_file():
            raise
    finally:
        if not record.is_file():  # else keep it: Ray logs the uncollected errors after fit, as it frees them
            for name in quiet.LOGGERS:
                logging.getLogger(name).removeFilter(quiet)
    if not record.is_file():
        return None
    found = json.loads(record.read_text())
    return ContractBroken(found["trial_id"], found["message"], record)


def stoppers(loaded: LoadedSpace, opts: SearchOptions) -> Stopper | None:
    """The collapse stopper, unless --no-early-stopping."""
    objective = loaded.space.objective
    return (CollapseStopper(objective.collapse_usage_floor, objective.collapse_patience,
                            usage_rule=objective.goal == "health") if opts.early_stopping else None)


class RaceScheduler(FIFOScheduler):
    """Ray Tune scheduler of the race: runs the entries in plan order, and stops every run of a
    finalist the racing rule (`eliminated`) drops, the running ones at their next report, the
    pending ones before they start. Its state is read from the trials themselves (their config,
    status and latest report), so a restored experiment races on where it was."""

    _supports_buffered_results = False  # each report decided on as it comes, as ASHA's are

    def __init__(self, racing: bool = True):
        super().__init__()
        self.racing = racing

    def _out(self, tune_controller, reporting=None, result: dict | None = None) -> set[str]:
        """The finalists dropped so far; `result` is the `reporting` trial's new report (Ray
        records it as the trial's last result only after the scheduler has decided)."""
        if not self.racing:
            return set()
        runs: dict[str, list[race.SeedRun]] = {}
        for trial in tune_controller.get_trials():
            ended = trial.status in (Trial.TERMINATED, Trial.ERROR)
            latest = result if trial is reporting else trial.last_result
            runs.setdefault(trial.config[RACE_KEY]["finalist"], []).append(race.from_result(ended, latest))
        return race.eliminated(runs)

    def on_trial_result(self, tune_controller, trial, result):
        if trial.config[RACE_KEY]["finalist"] in self._out(tune_controller, trial, result):
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def choose_trial_to_run(self, tune_controller):
        out = self._out(tune_controller)
        for trial in list(tune_controller.get_trials()):
            if trial.status == Trial.PENDING and trial.config[RACE_KEY]["finalist"] in out:
                # ended before it starts (Ray starts every PENDING trial it has resources for, whatever
                # this method returns): TERMINATED without results, with the folder Ray's reporter expects
                trial.init_local_path()
                tune_controller.stop_trial(trial)
        return next((t for t in tune_controller.get_trials() if t.status in (Trial.PENDING, Trial.PAUSED)
                     and t.config[RACE_KEY]["finalist"] not in out), None)

    def debug_string(self) -> str:
        return "Final race: finalists by the items passed in their worst seed" + ("" if self.racing else " (no stopping)")


class BestSoFar(Callback):
    """Re-export best_config.yaml / best_trial.json whenever a trial reports a new best, and
    trials.csv whenever a trial ends, so an interrupted search still has its best so far."""

    def __init__(self, exp_dir: Path, mode: str):
        self.exp_dir, self.sign = exp_dir, sign(mode)
        self.best = -math.inf

    def _export(self) -> None:
        export_best(self.exp_dir)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        score = self.sign * result.get("score", -self.sign * math.inf)
        if score > self.best:
            self.best = score
            self._export()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._export()

    def on_trial_error(self, iteration, trials, trial, **info):
        self._export()


def progress_line(trials: list[dict], num_samples: int, elapsed_s: float, mode: str = "max") -> str:
    """One line a person can follow at a glance, from each trial's {"status", "epoch", "score"}:

    'Progress: 6/32 trials ended, 2 running | 87 trial-epochs | best score 7.41234 (trial ab12) |
     4.2 min elapsed, about 18 min left at this pace'

    The estimate is the elapsed time per ended trial times the trials still to end: rough (ASHA
    stops later trials sooner), and said to be."""
    ended = sum(t["status"] in ("TERMINATED", "ERROR") for t in trials)
    running = sum(t["status"] == "RUNNING" for t in trials)
    epochs = sum(int(t.get("epoch") or 0) for t in trials)
    scored = [t for t in trials if isinstance(t.get("score"), (int, float)) and math.isfinite(t["score"])]
    better = sign(mode)
    best = max(scored, key=lambda t: better * t["score"], default=None)
    text = f"Progress: {ended}/{num_samples} trials ended, {running} running | {epochs} trial-epochs"
    if best is not None:
        text += f" | best score {best['score']:.5f} (trial {best['trial_id']})"
    text += f" | {elapsed_s / 60:.1f} min elapsed"
    if 0 < ended < num_samples:
        text += f", about {elapsed_s / ended * (num_samples - ended) / 60:.0f} min left at this pace"
    return text


class ResultsReporter(tune.CLIReporter):
    """Ray's classic status block, with its "Result logdir: /tmp/ray/session_.../driver_artifacts"
    line (the driver's scratch copy) replaced by where the results really are, a progress line
    (progress_line) under it, and its trial table by trial_table's (the judged metrics first,
    within TABLE_WIDTH columns)."""

    def __init__(self, exp_dir: Path, num_samples: int, mode: str, metric_columns: dict[str, str],
                 parameter_columns: dict[str, str], **kwargs):
        super().__init__(metric_columns=metric_columns, parameter_columns=parameter_columns, **kwargs)
        self.exp_dir, self.num_samples, self.mode = exp_dir, num_samples, mode
        self.columns = metric_columns, parameter_columns
        self.started = time.time()

    def _progress_str(self, trials, done, *sys_info, **kwargs):
        text = super()._progress_str(trials, done, *sys_info, **kwargs)
        state = [{"status": t.status, "trial_id": t.trial_id, "epoch": (t.last_result or {}).get("epoch"),
                  "score": (t.last_result or {}).get("score")} for t in trials]
        progress = progress_line(state, self.num_samples, time.time() - self.started, self.mode)
        table = trial_table([{"trial_id": t.trial_id, "status": t.status, "config": t.config,
                              "result": t.last_result or {}} for t in trials],
                            *self.columns, max_rows=None if done else TABLE_ROWS)
        lines, out, in_table = text.split("\n"), [], False
        for line in lines:  # Ray's table (and its "more trials not shown" line) replaced by trial_table's
            if line.startswith("Result logdir: "):
                out.append(f"Results: {self.exp_dir}\n{progress}")
            elif line.startswith("Number of trials: "):
                out += [line, *table]
                in_table = True
            elif in_table and line.startswith(("+", "|", "... ")):
                continue
            else:
                in_table = False
                out.append(line)
        return "\n".join(out)


def check_resources(ray, opts: SearchOptions, source: str) -> int:
    """ConfigError if one trial does not fit the cluster; else how many trials fit at once."""
    total = ray.cluster_resources()
    cpus, gpus = total.get("CPU", 0), total.get("GPU", 0)
    if opts.cpu > cpus:
        raise ConfigError(f"{source}: resources.cpu: {opts.cpu} CPUs per trial, but the cluster has {cpus:g}")
    if opts.gpu > 0 and gpus == 0:
        raise ConfigError(f"{source}: resources.gpu: {opts.gpu} GPU per trial, but the cluster has no GPU")
    return min(int(cpus // opts.cpu), int(gpus // opts.gpu) if opts.gpu > 0 else math.inf)


def quiet_exit_while_stopping(unraisable) -> None:
    """sys.unraisablehook of a trial's worker process. Ray's SIGTERM handler (the worker stopped on
    Ctrl-C) raises SystemExit wherever the process is; inside a weakref callback or a __del__ Python
    can only print it, "Exception ignored in ..." with a traceback, on the search's console.
    Those exits are dropped (the process is ending anyway); any other unraisable exception goes to
    Python's default hook."""
    if unraisable.exc_type is not None and issubclass(unraisable.exc_type, SystemExit):
        return
    sys.__unraisablehook__(unraisable)


def trial_worker_class(fn) -> type:
    """The function trainable as Ray Tune wraps it (wrap_function), named TrialWorker, with a repr
    naming its trial, and keeping a record of its process that it hands each trial (under
    search/trainable.py's WORKER_KEY): when it took the trial (its process start for the first,
    the reset for a later one: Ray's reuse_actors) and how many trials it has run. The Ray
    dashboard's Actors page shows "TrialWorker" and "trial_<id>" (the trial the worker started
    with) instead of "ImplicitFunc" / "run_trial" on every row; the worker's console and log
    lines are prefixed with the trial it runs now."""
    from ray._private.ray_constants import LOG_PREFIX_ACTOR_NAME
    from ray.tune.trainable.function_trainable import wrap_function

    class TrialWorker(wrap_function(fn)):  # wrap_function keeps fn's resources (tune.with_resources)
        def setup(self, config):
            self._worker = {"assigned": psutil.Process().create_time(), "trials": 1}
            sys.unraisablehook = quiet_exit_while_stopping  # this worker process's, for its lifetime
            super().setup(config)

        def reset_config(self, new_config):
            self._worker = {"assigned": time.time(), "trials": self._worker["trials"] + 1}
            # Ray prefixes the worker's console and log lines with the repr it had when the worker
            # started ("(trial_<first> pid=...)"); this marker line makes it name the new trial
            # (the dashboard's Actors row keeps the first trial: Ray 2.60 has no way to rename it)
            for stream in (sys.stdout, sys.stderr):
                print(f"{LOG_PREFIX_ACTOR_NAME}trial_{self.trial_id}", file=stream, flush=True)
            return super().reset_config(new_config)

        def _trainable_func(self, config):
            return super()._trainable_func({**config, WORKER_KEY: self._worker})

        def __repr__(self) -> str:
            return f"trial_{self.trial_id}"

    TrialWorker.__qualname__ = "TrialWorker"  # the dashboard shows the qualified name
    return TrialWorker


def check_storage_visible(ray, storage_dir: Path, shown: str) -> None:
    """On a cluster of more than one node, refuse a local storage folder that not every node sees.

    Since Ray 2.7, multi-node Tune needs storage every node reaches (a shared filesystem or a
    URI): a folder only the driver's node has fails at the first checkpoint a trial on another
    node reports. The driver writes a marker file into the folder and a task on each node looks
    for it; the marker (and any folder made for it) is removed again, so a refusal writes nothing."""
    import socket
    import uuid

    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2:
        return
    folder = storage_dir.resolve()
    made = next((p for p in [folder, *folder.parents][::-1] if not p.exists()), None)  # top folder we create
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / f".storage-check-{uuid.uuid4().hex}"
    marker.write_text("written by the search's driver; every node must see it\n")

    @ray.remote(num_cpus=0)
    def sees(path: str) -> tuple[bool, str]:
        return os.path.exists(path), socket.gethostname()

    try:
        answers = ray.get([sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                           .remote(str(marker)) for n in nodes], timeout=120)
    finally:
        marker.unlink(missing_ok=True)
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
    blind = [n for n, (ok, _host) in zip(nodes, answers) if not ok]
    if blind:
        raise ConfigError(
            f"--storage {shown}: a local folder that {len(blind)} of the cluster's {len(nodes)} nodes cannot see "
            f"(node {', '.join(n.get('NodeManagerAddress', n['NodeID']) for n in blind)}); a multi-node search "
            "needs storage every node reaches: pass --storage s3://bucket/prefix (or gs://..., any pyarrow "
            "filesystem URI; credentials from the standard environment variables), or a shared filesystem "
            "mounted at the same path on every node")


def run_search(loaded: LoadedSpace, opts: SearchOptions, ray_started: RayStarted | None = None):
    """Run (or resume) the search; returns (best TrialRecord or None, interrupted?). The
    environment Ray reads was set before Ray was imported (search/ray_env.py: apply).
    `ray_started`: Ray already started (scripts/search.py starts it while this module is
    imported: search/ray_start.py), or None to start it here."""
    import ray

    exp_dir, location = opts.exp_dir.resolve(), opts.location
    ray_started = ray_started or start_ray(opts.address, opts.dashboard_host, opts.num_gpus)
    started = ray_started.started
    phases = {"ray_ready": ray_started.ready}  # wall-clock times of the session's phases (search_time.json)
    try:
        slots = check_resources(ray, opts, str(loaded.path))
        ray_env.allow_pending_trials(opts.max_concurrent or slots)  # start as many trials as can run at once
        if location.remote is None:
            check_storage_visible(ray, exp_dir.parent, str(exp_dir.parent))
        trainable = build_trainable(loaded, opts, exp_dir, opts.max_epochs)
        broken = None
        if opts.resume:
            if not study_finished(exp_dir, opts.num_samples):  # a resume after the exploration goes to the race
                broken = fit_checked(restore_tuner(opts, exp_dir, trainable), exp_dir / CONTRACT_ERROR_FILE)
        else:
            prepare_experiment(loaded, opts, exp_dir)
            search = build_searcher(loaded, opts)
            broken = fit_checked(build_tuner(loaded, opts, exp_dir, trainable, search, build_scheduler(loaded, opts)),
                                 exp_dir / CONTRACT_ERROR_FILE)
        phases["trials_done"] = time.time()
        # Ctrl-C makes fit() return early; Ray then marks the trials it stopped TERMINATED like
        # finished ones, so whether the budget ran out is read from the study (study_finished)
        interrupted = broken is not None or not study_finished(exp_dir, opts.num_samples)
        if not interrupted and opts.final is not None:
            interrupted, broken = run_race(loaded, opts, exp_dir)
            phases["race_done"] = time.time()
    except BaseException:
        ray.shutdown()
        raise
    # Ray's stop (~1.4 s, mostly waiting for its processes to exit) and the export and report,
    # which need only the files on disk, at once: the report on a helper thread
    with ThreadPoolExecutor(1, thread_name_prefix="report") as pool:
        reporting = pool.submit(export_and_report, opts, exp_dir)
        ray.shutdown()
        phases["ray_stopped"] = time.time()
        best = reporting.result()
    phases["reported"] = time.time()
    record_search_time(exp_dir, started, opts.resume, phases)
    upload(location, DRIVER_FILES)
    if broken is not None:
        raise broken
    return best, interrupted


def build_trainable(loaded: LoadedSpace, opts: SearchOptions, exp_dir: Path, epochs: int):
    """The Ray adapter (search/trainable.py) with the search's settings, `epochs` per trial, its
    resources per trial, as the TrialWorker class that runs trial after trial; `exp_dir` is the
    Ray experiment's folder (the search's, or its race's)."""
    return trial_worker_class(tune.with_resources(
        tune.with_parameters(run_trial, space=loaded, epochs=epochs, num_threads=max(1, int(opts.cpu)),
                             experiment_dir=str(exp_dir) if opts.location.remote is None else None),
        {"cpu": opts.cpu, "gpu": opts.gpu}))


def run_race(loaded: LoadedSpace, opts: SearchOptions, exp_dir: Path) -> "tuple[bool, ContractBroken | None]":
    """The final race (search/race.py) after a finished exploration, or its resume: the plan
    fixed at its start (race_plan.json), one Ray trial per (finalist, seed) in <experiment>/final,
    RaceScheduler dropping finalists that can no longer win; then race.json. Returns (interrupted,
    ContractBroken or None): interrupted when a planned run has not ended (resumable)."""
    final, location = opts.final, opts.location
    download(location)  # a URI experiment: the exploration's trial folders, to rank them
    race_exp = exp_dir / RACE_DIR
    remote = f"{location.remote}/{RACE_DIR}" if location.remote else None
    trainable = build_trainable(loaded, opts, race_exp, final.epochs)
    if remote_file_exists(f"{remote}/tuner.pkl") if remote else (race_exp / "tuner.pkl").is_file():
        tuner = tune.Tuner.restore(remote or str(race_exp.resolve()), trainable=trainable, resume_errored=True)
    else:
        plan = race.make_plan(exp_dir, final.top_k, final.seeds, final.epochs, final.seed_base)
        if not plan["entries"]:
            return False, None  # no trial to race (none produced a result)
        atomic_write_json(exp_dir / race.PLAN_FILE, plan)
        upload(location, [race.PLAN_FILE])
        print(f"final race: the top {len(plan['finalists'])} trials ({', '.join(f['trial_id'] for f in plan['finalists'])}) "
              f"on fresh seeds {plan['seeds']} at {plan['epochs']} epochs each", flush=True)
        tuner = build_race_tuner(loaded, opts, exp_dir, trainable, plan)
    broken = fit_checked(tuner, race_exp / CONTRACT_ERROR_FILE)
    download(location)
    outcome = race.write_outcome(exp_dir)
    upload(location, [RACE_OUTCOME_FILE])
    return broken is not None or not (outcome is None or outcome["finished"]), broken


def build_race_tuner(loaded: LoadedSpace, opts: SearchOptions, exp_dir: Path, trainable, plan: dict) -> tune.Tuner:
    """The race's Tuner: one grid entry per (finalist, seed) in plan order, RaceScheduler (no
    dropping with --no-early-stopping), the collapse stopper, retries, reused workers; its
    experiment is <experiment>/final in the same storage."""
    objective, location = loaded.space.objective, opts.location
    guard = ContractGuard(exp_dir / RACE_DIR / CONTRACT_ERROR_FILE)
    return tune.Tuner(
        trainable,
        param_space={RACE_KEY: tune.grid_search(plan["entries"])},
        tune_config=tune.TuneConfig(scheduler=RaceScheduler(racing=opts.early_stopping), num_samples=1,
                                    trial_dirname_creator=trial_dirname, reuse_actors=True,
                                    max_concurrent_trials=opts.max_concurrent or None),
        run_config=tune.RunConfig(
            name=RACE_DIR, storage_path=location.remote or str(exp_dir.resolve()),
            sync_config=tune.SyncConfig(sync_artifacts=location.remote is not None),
            stop=stoppers(loaded, opts),
            failure_config=tune.FailureConfig(max_failures=loaded.space.budget.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            callbacks=[guard, JsonLoggerCallback(), CSVLoggerCallback()],
            progress_reporter=ResultsReporter(exp_dir / RACE_DIR, len(plan["entries"]), objective.mode,
                                              metric_columns=metrics.table_columns(),
                                              parameter_columns={f"{RACE_KEY}/finalist": "finalist", f"{RACE_KEY}/seed": "seed"},
                                              max_column_length=TABLE_COLUMN_WIDTH, max_report_frequency=30),
            verbose=1))


def restore_tuner(opts: SearchOptions, exp_dir: Path, trainable) -> tune.Tuner:
    """--resume: Ray's Tuner.restore (the searcher, the study and the scheduler come with Ray's snapshot)."""
    download(opts.location)  # a URI experiment: its trial folders, here
    for line in versions.drift(exp_dir):
        print(f"note: resuming with {line}: later trials may not compare exactly with earlier ones")
    return tune.Tuner.restore(opts.location.ray_experiment_path, trainable=trainable, resume_errored=True)


def prepare_experiment(loaded: LoadedSpace, opts: SearchOptions, exp_dir: Path) -> None:
    """The experiment's folder and the files that describe it: the space as given, how it is
    judged (targets.json, frozen now), the command, the versions it runs with."""
    objective = loaded.space.objective
    exp_dir.mkdir(parents=True)
    shutil.copy2(loaded.path, exp_dir / "space.yaml")
    atomic_write_json(exp_dir / JUDGING_FILE, Judging(
        objective.goal, objective.resolved_targets(), objective.collapse_usage_floor,
        objective.collapse_patience).as_dict())
    atomic_write_text(exp_dir / "command.txt", f"# as invoked\n{opts.command}\n# resume\n{opts.command} --resume\n")
    versions.record(exp_dir)
    upload(opts.location, ["space.yaml", JUDGING_FILE, "command.txt", versions.VERSIONS_FILE])  # it describes itself


def build_searcher(loaded: LoadedSpace, opts: SearchOptions) -> BudgetedSearch:
    """Optuna through Ray: TPE (or the space's sampler; NSGA-II for a multi-objective search) on
    the space's define-by-run function, the study in study.db, the budget counted in the study
    (search/optuna_search.py), at most max_concurrent trials at once."""
    space = loaded.space
    if space.objective.multi_objective:
        sampler, (metric, mode) = SamplerFactory("nsga2", space.seed), metrics.pareto()
    else:
        sampler, metric, mode = SamplerFactory(space.sampler, space.seed), "score", space.objective.mode
    searcher = PruningAwareOptunaSearch(
        space=DefineByRun(space.params), metric=metric, mode=mode, sampler_factory=sampler,
        # the path as given (relative to the working directory for a URI experiment's results/<name>):
        # a resume elsewhere restores the study there from Ray's snapshot
        storage=optuna.storages.RDBStorage(f"sqlite:///{opts.exp_dir / 'study.db'}"),
        study_name=opts.exp_dir.name)
    return BudgetedSearch(ConcurrencyLimiter(searcher, opts.max_concurrent) if opts.max_concurrent else searcher)


def build_scheduler(loaded: LoadedSpace, opts: SearchOptions):
    """ASHA on the score, per epoch (FIFO: no early stopping)."""
    budget = loaded.space.budget
    if not opts.early_stopping:
        return FIFOScheduler()
    return ASHAScheduler(time_attr="epoch", metric="score", mode=loaded.space.objective.mode, max_t=opts.max_epochs,
                         grace_period=min(budget.grace_period, opts.max_epochs), reduction_factor=budget.reduction_factor)


def build_tuner(loaded: LoadedSpace, opts: SearchOptions, exp_dir: Path, trainable, search: BudgetedSearch,
                scheduler) -> tune.Tuner:
    """Ray Tune's Tuner: the search and scheduler, reused workers, where the experiment goes, the
    collapse stopper, retries, checkpoints kept, the callbacks and the console's reporter."""
    objective, location, guard = loaded.space.objective, opts.location, ContractGuard(exp_dir / CONTRACT_ERROR_FILE)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=search, scheduler=scheduler, num_samples=opts.num_samples, trial_dirname_creator=trial_dirname,
            # a worker process runs trial after trial: no process start, imports or data load per
            # trial (search/trainable.py keeps each trial's files in its folder)
            reuse_actors=True),
        run_config=tune.RunConfig(
            name=exp_dir.name, storage_path=location.ray_storage_path,
            # files a trial writes under its folder (run/: metrics, TensorBoard, placement) go to a URI
            # storage too; a folder storage is the trial folder itself
            sync_config=tune.SyncConfig(sync_artifacts=location.remote is not None),
            stop=stoppers(loaded, opts),
            failure_config=tune.FailureConfig(max_failures=loaded.space.budget.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            # best so far re-exported during the search from a folder experiment; a URI experiment is
            # mirrored and exported once at the end (or on --resume)
            callbacks=[guard, ReconcileAfterRestore(search), JsonLoggerCallback(), CSVLoggerCallback()]
            + ([BestSoFar(exp_dir, objective.mode)] if location.remote is None else []),
            progress_reporter=ResultsReporter(exp_dir, opts.num_samples, objective.mode, metric_columns=metrics.table_columns(),
                                              parameter_columns=short_names(loaded.space.params),
                                              max_column_length=TABLE_COLUMN_WIDTH, max_report_frequency=30),
            verbose=1))


def export_and_report(opts: SearchOptions, exp_dir: Path):
    """After the trials (Ray need not be running): the trial folders mirrored (a URI experiment),
    trial folders a resume ran again set aside, the best exported, the report written. Returns
    the best TrialRecord (or None)."""
    location = opts.location
    download(location)
    if opts.resume:
        set_aside_orphans(location, study_trial_ids(exp_dir))
    best = export_best(exp_dir)
    if best is not None:
        from search.report import write_report

        print(f"report: {write_report(exp_dir)}")
    return best


def study_finished(exp_dir: Path, num_samples: int) -> bool:
    """Has every trial of the budget ended? The study hears of each trial's end (COMPLETE, PRUNED
    or FAIL, search/optuna_search.py); a trial Ray stopped on Ctrl-C stays RUNNING there."""
    study = optuna.load_study(study_name=exp_dir.name, storage=f"sqlite:///{exp_dir / 'study.db'}")
    states = [t.state for t in study.get_trials(deepcopy=False)]
    return len(states) >= num_samples and all(s.is_finished() for s in states)


def study_trial_ids(exp_dir: Path) -> set[str]:
    """The Ray trial ids the experiment's study has a trial for (user attribute ray_trial_id)."""
    study = optuna.load_study(study_name=exp_dir.name, storage=f"sqlite:///{exp_dir / 'study.db'}")
    return {t.user_attrs["ray_trial_id"] for t in study.get_trials(deepcopy=False) if "ray_trial_id" in t.user_attrs}


def set_aside_orphans(location: Location, study_ids: set[str]) -> list[str]:
    """After a resume: trial folders with no study trial are moved to <experiment>/orphaned/.
    They are trials started after the snapshot a resume restored (search/optuna_search.py):
    the resumed search ran their parameters again under a new trial, so counting them would
    list a trial twice and exceed the budget."""
    exp_dir = location.local
    # Ray's params.json may never have been written for them (the driver was killed first), so
    # every trial folder counts: Ray's (params.json) and the trainable's (trial_dirname's trial_<id>/run)
    folders = {p.parent for p in exp_dir.glob("*/params.json")} | set(exp_dir.glob("trial_*"))
    orphans = sorted(p.name for p in folders if p.is_dir() and p.name.removeprefix("trial_") not in study_ids)
    if orphans:
        set_aside(location, orphans)
        print(f"{len(orphans)} trial folder(s) from before the interruption that the resumed search ran "
              f"again: moved to {location.shown}/orphaned/")
    return orphans


def record_search_time(exp_dir: Path, started: float, resumed: bool, phases: dict[str, float]) -> None:
    """search_time.json: one session per run of the search (a resumed search adds one), for
    bench/search_wall_time.py --from and bench/search_efficiency.py: wall-clock times of its
    start (Ray's start begun), `phases` (ray_ready: ray.init returned; trials_done: Tune's fit
    returned; race_done; ray_stopped; reported: the best config exported and the report written,
    which overlaps Ray's stop) and its end."""
    path = exp_dir / "search_time.json"
    if not exp_dir.is_dir():
        return
    sessions = json.loads(path.read_text())["sessions"] if path.is_file() else []
    ended = time.time()
    sessions.append({"started": started, **phases, "ended": ended, "wall_s": ended - started, "resumed": resumed})
    atomic_write_json(path, {"sessions": sessions})


def format_command(argv: list[str]) -> str:
    return shlex.join(["python", "scripts/search.py", *argv])
