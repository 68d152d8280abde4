"""The search driver: Ray Tune runs the trials, Optuna (TPE) proposes them, ASHA stops them.

    results/<experiment>/               Ray's experiment folder (storage_path/name)
        trial_<id>/                     per trial: params.json, result.json, TensorBoard events,
                                        checkpoints, run/ (the trainer's own outputs and tb/)
        study.db                        the Optuna study (sqlite): optuna-dashboard, importances
        space.yaml, command.txt         the space as given and how to rerun/resume
        versions.json                   torch, ray, optuna, numpy and Python it ran with (search/versions.py)
        best_config.yaml, best_trial.json, trials.csv    (search/export.py)
        report.md, curves.png, params.png, importance.png (search/report.py)
"""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import psutil
from ray import tune
from ray.tune import Callback
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.stopper import Stopper

from model.config import ConfigError
from model.io import atomic_write_json, atomic_write_text
from search.export import export_best
from search.optuna_search import BudgetedSearch, PruningAwareOptunaSearch, ReconcileAfterRestore, SamplerFactory
from search.space import DefineByRun, LoadedSpace
from search.storage import DRIVER_FILES, Location, download, set_aside, upload
from search.targets import JUDGING_FILE, Judging, collapsed
from search.trainable import WORKER_KEY, run_trial
from search import versions

# objective.multi_objective; val loss under the fixed REFERENCE_WEIGHTS (model/jepa.py), comparable across trials
PARETO_METRICS = ["codebook/usage", "rank/context", "val/loss_reference"]
PARETO_MODES = ["max", "max", "min"]
TABLE_COLUMNS = {"epoch": "epoch", "score": "score", "codebook/usage": "usage",
                 "rank/context": "rank_ctx", "rank/target": "rank_tgt", "val/loss_reference": "val_loss_ref"}


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


class BestSoFar(Callback):
    """Re-export best_config.yaml / best_trial.json whenever a trial reports a new best, and
    trials.csv whenever a trial ends, so an interrupted search still has its best so far."""

    def __init__(self, exp_dir: Path, mode: str):
        self.exp_dir, self.sign = exp_dir, 1 if mode == "max" else -1
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
    sign = 1 if mode == "max" else -1
    best = max(scored, key=lambda t: sign * t["score"], default=None)
    text = f"Progress: {ended}/{num_samples} trials ended, {running} running | {epochs} trial-epochs"
    if best is not None:
        text += f" | best score {best['score']:.5f} (trial {best['trial_id']})"
    text += f" | {elapsed_s / 60:.1f} min elapsed"
    if 0 < ended < num_samples:
        text += f", about {elapsed_s / ended * (num_samples - ended) / 60:.0f} min left at this pace"
    return text


class ResultsReporter(tune.CLIReporter):
    """Ray's classic trial table, with its "Result logdir: /tmp/ray/session_.../driver_artifacts"
    line (the driver's scratch copy) replaced by where the results really are, and a progress line
    (progress_line) under it."""

    def __init__(self, exp_dir: Path, num_samples: int, mode: str, **kwargs):
        super().__init__(**kwargs)
        self.exp_dir, self.num_samples, self.mode = exp_dir, num_samples, mode
        self.started = time.time()

    def _progress_str(self, trials, done, *sys_info, **kwargs):
        text = super()._progress_str(trials, done, *sys_info, **kwargs)
        state = [{"status": t.status, "trial_id": t.trial_id, "epoch": (t.last_result or {}).get("epoch"),
                  "score": (t.last_result or {}).get("score")} for t in trials]
        progress = progress_line(state, self.num_samples, time.time() - self.started, self.mode)
        return "\n".join(f"Results: {self.exp_dir}\n{progress}" if line.startswith("Result logdir: ") else line
                         for line in text.split("\n"))


def start_ray(opts: SearchOptions):
    """Join a cluster (--address or RAY_ADDRESS) or start a local one with the dashboard."""
    import ray

    address = opts.address or os.environ.get("RAY_ADDRESS")
    if address:
        context = ray.init(address=address, log_to_driver=True)
    else:
        context = ray.init(include_dashboard=True, dashboard_host=opts.dashboard_host,
                           num_gpus=opts.num_gpus, log_to_driver=True)
    url = context.dashboard_url
    if url:
        token_file = os.environ.get("RAY_AUTH_TOKEN_PATH", str(Path.home() / ".ray" / "auth_token"))
        print(f"Ray dashboard: http://{url}  (token authentication: paste the token printed by "
              f"`ray get-auth-token`, stored in {token_file})", flush=True)
    return ray


