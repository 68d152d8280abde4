import optuna
from optuna.trial import TrialState

from search.optuna_search import PruningAwareOptunaSearch, SamplerFactory
from search.space import DefineByRun, Param


def make(tmp_path, name="s"):
    params = {"x": Param(dist="uniform", low=0.0, high=1.0), "k": Param(dist="categorical", choices=["a", "b"])}
    return PruningAwareOptunaSearch(space=DefineByRun(params), metric="score", mode="max",
                                    sampler_factory=SamplerFactory("tpe", 0), study_name=name,
                                    storage=optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}"))


def test_trial_asked_after_the_last_snapshot_is_adopted_not_duplicated(tmp_path):
    searcher = make(tmp_path)
    first = searcher.suggest("t1")
    searcher.save(str(tmp_path / "snapshot.pkl"))  # Ray's periodic snapshot
    lost = searcher.suggest("t2")  # asked, then the driver dies before the next snapshot

    restored = make(tmp_path)
    restored.restore(str(tmp_path / "snapshot.pkl"))
    again = restored.suggest("t3")  # Ray fills the budget with a new trial id
    assert again == lost  # the orphan's params, not a fresh draw
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert len(study.trials) == 2
    restored.on_trial_complete("t1", {"score": 0.5, "epoch": 2, "trial/finished": 1.0})
    restored.on_trial_complete("t3", {"score": 0.2, "epoch": 1, "trial/finished": 0.0})
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert study.trials[0].params == first and study.trials[1].params == lost
    assert study.trials[1].user_attrs["ray_trial_id"] == "t3"


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


def test_restore_never_replays_the_sampler(tmp_path):
    """A snapshot older than the study: the restored searcher must not draw old params again."""
    searcher = make(tmp_path)
    searcher.suggest("t1")
    searcher.save(str(tmp_path / "snapshot.pkl"))
    second = searcher.suggest("t2")
    searcher.on_trial_complete("t2", {"score": 0.1, "epoch": 1, "trial/finished": 1.0})  # known to the study only

    restored = make(tmp_path)
    restored.restore(str(tmp_path / "snapshot.pkl"))
    third = restored.suggest("t3")
    assert third != second  # the old sampler state would have drawn `second` again


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
