"""OptunaSearch that records trials stopped early as PRUNED, not COMPLETE.

Ray's OptunaSearch tells the study COMPLETE with whatever the last result said, so a trial
ASHA stopped at its first rung enters TPE as if its low-fidelity score were final. Here a
trial whose last result lacks `trial/finished` (the trainer's own last epoch) is told PRUNED;
its intermediate values (reported every epoch, step = epoch) stay in the study.
"""

from __future__ import annotations

from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch


class PruningAwareOptunaSearch(OptunaSearch):
    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        trial = self._ot_trials[trial_id]
        step = int(result["epoch"])
        if step not in trial.storage.get_trial(trial._trial_id).intermediate_values:
            trial.report(result[self.metric], step)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        if result and self.metric in result:  # Ray passes the last result here, not to on_trial_result
            self.on_trial_result(trial_id, result)
        if result and not error and not result.get("trial/finished"):
            self._ot_study.tell(self._ot_trials[trial_id], state=TrialState.PRUNED)
            self._completed_trials.add(trial_id)
            return
        super().on_trial_complete(trial_id, result, error)
