import pickle

import optuna
from optuna.trial import TrialState

import pytest
from ray.tune.experiment import Trial
from ray.tune.search import ConcurrencyLimiter

from search.optuna_search import BudgetedSearch, PruningAwareOptunaSearch, SamplerFactory
from search.space import DefineByRun, Param


def make(tmp_path, name="s", kind="tpe"):
    """A searcher on a study in tmp_path; NSGA-II as the runner uses it, on three objectives."""
    params = {"x": Param(dist="uniform", low=0.0, high=1.0), "k": Param(dist="categorical", choices=["a", "b"])}
    metric, mode = (["u", "r", "l"], ["max", "max", "min"]) if kind == "nsga2" else ("score", "max")
    return PruningAwareOptunaSearch(space=DefineByRun(params), metric=metric, mode=mode,
                                    sampler_factory=SamplerFactory(kind, 0), study_name=name,
                                    storage=optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}"))


def finish(searcher, trial_id: str, value: float) -> None:
    multi = isinstance(searcher.metric, list)
    result = {"u": value, "r": 2 * value, "l": 1 - value} if multi else {"score": value}
    searcher.on_trial_complete(trial_id, {**result, "epoch": 2, "trial/finished": 1.0})


@pytest.mark.parametrize("kind", ["tpe", "random", "nsga2"])
def test_the_searcher_pickles_without_a_live_sampler_and_resumes_the_same_draws(tmp_path, kind):
    """Optuna 5.1's NSGAIISampler holds a thread lock: a pickled live sampler fails Tuner's
    tuner.pkl. The searcher pickles its sampler as recipe + random streams, for every kind a
    space may name, and both ways back (unpickled object, Ray's save/restore) draw on as the
    uninterrupted searcher does, with the study attached."""
    searcher = make(tmp_path, kind=kind)
    for i in range(3):
        searcher.suggest(f"t{i}")
        finish(searcher, f"t{i}", 0.1 * (i + 1))
    blob = pickle.dumps(searcher)  # Tuner(...) pickles the searcher into tuner.pkl
    assert b"_thread.lock" not in blob and b"NSGAIISampler" not in blob and b"TPESampler" not in blob
    searcher.save(str(tmp_path / "snapshot.pkl"))  # Ray's periodic snapshot

    clone = pickle.loads(blob)
    assert type(clone._ot_study.sampler) is SamplerFactory.KINDS[kind]
    assert clone._sampler_factory.kind == kind and clone._sampler_factory.seed == 0
    assert sorted(clone._ot_trials) == ["t0", "t1", "t2"]
    assert [clone._ot_trials[f"t{i}"].number for i in range(3)] == [0, 1, 2]
    expected = searcher.suggest("t3")  # the uninterrupted searcher's next draw ...
    assert clone.suggest("t3-clone") == expected  # ... is the unpickled one's (same streams)

    restored = make(tmp_path, kind=kind)  # as Tuner.restore builds it, then restores the snapshot
    restored.restore(str(tmp_path / "snapshot.pkl"))
    assert type(restored._ot_study.sampler) is SamplerFactory.KINDS[kind]
    assert len(load(tmp_path).trials) == 3, "the study as the snapshot saw it"
    assert restored.suggest("t3") == expected
    finish(restored, "t3", 0.9)
    assert restored._ot_study.trials[-1].state == TrialState.COMPLETE


def test_a_snapshot_in_the_old_format_with_a_live_sampler_still_restores(tmp_path):
    """Snapshots written before the recipe format held the live TPE sampler and the study."""
    searcher = make(tmp_path)
    searcher.suggest("t0")
    finish(searcher, "t0", 0.5)
    old = {k: v for k, v in searcher.__dict__.items() if k != "_sampler_factory"}
    (tmp_path / "old.pkl").write_bytes(pickle.dumps(old))  # TPE pickles fine, as it did then
    expected = searcher.suggest("t1")
    restored = make(tmp_path)
    restored.restore(str(tmp_path / "old.pkl"))
    assert sorted(restored._ot_trials) == ["t0"] and restored.suggest("t1") == expected


def load(tmp_path, name="s"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'study.db'}")