def check_resources(ray, opts: SearchOptions, source: str) -> None:
    total = ray.cluster_resources()
    cpus, gpus = total.get("CPU", 0), total.get("GPU", 0)
    if opts.cpu > cpus:
        raise ConfigError(f"{source}: resources.cpu: {opts.cpu} CPUs per trial, but the cluster has {cpus:g}")
    if opts.gpu > 0 and gpus == 0:
        raise ConfigError(f"{source}: resources.gpu: {opts.gpu} GPU per trial, but the cluster has no GPU")


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


def run_search(loaded: LoadedSpace, opts: SearchOptions):
    """Run (or resume) the search; returns (best TrialRecord or None, interrupted?)."""
    space, exp_dir = loaded.space, opts.exp_dir.resolve()
    # Ray 2.60's default console output ignores chosen columns; the classic reporter shows them.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # num_to_keep=2 forces a state snapshot per checkpoint; that is intended, the warning is noise.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # The experiment state (what --resume restores) at most 1 s old instead of Ray's "auto" (10 s and
    # up): with num_to_keep=2 a trial's checkpoint is deleted two checkpoints later, so a snapshot
    # older than two epochs can name a deleted checkpoint, and a driver killed then resumes that
    # trial as failed ("checkpoint does not exist on storage anymore"; seen with 1-2 s epochs).
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    # One TensorBoard run per trial: the trainer's run/tb (search/trainable.py). Ray's TensorBoard
    # logger would add a second copy of every trial; its JSON and CSV loggers are kept (below).
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    objective = space.objective
    location = opts.location
    started = time.time()
    ray = start_ray(opts)
    phases = {"ray_ready": time.time()}  # wall-clock times of the session's phases (search_time.json)
    try:
        check_resources(ray, opts, str(loaded.path))
        if location.remote is None:
            check_storage_visible(ray, exp_dir.parent, str(exp_dir.parent))
        trainable = trial_worker_class(tune.with_resources(
            tune.with_parameters(run_trial, space=loaded, epochs=opts.max_epochs, num_threads=max(1, int(opts.cpu)),
                                 experiment_dir=str(exp_dir) if location.remote is None else None),
            {"cpu": opts.cpu, "gpu": opts.gpu}))
        if opts.resume:
            download(location)  # a URI experiment: its trial folders, here (the study comes with Ray's snapshot)
            for line in versions.drift(exp_dir):
                print(f"note: resuming with {line}: later trials may not compare exactly with earlier ones")
            tuner = tune.Tuner.restore(location.ray_experiment_path, trainable=trainable, resume_errored=True)
        else:
            exp_dir.mkdir(parents=True)
            shutil.copy2(loaded.path, exp_dir / "space.yaml")
            atomic_write_json(exp_dir / JUDGING_FILE, Judging(
                objective.goal, objective.resolved_targets(), objective.collapse_usage_floor,
                objective.collapse_patience).as_dict())
            atomic_write_text(exp_dir / "command.txt", f"# as invoked\n{opts.command}\n# resume\n"
                              f"{opts.command} --resume\n")
            versions.record(exp_dir)
            upload(location, ["space.yaml", JUDGING_FILE, "command.txt", versions.VERSIONS_FILE])  # it describes itself
            if objective.multi_objective:
                sampler, metric, mode = SamplerFactory("nsga2", space.seed), PARETO_METRICS, PARETO_MODES
            else:
                sampler, metric, mode = SamplerFactory(space.sampler, space.seed), "score", objective.mode
            searcher = PruningAwareOptunaSearch(
                space=DefineByRun(space.params), metric=metric, mode=mode, sampler_factory=sampler,
                # the path as given (relative to the working directory for a URI experiment's
                # results/<name>): a resume elsewhere restores the study there from Ray's snapshot
                storage=optuna.storages.RDBStorage(f"sqlite:///{opts.exp_dir / 'study.db'}"),
                study_name=exp_dir.name)
            if opts.early_stopping:
                scheduler = ASHAScheduler(time_attr="epoch", metric="score", mode=objective.mode, max_t=opts.max_epochs,
                                          grace_period=min(space.budget.grace_period, opts.max_epochs),
                                          reduction_factor=space.budget.reduction_factor)
            else:
                scheduler = FIFOScheduler()
            # the generator counts the budget in the study and reconciles a restore (search/optuna_search.py)
            search = BudgetedSearch(ConcurrencyLimiter(searcher, opts.max_concurrent) if opts.max_concurrent
                                    else searcher)
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    search_alg=search, scheduler=scheduler, num_samples=opts.num_samples,
                    trial_dirname_creator=trial_dirname,
                    # a worker process runs trial after trial: no process start, imports or data
                    # load per trial (search/trainable.py keeps each trial's files in its folder)
                    reuse_actors=True),
                run_config=tune.RunConfig(
                    name=exp_dir.name, storage_path=location.ray_storage_path,
                    # files a trial writes under its folder (run/: metrics, TensorBoard, placement)
                    # go to a URI storage too; a folder storage is the trial folder itself
                    sync_config=tune.SyncConfig(sync_artifacts=location.remote is not None),
                    stop=(CollapseStopper(objective.collapse_usage_floor, objective.collapse_patience,
                                          usage_rule=objective.goal == "health")
                          if opts.early_stopping else None),
                    failure_config=tune.FailureConfig(max_failures=space.budget.max_failures),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                    # best so far re-exported during the search from a folder experiment; a URI
                    # experiment is mirrored and exported once at the end (or on --resume)
                    callbacks=[ReconcileAfterRestore(search), JsonLoggerCallback(), CSVLoggerCallback()]
                    + ([BestSoFar(exp_dir, objective.mode)] if location.remote is None else []),
                    progress_reporter=ResultsReporter(exp_dir, opts.num_samples, objective.mode,
                                                                      metric_columns=TABLE_COLUMNS,
                                                                      max_report_frequency=30),
                    verbose=1))
        tuner.fit()
        phases["trials_done"] = time.time()
        # Ctrl-C makes fit() return early; Ray then marks the trials it stopped TERMINATED like
        # finished ones, so whether the budget ran out is read from the study (study_finished)
        interrupted = not study_finished(exp_dir, opts.num_samples)
    finally:
        ray.shutdown()
    phases["ray_stopped"] = time.time()
    download(location)  # a URI experiment: mirror the trial folders for the export and report
    if opts.resume:
        set_aside_orphans(location, study_trial_ids(exp_dir))
    best = export_best(exp_dir)
    if best is not None:
        from search.report import write_report

        print(f"report: {write_report(exp_dir)}")
    record_search_time(exp_dir, started, opts.resume, phases)
    upload(location, DRIVER_FILES)
    return best, interrupted


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
    orphans = sorted(p.parent.name for p in exp_dir.glob("*/params.json")
                     if p.parent.name.removeprefix("trial_") not in study_ids)
    if orphans:
        set_aside(location, orphans)
        print(f"{len(orphans)} trial folder(s) from before the interruption that the resumed search ran "
              f"again: moved to {location.shown}/orphaned/")
    return orphans


def record_search_time(exp_dir: Path, started: float, resumed: bool, phases: dict[str, float]) -> None:
    """search_time.json: one session per run of the search (a resumed search adds one), for
    bench/search_wall_time.py --from and bench/search_efficiency.py: wall-clock times of its
    start (before Ray), `phases` (ray_ready: Ray started; trials_done: Tune's fit returned;
    ray_stopped) and its end (the best config exported and the report written)."""
    path = exp_dir / "search_time.json"
    if not exp_dir.is_dir():
        return
    sessions = json.loads(path.read_text())["sessions"] if path.is_file() else []
    ended = time.time()
    sessions.append({"started": started, **phases, "ended": ended, "wall_s": ended - started, "resumed": resumed})
    atomic_write_json(path, {"sessions": sessions})


def format_command(argv: list[str]) -> str:
    return shlex.join(["python", "scripts/search.py", *argv])
