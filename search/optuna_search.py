"""OptunaSearch with two repairs for long, interruptible searches.

1. Trials stopped early are PRUNED, not COMPLETE. Ray's OptunaSearch tells the study COMPLETE
   with whatever the last result said, so a trial ASHA stopped at its first rung enters TPE as
   if its low-fidelity score were final. Here a trial whose last result lacks `trial/finished`
   (the trainer's own last epoch) is told PRUNED; its per-epoch values (step = epoch) stay in
   the study as intermediate values.
2. A resumed search agrees with the trials Ray restored. Ray snapshots the experiment (its
   trial list), the search generator (trials created so far) and this searcher as separate
   files, uploaded together but not atomically: a driver killed mid-upload (frequent with a
   bucket, where the upload takes a while) leaves files from different moments. Seen in real
   SIGKILL runs: a generator older than the trial list created two trials too many, and an
   older sampler drew their parameters again (5 trials for a budget of 3, two pairs identical).
   So:
   - the study travels in this searcher's snapshot (a consistent copy of its SQLite file,
     `sqlite3.Connection.serialize`) and comes back with it: study and sampler from one
     moment, and a resume on another machine needs nothing else;
   - BudgetedSearch (the generator) counts the budget in the searcher's trials, not in its own
     counter, and after a restore waits for Ray's restored trial list (a callback's first
     step) to reconcile: Ray's trials the searcher does not know join the study with their
     parameters (and their result if they ended); the searcher's trials Ray does not know
     are lost: one still RUNNING in the study gives its parameters to the next new trial (it is
     run again, not asked twice), one the study already finished stays (it counts, its folder
     too); trials Ray restored as ended are told to the study if it missed their end.
   Each trial folder of the experiment then has one study trial with its id (user attribute
   `ray_trial_id`); folders without one are set aside by the runner (search/runner.py).

The study's objectives carry the metric names (`score`; or codebook/usage, rank/context,
val/loss), so optuna-dashboard and `optuna.load_study(...).metric_names` say what they are.
"""

from __future__ import annotations

import pickle
import sqlite3
import warnings
from contextlib import closing
from pathlib import Path

import optuna
from optuna.samplers._lazy_random_state import LazyRandomState  # the samplers' own random streams
from optuna.trial import TrialState
from ray.tune import Callback
from ray.tune.experiment import Trial
from ray.tune.search import SearchGenerator
from ray.tune.search.optuna import OptunaSearch


class SamplerFactory:
    """Picklable recipe for the study's sampler: its kind and seed, and how to carry its random
    streams across a snapshot.

    A live sampler is never pickled: NSGAIISampler holds a thread lock since Optuna 5.1 (and any
    sampler may grow one), so the searcher's snapshot keeps the recipe plus the sampler's random
    streams (`random_state`), and a restore builds a fresh sampler of the same kind and seed
    and puts the streams back (`build`). The restored sampler then draws exactly what the
    uninterrupted one would have drawn next; its caches are rebuilt from the study."""

    KINDS = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
             "nsga2": optuna.samplers.NSGAIISampler}

    def __init__(self, kind: str, seed: int):
        if kind not in self.KINDS:
            raise ValueError(f"unknown sampler {kind!r} (allowed: {', '.join(self.KINDS)})")
        self.kind, self.seed = kind, seed

    def __call__(self) -> optuna.samplers.BaseSampler:
        return self.KINDS[self.kind](seed=self.seed)

    def build(self, streams: dict[str, LazyRandomState] | None = None) -> optuna.samplers.BaseSampler:
        """A fresh sampler of this kind and seed, its random streams replaced by `streams`
        (random_state's output, from a snapshot) when given."""
        sampler = self()
        for path, stream in (streams or {}).items():
            *parents, leaf = path.split(".")
            owner = sampler
            for name in parents:
                owner = getattr(owner, name)
            setattr(owner, leaf, stream)
        return sampler

    @staticmethod
    def random_state(sampler: optuna.samplers.BaseSampler) -> dict[str, LazyRandomState]:
        """The sampler's random streams by attribute path ({"_rng": ..., "_random_sampler._rng": ...}):
        every LazyRandomState on the sampler and on the sampler parts it holds (NSGA-II's strategies,
        TPE's and NSGA-II's inner RandomSampler). Picklable; pickled together, streams two parts
        share stay shared."""
        found: dict[str, LazyRandomState] = {}

        def walk(obj, prefix: str, depth: int) -> None:
            for name, value in vars(obj).items():
                if isinstance(value, LazyRandomState):
                    found[prefix + name] = value
                elif depth < 3 and type(value).__module__.startswith("optuna.samplers") and hasattr(value, "__dict__"):
                    walk(value, f"{prefix}{name}.", depth + 1)

        walk(sampler, "", 0)
        return found