def test_restore_puts_back_the_study_of_the_snapshot_and_replays_lost_trials(tmp_path):
    """Asked, even finished, after Ray's last snapshot, then the driver dies: the restored study
    is the snapshot's, and the restored search asks what the uninterrupted one would have."""
    searcher = make(tmp_path)
    first = searcher.suggest("t1")
    searcher.save(str(tmp_path / "snapshot.pkl"))  # Ray's periodic snapshot
    lost = searcher.suggest("t2")  # asked after it ...
    searcher.on_trial_complete("t2", {"score": 0.9, "epoch": 2, "trial/finished": 1.0})  # ... and finished
    assert len(load(tmp_path).trials) == 2

    restored = make(tmp_path)
    restored.restore(str(tmp_path / "snapshot.pkl"))
    assert [t.params for t in load(tmp_path).trials] == [first], "the study as the snapshot saw it"
    again = restored.suggest("t3")  # Ray fills the budget with a new trial id
    assert again == lost, "the same draw as before the kill: a replay, not a duplicate"
    restored.on_trial_complete("t1", {"score": 0.5, "epoch": 2, "trial/finished": 1.0})
    restored.on_trial_complete("t3", {"score": 0.2, "epoch": 1, "trial/finished": 0.0})
    study = load(tmp_path)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert [t.params for t in study.trials] == [first, lost]
    assert [t.user_attrs["ray_trial_id"] for t in study.trials] == ["t1", "t3"]


def test_restore_elsewhere_brings_the_study_with_the_snapshot(tmp_path):
    """A resume on another machine: no study.db there, the snapshot alone carries it."""
    searcher = make(tmp_path)
    first = searcher.suggest("t1")
    searcher.on_trial_complete("t1", {"score": 0.5, "epoch": 2, "trial/finished": 1.0})
    searcher.save(str(tmp_path / "snapshot.pkl"))
    (tmp_path / "study.db").unlink()
    restored = make(tmp_path)  # a fresh, empty study.db, as Tuner.restore's unpickled searcher makes
    assert load(tmp_path).trials == []
    restored.restore(str(tmp_path / "snapshot.pkl"))
    (trial,) = load(tmp_path).trials
    assert trial.params == first and trial.state == TrialState.COMPLETE and trial.value == 0.5


def budgeted(tmp_path, budget=3, max_concurrent=0):
    base = make(tmp_path)
    search = BudgetedSearch(ConcurrencyLimiter(base, max_concurrent) if max_concurrent else base)
    search.add_configurations({"smoke": {"run": lambda config: None, "num_samples": budget}})
    return search


def ray_trial(trial_id: str, config: dict, status: str = Trial.RUNNING, result: dict | None = None) -> Trial:
    """A trial as Ray restores it from its experiment state."""
    trial = Trial("run_trial", config=config, trial_id=trial_id, stub=True)
    trial.set_status(status)
    if result:
        trial.update_last_result(result)
    return trial


FINISHED = {"score": 0.7, "epoch": 3, "trial/finished": 1.0}


def test_a_restore_with_ray_newer_than_the_searcher_adopts_ray_s_trials(tmp_path):
    """The generator and searcher files are older than Ray's trial list (a driver killed
    mid-upload): the study gains Ray's later trials, with their parameters and results, and the
    budget is reached without asking more (before: two extra trials, drawn again)."""
    search = budgeted(tmp_path)
    base = search.searcher
    first = base.suggest("t1")
    search.save_to_dir(str(tmp_path), "s")  # the generator and searcher files, as uploaded
    second, third = base.suggest("t2"), base.suggest("t3")  # Ray's trial list is newer

    restored = budgeted(tmp_path)
    restored.restore_from_dir(str(tmp_path))
    assert not restored.is_finished(), "nothing is decided before the reconciliation"
    restored.reconcile([ray_trial("t1", first), ray_trial("t2", second, Trial.TERMINATED, FINISHED),
                        ray_trial("t3", third)])
    assert restored.is_finished(), "three trials: the budget"
    study = load(tmp_path)
    assert [t.params for t in study.trials] == [first, second, third]
    assert [t.state for t in study.trials] == [TrialState.RUNNING, TrialState.COMPLETE, TrialState.RUNNING]
    assert study.trials[1].value == 0.7
    assert [t.user_attrs["ray_trial_id"] for t in study.trials] == ["t1", "t2", "t3"]
    restored.searcher.on_trial_complete("t3", FINISHED)  # an adopted trial is told like any other
    assert load(tmp_path).trials[2].state == TrialState.COMPLETE


