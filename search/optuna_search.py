"""OptunaSearch with two repairs for long, interruptible searches.

1. Trials stopped early are PRUNED, not COMPLETE. Ray's OptunaSearch tells the study COMPLETE
   with whatever the last result said, so a trial ASHA stopped at its first rung enters TPE as
   if its low-fidelity score were final. Here a trial whose last result lacks `trial/finished`
   (the trainer's own last epoch) is told PRUNED; its per-epoch values (step = epoch) stay in
   the study as intermediate values.
2. No duplicate or lost trials after the driver is killed. The study lives in SQLite and is
   written at once; Ray snapshots the searcher and the experiment together, now and then. A
   trial asked after the last snapshot is in the study (RUNNING) but unknown to the restored
   search, which will ask for one more trial to fill the budget. That next suggestion adopts
   the orphan (same study trial, same params) instead of asking a new one.
"""

from __future__ import annotations

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch


class PruningAwareOptunaSearch(OptunaSearch):
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
