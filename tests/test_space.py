import math

import optuna
import pytest

from model.config import ConfigError
from search.score import DIVERGED_SCORE, composite_score
from search.space import DefineByRun, load_space
from tests.conftest import ROOT

GOOD = """
base: {base}
params:
  vq.refresh_enabled: {{dist: categorical, choices: [true, false]}}
  vq.refresh_interval: {{dist: logint, low: 10, high: 1000, when: {{vq.refresh_enabled: true}}}}
  loss.temperature_min: {{dist: loguniform, low: 0.03, high: 0.1}}
  loss.temperature_max: {{dist: loguniform, low: 0.05, high: 0.3, at_least: loss.temperature_min}}
  vq.ema_decay: {{dist: uniform, low: 0.8, high: 0.99}}
  training.num_threads: {{dist: fixed, value: 1}}
"""

BASE = str(ROOT / "configs" / "vq_gentle.yaml")

BAD = [
    ("paramz: {}", "paramz: unknown key; did you mean 'params'?"),
    ("params: {vq.ema_decay: {dist: uniform, low: 0.9, high: 0.9}}", "low (0.9) must be < high (0.9)"),
    ("params: {vq.ema_decay: {dist: uniform, low: 0.9, high: 0.8}}", "must be < high"),
    ("params: {vq.commitment_cost: {dist: loguniform, low: 0, high: 0.5}}", "log range must be > 0"),
    ("params: {model.aggregator: {dist: categorical, choices: []}}", "non-empty list of choices"),
    ("params: {vq.ema_decay: {dist: gaussian, low: 0.1, high: 0.2}}", "params.vq.ema_decay.dist"),
    ("params: {vq.refresh_interval: {dist: int, low: 10, high: 20, when: {vq.nope: true}}}",
     "refers to 'vq.nope', which is not an earlier parameter"),
    ("params: {vq.ema_decay: {dist: uniform, low: 0.5, high: 1.5}}", "value 1.5 is not accepted by the trainer"),
    ("params: {vq.ema_decay: {dist: fixed, value: 2}}", "value 2 is not accepted by the trainer"),
    ("params: {vq.nonsense: {dist: fixed, value: 2}}", "params.vq.nonsense: unknown training config key"),
    ("params: {vq.comitment_cost: {dist: loguniform, low: 0.03, high: 0.5}}",
     "params.vq.comitment_cost: unknown training config key; did you mean 'vq.commitment_cost'?"),
    ("params: {vq.commitment_cost: {dist: loguniform, low: 0.03, hihg: 0.5}}",
     "params.vq.commitment_cost.hihg: unknown key; did you mean 'high'? (allowed: dist, low, high, choices, value, when, at_least)"),
    ("params: {training.epochs: {dist: int, low: 1, high: 5}}", "set by the search itself"),
    ("params: {vq.ema_decay: {dist: uniform, low: 0.8, high: 0.9}}\nbudget: {num_samples: 0}",
     "budget.num_samples: Input should be greater than or equal to 1"),
    ("params: {vq.ema_decay: {dist: uniform, low: 0.8, high: 0.9}}\nbudget: {max_epochs: 0}",
     "budget.max_epochs: Input should be greater than or equal to 1"),
    ("params: {vq.ema_decay: {dist: uniform, low: 0.8, high: 0.9}}\nbudget: {max_epochs: 3, grace_period: 5}",
     "grace_period (5) must be <= max_epochs (3)"),
    ("params: {vq.ema_decay: {dist: uniform, low: 0.8, high: 0.9}}\nresources: {gpu: 2}",
     "resources.gpu: Input should be less than or equal to 1"),
]


@pytest.mark.parametrize("body,message", BAD)
def test_bad_spaces_are_rejected_naming_file_and_key(tmp_path, body, message):
    path = tmp_path / "space.yaml"
    path.write_text(f"base: {BASE}\n{body}\n")
    with pytest.raises(ConfigError) as err:
        load_space(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_missing_base_is_rejected(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("base: configs/nope.yaml\nparams: {vq.ema_decay: {dist: uniform, low: 0.8, high: 0.9}}\n")
    with pytest.raises(ConfigError, match="base: config file 'configs/nope.yaml' not found"):
        load_space(path)


def test_shipped_spaces_load():
    for path in sorted((ROOT / "spaces").glob("*.yaml")):
        assert load_space(path).space.params, path


def test_define_by_run_honours_conditions_and_bounds(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(GOOD.format(base=BASE))
    loaded = load_space(path)
    fn = DefineByRun(loaded.space.params)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen_refresh = set()
    for _ in range(60):
        trial = study.ask()
        constants = fn(trial)
        params = {**trial.params, **constants}
        seen_refresh.add(params["vq.refresh_enabled"])
        assert ("vq.refresh_interval" in params) == params["vq.refresh_enabled"]
        if "vq.refresh_interval" in params:
            assert 10 <= params["vq.refresh_interval"] <= 1000
            assert isinstance(params["vq.refresh_interval"], int)
        assert 0.03 <= params["loss.temperature_min"] <= 0.1
        assert params["loss.temperature_min"] <= params["loss.temperature_max"] <= 0.3
        assert 0.8 <= params["vq.ema_decay"] <= 0.99
        assert constants == {"training.num_threads": 1}
        # every sample is a config the trainer accepts
        loaded.trial_config(params, epochs=2, name="t", num_threads=1)
        study.tell(trial, 0.0)
    assert seen_refresh == {True, False}


def test_score_collapsed_below_healthy_and_bounded():
    healthy_worst = composite_score(0.151, 10.01, 20.01, val_loss=1e6)
    nearly = composite_score(0.149, 100, 100, val_loss=0.0)  # misses one target
    collapsed = composite_score(0.017, 1.4, 2.4, val_loss=9.18)  # the seed's sixth run
    assert collapsed < nearly < 1.0 < healthy_worst <= 2.0
    assert composite_score(0.2, 12, 25, 1.0) > composite_score(0.2, 12, 25, 2.0)  # val loss breaks ties
    # increasing in each metric below its target, flat above it
    assert composite_score(0.05, 5, 5, 1) < composite_score(0.10, 5, 5, 1) < composite_score(0.10, 8, 5, 1)
    assert composite_score(0.10, 50, 5, 1) == composite_score(0.10, 10, 5, 1)
    assert composite_score(math.nan, 5, 5, 1) == composite_score(0.0, 5, 5, 1)  # no codes: usage 0
    assert composite_score(0.2, 12, 25, math.nan) == DIVERGED_SCORE < collapsed
    # hand value: usage 0.075 -> 0.5, ranks 5/10 -> 0.5, 20/20 -> 1: mean 2/3
    assert abs(composite_score(0.075, 5, 20, 3.0) - 2 / 3) < 1e-12
