"""The Ray adapter: a trial's parameters in, the trainer run, one report per epoch to Ray.

Two trainers behind it. Without `trainer:` in the space, this project's JEPA (model/train.py):
the parameters become its typed config (the only dict-to-typed step of a trial). With one, the
user's function through the trainer contract (search/contract.py): the parameters as a nested
dict and a Run. Either way each report to Ray carries every metric the trainer gave plus `score`
(search/score.py: the checklist judged on the run so far plus a health margin; its value at the
trial's last epoch is the trial's objective), `score/best` (for information), `checklist/passed`,
`trial/finished` (1.0 on the trial's own last epoch, so a trial that ends without it was stopped
by ASHA or the collapse stopper) and the epoch's checkpoint.

TensorBoard: one run per trial, `run/tb`, written by one writer (two writers on one run make
TensorBoard purge steps it sees go backwards): the JEPA trainer's, or the contract's Run. This
adapter hands it `score`, `score/best` and the checklist's deciding values (`checklist/<item>`,
`checklist/passed`) each epoch, and (JEPA) the trial's parameters as TensorBoard HParams. Ray's own
TensorBoard logger is off (search/ray_env.py): no second copy of each trial.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import psutil
import ray
import yaml
from ray import tune

from model.io import atomic_write_json, atomic_write_text

from search import metrics
from search.export import read_jsonl
from search.judge import can_still_pass, checklist, sign
from search.race import RACE_KEY
from search.score import diverged_score, objective_score
from search.space import LoadedSpace


WORKER_KEY = "__worker__"  # search/runner.py's TrialWorker hands run_trial its worker's record under this key


class TrialScorer:
    """A trial's objective, epoch by epoch, judged on its whole history so far against its whole
    budget ("ran all epochs" passes only at the trial's last epoch, so a trial stopped by ASHA
    never outranks one that ran its budget on that item): the score, the best score so far and
    the checklist's deciding values."""

    def __init__(self, objective, epochs: int):
        self.objective, self.epochs, self.targets = objective, epochs, objective.resolved_targets()
        self.better = sign(objective.mode)
        self.best = -self.better * math.inf
        self.latest: dict[str, float] = {}

    def __call__(self, history: list[dict]) -> dict[str, float]:
        score = objective_score(history, self.epochs, self.objective)
        self.best = max(self.best, score) if self.better > 0 else min(self.best, score)
        items = checklist(history, self.epochs, self.targets)
        values = {f"checklist/{k}": float(i["value"]) for k, i in items.items() if isinstance(i["value"], (int, float))}
        # checklist/can_pass: the items this trial can still pass when it ends (the final race's bound)
        self.latest = {"score": score, "score/best": self.best,
                       "checklist/passed": float(sum(i["pass"] is True for i in items.values())),
                       "checklist/can_pass": float(can_still_pass(items))}
        return {**self.latest, **values}

    def report(self, metrics: dict, checkpoint_dir: Path | None, final: bool, history: list[dict] | None = None) -> None:
        """tune.report of the epoch with the score computed for it, and its checkpoint, whose
        metadata names the epoch it belongs to and, given `history` (a contract trial's; the JEPA's
        checkpoint holds its own), the history up to it: a contract trial restored on another node
        (a lost node, a resume elsewhere) finds no metrics.jsonl of its own there."""
        checkpoint = tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        if checkpoint is not None:
            checkpoint.set_metadata({"epoch": metrics["epoch"], **({"history": history} if history is not None else {})})
        tune.report({**metrics, **self.latest, "trial/finished": float(final), "trial/diverged": 0.0},
                    checkpoint=checkpoint)

    def diverged(self, epoch: int) -> None:
        """One last report for a trial whose trainer diverged, so the search records it and moves on."""
        score = diverged_score(self.objective.goal)
        tune.report({"epoch": epoch, "score": score, "score/best": self.best if math.isfinite(self.best) else score,
                     "trial/finished": 1.0, "trial/diverged": 1.0, "val/loss": math.nan, "train/loss": math.nan})