SNAPSHOT_KEY = "_study_sqlite"  # the study's SQLite file, in the searcher's snapshot


class PruningAwareOptunaSearch(OptunaSearch):
    # Live objects the pickled state never holds (a sampler may hold a thread lock): rebuilt on
    # unpickling from the sampler recipe, the sampler's random streams and the study's storage.
    _LIVE = ("_sampler", "_ot_study", "_ot_trials")

    def __init__(self, *args, sampler_factory: SamplerFactory, **kwargs):
        self._sampler_factory = sampler_factory
        super().__init__(*args, sampler=sampler_factory(), **kwargs)
        self._rerun: list[int] = []  # study trials lost by Ray while RUNNING: the next new trials run them

    def _setup_study(self, mode):
        super()._setup_study(mode)
        names = list(self._metric) if isinstance(self._metric, list) else [self._metric]
        with warnings.catch_warnings():  # set_metric_names is marked experimental in Optuna 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._ot_study.set_metric_names(names)

    # ---- pickling: Tuner's tuner.pkl pickles the searcher; Ray's snapshots pickle its state (save)

    def _portable_state(self) -> dict:
        """Everything but the live objects: the study trials as ids, the sampler as its streams."""
        state = {k: v for k, v in self.__dict__.items() if k not in self._LIVE}
        state["_ot_trial_ids"] = {rid: t._trial_id for rid, t in self._ot_trials.items()}
        state["_sampler_streams"] = SamplerFactory.random_state(self._sampler)
        return state

    def _revive(self, state: dict) -> None:
        """The inverse of _portable_state: a fresh sampler of the recipe's kind and seed with the
        saved streams, the study loaded from its storage, the study trials re-attached by id."""
        state = dict(state)
        if "_ot_trials" in state:  # a snapshot from before this format: live sampler and study in it
            state["_ot_trial_ids"] = {rid: t._trial_id for rid, t in state["_ot_trials"].items()}
            state["_sampler_streams"] = SamplerFactory.random_state(state["_sampler"])
            kind = next(k for k, cls in SamplerFactory.KINDS.items() if isinstance(state["_sampler"], cls))
            state.setdefault("_sampler_factory", SamplerFactory(kind, self._sampler_factory.seed))
            state = {k: v for k, v in state.items() if k not in self._LIVE}
        trial_ids, streams = state.pop("_ot_trial_ids"), state.pop("_sampler_streams")
        self.__dict__.update(state)
        self.__dict__.setdefault("_rerun", [])
        self._sampler = self._sampler_factory.build(streams)
        self._setup_study(self._mode)  # loads the study (load_if_exists) with the rebuilt sampler
        self._ot_trials = {rid: optuna.trial.Trial(self._ot_study, tid) for rid, tid in trial_ids.items()}

    def __getstate__(self) -> dict:
        return self._portable_state()

    def __setstate__(self, state: dict) -> None:
        self._revive(state)

    def _sqlite_file(self) -> Path | None:
        """The study's SQLite file (relative to the working directory if its URL is), or None."""
        url = getattr(self._storage, "url", None)
        return Path(url.removeprefix("sqlite:///")) if isinstance(url, str) and url.startswith("sqlite:///") else None

    def save(self, checkpoint_path: str) -> None:
        """Ray's snapshot of the searcher: its portable state, plus the study's SQLite file."""
        state = self._portable_state()
        db = self._sqlite_file()
        if db is not None and db.is_file():
            with closing(sqlite3.connect(db)) as conn:
                state[SNAPSHOT_KEY] = conn.serialize()  # a consistent copy, even mid-write
        with open(checkpoint_path, "wb") as f:
            pickle.dump(state, f)

    def restore(self, checkpoint_path: str) -> None:
        """Put the snapshot's study file back first, then rebuild the live objects on it."""
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        snapshot = state.pop(SNAPSHOT_KEY, None)
        self._storage = state.get("_storage", self._storage)
        db = self._sqlite_file()
        if snapshot is not None and db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
            with closing(sqlite3.connect(":memory:")) as source, closing(sqlite3.connect(db)) as target:
                source.deserialize(snapshot)
                source.backup(target)  # replaces the file's content under SQLite's own locking
        self._revive(state)

    def suggest(self, trial_id: str) -> dict | None:
        if trial_id not in self._ot_trials and self._rerun:  # a lost trial's parameters, run again
            self._ot_trials[trial_id] = optuna.trial.Trial(self._ot_study, self._rerun.pop(0))
        params = super().suggest(trial_id)
        if trial_id in self._ot_trials:  # the Ray trial's id on its study trial (report, optuna-dashboard)
            self._ot_trials[trial_id].set_user_attr("ray_trial_id", trial_id)
        return params

    @property
    def trials_in_budget(self) -> int:
        """Trials of the search so far: Ray's, and any the study finished that Ray forgot."""
        return len(self._ot_trials)

    def reconcile(self, trials: list) -> tuple[list[str], list[str]]:
        """After a restore: make the study agree with the trials Ray restored (ray.tune Trial
        objects: trial_id, config). Returns (lost: known here, not to Ray; adopted: the reverse)."""
        ray_ids = {t.trial_id for t in trials}
        lost = [rid for rid in self._ot_trials if rid not in ray_ids]
        for rid in lost:
            trial = self._ot_trials[rid]
            if trial.storage.get_trial(trial._trial_id).state == TrialState.RUNNING:
                self._rerun.append(self._ot_trials.pop(rid)._trial_id)
        adopted = [t for t in trials if t.trial_id not in self._ot_trials]  # created after this snapshot
        for t in adopted:
            self._ot_study.enqueue_trial(self._space.optuna_params(t.config))
            self._ot_trials[t.trial_id] = self._ot_study.ask()
            self._suggest_from_define_by_run_func(self._space, self._ot_trials[t.trial_id])
            self._ot_trials[t.trial_id].set_user_attr("ray_trial_id", t.trial_id)
        return lost, [t.trial_id for t in adopted]

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