@pytest.mark.parametrize("max_concurrent", [0, 2])
def test_a_restore_with_the_searcher_newer_than_ray_reruns_what_ray_lost(tmp_path, max_concurrent):
    """Trials asked after Ray's snapshot of its trials: one the study finished stays and counts;
    one still RUNNING gives its parameters to the next new trial (run again, not asked twice).
    Under a ConcurrencyLimiter the lost and ended trials free their slots (else: a hang)."""
    search = budgeted(tmp_path, max_concurrent=max_concurrent)
    searcher = search.searcher  # the limiter, if any, then PruningAwareOptunaSearch
    first, second = searcher.suggest("t1"), searcher.suggest("t2")
    searcher.on_trial_complete("t2", FINISHED)
    third = searcher.suggest("t3")  # with the limiter: t1 and t3 fill its two slots
    search.save_to_dir(str(tmp_path), "s")

    restored = budgeted(tmp_path, max_concurrent=max_concurrent)
    restored.restore_from_dir(str(tmp_path))
    restored.reconcile([ray_trial("t1", first, Trial.TERMINATED, FINISHED)])  # Ray knew t1 only
    assert not restored.is_finished(), "t1 and t2 count; t3 is to run again"
    assert restored.searcher.suggest("t4") == third
    assert restored.is_finished()
    study = load(tmp_path)
    assert [t.params for t in study.trials] == [first, second, third], "no trial asked twice"
    assert [t.state for t in study.trials][:2] == [TrialState.COMPLETE, TrialState.COMPLETE], "t1's end told"
    assert [t.user_attrs["ray_trial_id"] for t in study.trials] == ["t1", "t2", "t4"]


def test_stopped_trial_is_pruned_with_its_intermediate_values(tmp_path):
    searcher = make(tmp_path)
    searcher.suggest("t1")
    searcher.on_trial_result("t1", {"score": 0.1, "epoch": 1})
    searcher.on_trial_complete("t1", {"score": 0.3, "epoch": 2, "trial/finished": 0.0})
    (trial,) = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'study.db'}").trials
    assert trial.state == TrialState.PRUNED
    assert trial.intermediate_values == {1: 0.1, 2: 0.3}
    assert trial.value == 0.3  # pruned trials carry their last intermediate value


def test_errored_trial_is_failed(tmp_path):
    searcher = make(tmp_path)
    searcher.suggest("t1")
    searcher.on_trial_complete("t1", None, error=True)
    (trial,) = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'study.db'}").trials
    assert trial.state == TrialState.FAIL


def test_multi_objective_trials_are_told_their_values_pruned_or_failed(tmp_path):
    params = {"x": Param(dist="uniform", low=0.0, high=1.0)}
    searcher = PruningAwareOptunaSearch(
        space=DefineByRun(params), metric=["codebook/usage", "rank/context", "val/loss"], mode=["max", "max", "min"],
        sampler_factory=SamplerFactory("nsga2", 0), study_name="m",
        storage=optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}"))
    for trial_id in ("done", "stopped", "diverged"):
        searcher.suggest(trial_id)
    metrics = {"codebook/usage": 0.3, "rank/context": 12.0, "val/loss": 3.5, "epoch": 3}
    searcher.on_trial_result("done", metrics)  # no intermediate values in multi-objective studies
    searcher.on_trial_complete("done", {**metrics, "trial/finished": 1.0})
    searcher.on_trial_complete("stopped", {**metrics, "trial/finished": 0.0})
    searcher.on_trial_complete("diverged", {"val/loss": float("nan"), "epoch": 1, "trial/finished": 1.0})
    study = optuna.load_study(study_name="m", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL]
    assert study.trials[0].values == [0.3, 12.0, 3.5]


def test_the_study_names_its_objectives(tmp_path):
    make(tmp_path).suggest("t1")
    assert optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'study.db'}").metric_names == ["score"]
    params = {"x": Param(dist="uniform", low=0.0, high=1.0)}
    multi = PruningAwareOptunaSearch(
        space=DefineByRun(params), metric=["codebook/usage", "rank/context", "val/loss"], mode=["max", "max", "min"],
        sampler_factory=SamplerFactory("nsga2", 0), study_name="m",
        storage=optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}"))
    multi.suggest("t1")
    study = optuna.load_study(study_name="m", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert study.metric_names == ["codebook/usage", "rank/context", "val/loss"]