def run_trial(config: dict, *, space: LoadedSpace, epochs: int, num_threads: int,
              experiment_dir: str | None) -> None:
    """Ray Tune function trainable for one trial of `space` with sampled params `config`.

    A worker process runs trial after trial (Ray's reuse_actors): everything here is per trial
    (model, optimiser, generators, TensorBoard writer, log handler, working checkpoint; the
    trainer sets torch's thread count), and the trial's files go to its own folder (trial_folder).
    `config` may carry the worker's record under WORKER_KEY: when it took this trial (its process
    start for its first trial, the reset for a later one) and how many trials it has run."""
    config = dict(config)
    worker = config.pop(WORKER_KEY, None) or {"assigned": psutil.Process().create_time(), "trials": 1}
    race = config.pop(RACE_KEY, None)  # a final-race run (search/race.py): a finalist's params on a fresh seed
    seed = None
    if race is not None:
        config, seed = dict(race["params"]), int(race["seed"])
    context = tune.get_context()
    run_dir = trial_folder(context.get_trial_dir(), experiment_dir) / "run"
    placement = {"node_id": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(),
                 "pid": os.getpid(), "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
                 "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                 "num_threads": num_threads, "process_start": psutil.Process().create_time(),
                 "worker_assigned": worker["assigned"], "worker_trials": worker["trials"],
                 "start": time.time()}
    atomic_write_json(run_dir / "placement.json", placement)  # where and when this trial ran
    _checkpoint_lines_to_file(run_dir / "checkpoints.log")
    scorer = TrialScorer(space.space.objective, epochs)

    def reported(metrics: dict, checkpoint_dir: Path | None, final: bool, history: list[dict] | None = None) -> None:
        atomic_write_json(run_dir / "placement.json", {**placement, "end": time.time()})  # time of the latest report
        scorer.report(metrics, checkpoint_dir, final, history)

    # The working checkpoint lives outside the trial folder, which Ray syncs to storage while the
    # trainer writes; Ray keeps the reported checkpoints (checkpoint_0000NN) there itself.
    restored = working_checkpoint_dir(context.get_trial_id())
    checkpoint = tune.get_checkpoint()
    try:
        if checkpoint is not None:  # restored by Ray (retry, Tuner.restore)
            with checkpoint.as_directory() as d:
                shutil.copytree(d, restored, dirs_exist_ok=True)
        if space.trainer is None:
            _train_jepa(config, space, epochs, num_threads, context.get_trial_id(), run_dir, restored, scorer, reported,
                        seed)
        else:
            _train_contract(config, space, epochs, context.get_trial_id(), run_dir,
                            restored if checkpoint is not None else None, checkpoint, scorer, reported,
                            space.space.seed if seed is None else seed)
    finally:
        shutil.rmtree(restored, ignore_errors=True)


WORKING_PREFIX = "arc-jepa-ckpt-"


def working_checkpoint_dir(trial_id: str) -> Path:
    """A new temporary folder for a trial's working checkpoint, named by the trial and this
    process. A process killed with SIGKILL (a killed worker, a lost node, a killed driver's trials)
    never removes its folder, so each new one first removes those of processes that are gone."""
    temp = Path(tempfile.gettempdir())
    for old in temp.glob(f"{WORKING_PREFIX}*"):
        try:
            pid = int(old.name[len(WORKING_PREFIX):].split("-")[0])
        except ValueError:
            continue
        if not psutil.pid_exists(pid):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{WORKING_PREFIX}{os.getpid()}-{trial_id}-", dir=temp))


def _train_jepa(config: dict, space: LoadedSpace, epochs: int, num_threads: int, trial_id: str, run_dir: Path,
                checkpoint_dir: Path, scorer: TrialScorer, reported, seed: int | None) -> None:
    """The JEPA trainer (model/train.py), its working checkpoint in `checkpoint_dir` (Ray's restored
    one, if any); `seed` replaces the base config's (None: a trial of the exploration keeps it)."""
    from model.train import train  # imported in the trial process

    cfg = space.trial_config(config, epochs=epochs, name=trial_id, num_threads=num_threads, seed=seed)
    result = train(cfg, run_dir, on_epoch=reported, checkpoint_dir=checkpoint_dir,
                   extra_scalars=lambda history, final: scorer(history),
                   hparams=config, hparam_metrics=metrics.hparam_names())
    if result.status == "diverged":
        scorer.diverged(result.epochs + 1)


