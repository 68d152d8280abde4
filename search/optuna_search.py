"""OptunaSearch with two repairs for long, interruptible searches.

1. Trials stopped early are PRUNED, not COMPLETE. Ray's OptunaSearch tells the study COMPLETE
   with whatever the last result said, so a trial ASHA stopped at its first rung enters TPE as
   if its low-fidelity score were final. Here a trial whose last result lacks `trial/finished`
   (the trainer's own last epoch) is told PRUNED; its per-epoch values (step = epoch) stay in
   the study as intermediate values.
2. No duplicate or lost trials after the driver is killed. The study lives in SQLite and is
   written at once; Ray snapshots the searcher and the experiment now and then (every 10 s or
   more). A trial asked after the last snapshot is in the study (RUNNING) but unknown to the
   restored search, which will ask for one more trial to fill the budget. That next
   suggestion adopts the orphan (same study trial, same params) instead of asking a new one.
   And the snapshot's sampler random state can be older than the study, so the restored
   sampler would draw again the parameters it drew before the kill. On restore the sampler is
   replaced by a fresh one of the same kind, seeded with (space seed + trials in the study):
   deterministic for a given study, and never a replay.

The study's objectives carry the metric names (`score`; or codebook/usage, rank/context,
val/loss), so optuna-dashboard and `optuna.load_study(...).metric_names` say what they are.
"""

from __future__ import annotations

import warnings

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch


class SamplerFactory:
    """Picklable recipe for the study's sampler: kind and seed, plus an offset on restore."""

    def __init__(self, kind: str, seed: int):
        self.kind, self.seed = kind, seed

    def __call__(self, offset: int = 0) -> optuna.samplers.BaseSampler:
        cls = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
               "nsga2": optuna.samplers.NSGAIISampler}[self.kind]
        return cls(seed=self.seed + offset)


class PruningAwareOptunaSearch(OptunaSearch):
    def __init__(self, *args, sampler_factory: SamplerFactory, **kwargs):
        super().__init__(*args, sampler=sampler_factory(), **kwargs)
        self._sampler_factory = sampler_factory

    def _setup_study(self, mode):
        super()._setup_study(mode)
        names = list(self._metric) if isinstance(self._metric, list) else [self._metric]
        with warnings.catch_warnings():  # set_metric_names is marked experimental in Optuna 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._ot_study.set_metric_names(names)

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        sampler = self._sampler_factory(offset=len(self._ot_study.trials))
        self._sampler = self._ot_study.sampler = sampler

    def suggest(self, trial_id: str) -> dict | None:
        if trial_id not in self._ot_trials:
            orphan = self._unclaimed_running_trial()
            if orphan is not None:
                self._ot_trials[trial_id] = optuna.trial.Trial(self._ot_study, orphan._trial_id)
        params = super().suggest(trial_id)
        self._ot_trials[trial_id].set_user_attr("ray_trial_id", trial_id)
        return params

    def _unclaimed_running_trial(self):
        claimed = {t._trial_id for t in self._ot_trials.values()}
        for frozen in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if frozen._trial_id not in claimed:
                return frozen
        return None

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if isinstance(self.metric, list):
            return  # Optuna keeps no intermediate values for multi-objective studies
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        trial = self._ot_trials[trial_id]
        step = int(result["epoch"])
        if step not in trial.storage.get_trial(trial._trial_id).intermediate_values:
            trial.report(result[self.metric], step)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        if result and isinstance(self.metric, str) and self.metric in result:
            self.on_trial_result(trial_id, result)  # Ray passes the last result here, not to on_trial_result
        if result and isinstance(self.metric, list) and not all(
                isinstance(result.get(m), (int, float)) and result[m] == result[m] for m in self.metric):
            result, error = None, True  # a diverged trial has no usable values: recorded as FAIL
        if result and not error and not result.get("trial/finished"):
            self._ot_study.tell(self._ot_trials[trial_id], state=TrialState.PRUNED)
            self._completed_trials.add(trial_id)
            return
        super().on_trial_complete(trial_id, result, error)
