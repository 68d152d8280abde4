"""The Ray adapter: Ray's config dict in, the trainer's typed config out, one report per epoch.

This is the only place a trial touches dicts. Each report carries every trainer metric plus
`score` (search/score.py; its value at the trial's last epoch is the trial's objective),
`score/best` (best score so far, for information), `trial/finished` (1.0 on the trainer's own last epoch, so a trial that
ends without it was stopped by ASHA or the collapse stopper) and a checkpoint, so ASHA can
pause a trial and Ray can resume it.
"""

from __future__ import annotations

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

from search.score import DIVERGED_SCORE, epoch_score
from search.space import LoadedSpace


def run_trial(config: dict, *, space: LoadedSpace, epochs: int, num_threads: int) -> None:
    """Ray Tune function trainable for one trial of `space` with sampled params `config`."""
    from model.train import train  # imported in the trial process

    context = tune.get_context()
    cfg = space.trial_config(config, epochs=epochs, name=context.get_trial_id(), num_threads=num_threads)
    run_dir = Path(context.get_trial_dir()) / "run"
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
                 "start": time.time()}
    atomic_write_json(run_dir / "placement.json", placement)  # where and when this trial ran
    best = {"score": -math.inf}

    def report(metrics: dict, checkpoint_dir: Path, final: bool) -> None:
        score = epoch_score(metrics, space.space.objective)
        best["score"] = max(best["score"], score)
        atomic_write_json(run_dir / "placement.json", {**placement, "end": time.time()})  # latest report
        tune.report({**metrics, "score": score, "score/best": best["score"], "trial/finished": float(final),
                     "trial/diverged": 0.0},
                    checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))

    try:
        result = train(cfg, run_dir, on_epoch=report, checkpoint_dir=checkpoint_dir)
    finally:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    if result.status == "diverged":  # one last report so the search records it and moves on
        epoch = result.epochs + 1
        tune.report({"epoch": epoch, "score": DIVERGED_SCORE, "score/best": max(best["score"], DIVERGED_SCORE),
                     "trial/finished": 1.0, "trial/diverged": 1.0, "val/loss": math.nan,
                     "train/loss": math.nan})