def _train_contract(config: dict, space: LoadedSpace, epochs: int, trial_id: str, run_dir: Path,
                    restored: Path | None, checkpoint, scorer: TrialScorer, reported, seed: int) -> None:
    """A user's trainer through the contract (search/contract.py): the parameters as a nested dict,
    a Run whose reports are scored and go to Ray with their checkpoint. A restored trial resumes
    its history at the restored checkpoint's epoch (Checkpoint metadata `epoch`)."""
    from search.contract import Diverged, Run, TrainerError, load_trainer, run_file

    if space.trainer_root not in sys.path:
        sys.path.insert(0, space.trainer_root)  # the folder the search runs in: the trainer imports from there
    trainer = load_trainer(space.trainer, "trainer")
    nested = space.contract_config(config)
    atomic_write_text(run_dir / "config.yaml",
                      yaml.safe_dump(run_file(space.trainer, trial_id, seed, epochs, nested, space.metric_names),
                                     sort_keys=False))
    metadata = (checkpoint.get_metadata() or {}) if checkpoint is not None else {}
    kept = int(metadata.get("epoch", 0))  # a retry without a checkpoint starts over
    # the checkpoint's own history (older checkpoints have none: this node's metrics.jsonl)
    history = metadata.get("history") or read_jsonl(run_dir / "metrics.jsonl")[:kept]

    # each report's checkpoint carries the run's history so far (Run.report appends before it sends)
    run = Run(space.trainer, epochs, seed, run_dir, restored, history, score=scorer,
              send=lambda row, checkpoint_dir, final: reported(row, checkpoint_dir, final, run.history),
              names=space.metric_names)
    diverged = None
    try:
        trainer(nested, run)
    except Diverged as e:  # an infinite value or a NaN loss: recorded as the JEPA's NaN is
        diverged = e
    finally:
        run.close(diverged=diverged is not None)
    if diverged is not None:
        scorer.diverged(diverged.epoch)
    elif len(run.history) == kept < epochs:
        raise TrainerError(f"{space.trainer} returned without calling run.report: a trainer reports its metrics "
                           f"once per epoch, run.report({{'val/loss': ..., ...}}), up to run.epochs ({epochs}) times")


def trial_folder(ray_trial_dir: str, experiment_dir: str | None) -> Path:
    """Where this trial's files go: its own folder, whichever trial the worker ran before.

    Ray 2.60 names a different folder for a reused worker's later trials (the trial's working
    directory instead of the driver's staging folder), so the folder Ray reports is only used
    for the trial folder's name. A folder experiment (`experiment_dir`, a path every node sees;
    search/runner.py checks it) gets the files in the trial's folder there directly. A bucket
    experiment gets them in Ray's per-trial working directory, which Ray makes the process's
    working directory and uploads to the trial's folder in the bucket with each checkpoint
    (SyncConfig(sync_artifacts=True))."""
    name = Path(ray_trial_dir).name
    if experiment_dir is not None:
        return Path(experiment_dir) / name
    working = Path.cwd()
    if working.name != name:
        raise RuntimeError(f"the trial's working directory is {working}, not the trial's own ({name}): a bucket "
                           "experiment needs Ray to change into it (unset RAY_CHDIR_TO_TRIAL_DIR)")
    return working


def _checkpoint_lines_to_file(path: Path) -> None:
    """Ray logs "Checkpoint successfully created at: ..." for every report: one console line per
    trial-epoch. Keep those lines in the trial's run/checkpoints.log, off the search's console
    (a reused worker's previous trial's file is closed)."""
    storage_logger = logging.getLogger("ray.train._internal.storage")
    for old in storage_logger.handlers:
        old.close()
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    storage_logger.handlers = [handler]
    storage_logger.propagate = False
    storage_logger.setLevel(logging.INFO)
