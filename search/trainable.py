"""The Ray adapter: Ray's config dict in, the trainer's typed config out, one report per epoch.

This is the only place a trial touches dicts. Each report carries every trainer metric plus
`score` (search/score.py: the checklist judged on the run so far plus a health margin; its value
at the trial's last epoch is the trial's objective), `checklist/passed`,
`score/best` (best score so far, for information), `trial/finished` (1.0 on the trainer's own last epoch, so a trial that
ends without it was stopped by ASHA or the collapse stopper) and a checkpoint, so ASHA can
pause a trial and Ray can resume it.

TensorBoard: one run per trial, the trainer's `run/tb`, written by the trainer's one writer (two
writers on one run make TensorBoard purge steps it sees go backwards). This adapter hands it
`score`, `score/best` and the checklist's deciding values (`checklist/<item>`, `checklist/passed`)
for each epoch, and the trial's parameters as TensorBoard HParams, so trials can be compared by
parameter. Ray's own TensorBoard logger is off (search/runner.py): no second copy of each trial.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

import psutil
import ray
from ray import tune

from model.io import atomic_write_json

from search.checklist import evaluate_checklist
from search.export import read_jsonl
from search.score import diverged_score, objective_score
from search.space import LoadedSpace


WORKER_KEY = "__worker__"  # search/runner.py's TrialWorker hands run_trial its worker's record under this key


def run_trial(config: dict, *, space: LoadedSpace, epochs: int, num_threads: int,
              experiment_dir: str | None) -> None:
    """Ray Tune function trainable for one trial of `space` with sampled params `config`.

    A worker process runs trial after trial (Ray's reuse_actors): everything here is per trial
    (model, optimiser, generators, TensorBoard writer, log handler, working checkpoint; the
    trainer sets torch's thread count), and the trial's files go to its own folder (trial_folder).
    `config` may carry the worker's record under WORKER_KEY: when it took this trial (its process
    start for its first trial, the reset for a later one) and how many trials it has run."""
    from model.train import train  # imported in the trial process

    config = dict(config)
    worker = config.pop(WORKER_KEY, None) or {"assigned": psutil.Process().create_time(), "trials": 1}
    context = tune.get_context()
    cfg = space.trial_config(config, epochs=epochs, name=context.get_trial_id(), num_threads=num_threads)
    run_dir = trial_folder(context.get_trial_dir(), experiment_dir) / "run"
    # The working checkpoint lives outside the trial folder, which Ray syncs to storage while the
    # trainer writes; Ray keeps the reported checkpoints (checkpoint_0000NN) there itself.
    checkpoint_dir = Path(tempfile.mkdtemp(prefix=f"ckpt-{context.get_trial_id()}-"))
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # restored by Ray (retry, Tuner.restore)
        with checkpoint.as_directory() as d:
            shutil.copy2(Path(d) / "state.pt", checkpoint_dir / "state.pt")
    placement = {"node_id": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(),
                 "pid": os.getpid(), "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
                 "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                 "num_threads": num_threads, "process_start": psutil.Process().create_time(),
                 "worker_assigned": worker["assigned"], "worker_trials": worker["trials"],
                 "start": time.time()}
    atomic_write_json(run_dir / "placement.json", placement)  # where and when this trial ran
    _checkpoint_lines_to_file(run_dir / "checkpoints.log")
    objective = space.space.objective
    targets = objective.resolved_targets()
    sign = 1 if objective.mode == "max" else -1
    best = {"score": -sign * math.inf}
    latest = {}

    def scalars(metrics: dict, final: bool) -> dict[str, float]:
        """This epoch's score (judged on the whole run so far, search/score.py), score/best and the
        checklist's deciding values, for the trainer's TensorBoard run and this epoch's report."""
        history = read_jsonl(run_dir / "metrics.jsonl")  # the whole run so far, a restored one too
        # judged against the whole budget: "ran all epochs" passes only at the trial's last epoch,
        # so a trial stopped by ASHA never outranks one that ran its budget on that item
        score = objective_score(history, epochs, objective)
        best["score"] = max(best["score"], score) if sign > 0 else min(best["score"], score)
        items = evaluate_checklist(history, epochs, targets)
        values = {f"checklist/{k}": float(i["value"]) for k, i in items.items()
                  if isinstance(i["value"], (int, float))}
        latest.update(score=score, passed=float(sum(i["pass"] for i in items.values())))
        return {"score": score, "score/best": best["score"], **values, "checklist/passed": latest["passed"]}

    def report(metrics: dict, checkpoint_dir: Path, final: bool) -> None:
        atomic_write_json(run_dir / "placement.json", {**placement, "end": time.time()})  # latest report
        tune.report({**metrics, "score": latest["score"], "score/best": best["score"],
                     "checklist/passed": latest["passed"], "trial/finished": float(final), "trial/diverged": 0.0},
                    checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))

    try:
        result = train(cfg, run_dir, on_epoch=report, checkpoint_dir=checkpoint_dir, extra_scalars=scalars,
                       hparams=config)
    finally:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    if result.status == "diverged":  # one last report so the search records it and moves on
        epoch = result.epochs + 1
        score = diverged_score(objective.goal)
        tune.report({"epoch": epoch, "score": score, "score/best": best["score"] if math.isfinite(best["score"]) else score,
                     "trial/finished": 1.0, "trial/diverged": 1.0, "val/loss": math.nan,
                     "train/loss": math.nan})



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
