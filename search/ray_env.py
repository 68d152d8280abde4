"""The environment Ray and Tune read, in one place. `apply()` runs before Ray is imported (some
of these are read when Ray is imported); a value already in the environment wins (setdefault).
"""

from __future__ import annotations

import os

RAY_ENV = {
    # Ray 2.60's default console output ignores the reporter's chosen columns; the classic one shows them.
    "RAY_AIR_NEW_OUTPUT": "0",
    # num_to_keep=2 forces an experiment snapshot per checkpoint: intended, so the warning is noise.
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    # The experiment state (what --resume restores) at most 1 s old instead of Ray's "auto" (10 s
    # and up): with num_to_keep=2 a trial's checkpoint is deleted two checkpoints later, so an older
    # snapshot can name a deleted checkpoint, and a killed driver then resumes that trial as failed
    # ("checkpoint does not exist on storage anymore"; seen with 1-2 s epochs).
    "TUNE_GLOBAL_CHECKPOINT_S": "1",
    # One TensorBoard run per trial, the trainer's run/tb (search/trainable.py): Ray's own TensorBoard
    # logger would add a second copy of every trial (its JSON and CSV loggers are added by the runner).
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    # Every trial's epoch line on the console: Ray folds lines that look alike from different
    # workers into "[repeated Nx across cluster]", hiding one trial's progress behind another's.
    "RAY_DEDUP_LOGS": "0",
}


def apply(joining_cluster: bool) -> None:
    """Set RAY_ENV; when joining a cluster, also RAY_AUTH_MODE=token: `ray start` in 2.60 turns
    token auth on, but a client sends its token only in that mode (a cluster without auth:
    export RAY_AUTH_MODE=disabled). Call before `import ray`."""
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    if joining_cluster:
        os.environ.setdefault("RAY_AUTH_MODE", "token")


def allow_pending_trials(slots: int) -> None:
    """How many trials Ray Tune starts at once (TUNE_MAX_PENDING_TRIALS_PG, read when fit()
    starts). With a searcher and no ConcurrencyLimiter, Tune's "auto" is 1: the second trial is
    created only when the first one's worker is up (~2 s here), so trials start one after
    another. `slots`: the trials the cluster holds at once. A value already set wins."""
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(max(1, slots)))
