"""The Ray adapter: Ray's config dict in, the trainer's typed config out, one report per epoch.

This is the only place a trial touches dicts. Each report carries every trainer metric plus
`score` (search/score.py), `score/best` (best score so far: the trial's objective, as the
tuning playbook asks), `trial/finished` (1.0 on the trainer's own last epoch, so a trial that
ends without it was stopped by ASHA or the collapse stopper) and a checkpoint, so ASHA can
pause a trial and Ray can resume it.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import time
from pathlib import Path

import ray
from ray import tune

from model.io import atomic_write_json

from search.score import DIVERGED_SCORE, composite_score
from search.space import LoadedSpace


def run_trial(config: dict, *, space: LoadedSpace, epochs: int, num_threads: int) -> None:
    """Ray Tune function trainable for one trial of `space` with sampled params `config`."""
    from model.train import train  # imported in the trial process

    context = tune.get_context()
    cfg = space.trial_config(config, epochs=epochs, name=context.get_trial_id(), num_threads=num_threads)
    run_dir = Path(context.get_trial_dir()) / "run"
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # restored by Ray (pause/resume, retry, Tuner.restore)
        with checkpoint.as_directory() as d:
            (run_dir / "checkpoint").mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(d) / "state.pt", run_dir / "checkpoint" / "state.pt")
    elif (run_dir / "checkpoint").exists():  # a retry with no reported checkpoint: start over
        shutil.rmtree(run_dir / "checkpoint")
    placement = {"node_id": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(),
                 "pid": os.getpid(), "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
                 "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                 "num_threads": num_threads, "start": time.time()}
    atomic_write_json(run_dir / "placement.json", placement)  # where and when this trial ran
    objective = space.space.objective.model_dump(exclude={"collapse_usage_floor", "collapse_patience"})
    best = {"score": -math.inf}

    def report(metrics: dict, checkpoint_dir: Path, final: bool) -> None:
        score = composite_score(metrics["codebook/usage"], metrics["rank/context"],
                                metrics["rank/target"], metrics["val/loss"], **objective)
        best["score"] = max(best["score"], score)
        atomic_write_json(run_dir / "placement.json", {**placement, "end": time.time()})  # latest report
        tune.report({**metrics, "score": score, "score/best": best["score"], "trial/finished": float(final),
                     "trial/diverged": 0.0},
                    checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))

    result = train(cfg, run_dir, on_epoch=report)
    if result.status == "diverged":  # one last report so the search records it and moves on
        epoch = result.epochs + 1
        tune.report({"epoch": epoch, "score": DIVERGED_SCORE, "score/best": max(best["score"], DIVERGED_SCORE),
                     "trial/finished": 1.0, "trial/diverged": 1.0, "val/loss": math.nan,
                     "train/loss": math.nan})