class BudgetedSearch(SearchGenerator):
    """Ray's SearchGenerator, with the budget (TuneConfig's num_samples) counted in the study's
    trials and, after a restore, nothing decided before Ray's restored trials are reconciled."""

    def __init__(self, searcher):
        super().__init__(searcher)
        self._reconcile_pending = False

    def _base(self) -> PruningAwareOptunaSearch:
        searcher = self.searcher
        while hasattr(searcher, "searcher"):  # under ConcurrencyLimiter
            searcher = searcher.searcher
        return searcher

    def restore_from_dir(self, dirpath: str) -> None:
        super().restore_from_dir(dirpath)
        self._reconcile_pending = True

    def reconcile(self, trials: list) -> None:
        if not self._reconcile_pending:
            return
        self._reconcile_pending = False
        base = self._base()
        lost, adopted = base.reconcile(trials)
        print(f"Resumed: {len(trials)} trials restored by Ray; the study adopted {len(adopted)} it did not know "
              f"and will run {len(base._rerun)} lost one(s) again; budget {base.trials_in_budget}/{self.total_samples}")
        for trial_id in lost:
            self.searcher.on_trial_complete(trial_id, None, error=True)  # frees a wrapper's slot; the study ignores it
        for t in trials:  # ended after the searcher's snapshot: the study hears of it now
            if t.status in (Trial.TERMINATED, Trial.ERROR):
                self.searcher.on_trial_complete(t.trial_id, t.last_result or None, error=t.status == Trial.ERROR)

    def is_finished(self) -> bool:
        return not self._reconcile_pending and self._base().trials_in_budget >= self.total_samples


class ReconcileAfterRestore(Callback):
    """Hands Ray's trial list to BudgetedSearch at each step (it acts once, after a restore)."""

    def __init__(self, search: BudgetedSearch):
        self.search = search

    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        self.search.reconcile(trials)
