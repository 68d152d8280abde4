import math

import optuna
import pytest

from model.config import ConfigError
from search.score import DIVERGED_SCORE, health_margin, items_passed, run_score
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


def _row(epoch, usage=0.2, ctx=12.0, tgt=25.0, val=5.0, gmean=10.0, gmax=20.0):
    return {"epoch": epoch, "codebook/usage": usage, "rank/context": ctx, "rank/target": tgt, "val/loss": val,
            "val/loss_reference": val, "grad/norm_mean": gmean, "grad/norm_max": gmax}


def test_health_margin_hand_values():
    # ratios 0.3/0.15 = 2, 10/10 = 1, 5/20 = 0.25: geometric mean (2 * 1 * 0.25)^(1/3) = 0.5^(1/3)
    assert abs(health_margin(0.3, 10.0, 5.0) - 0.5 ** (1 / 3)) < 1e-12
    # weights (2, 1, 0): (2^2 * 1)^(1/3) = 4^(1/3); the zero-weighted ratio is ignored
    assert abs(health_margin(0.3, 10.0, 5.0, weights=(2.0, 1.0, 0.0)) - 4 ** (1 / 3)) < 1e-12
    assert health_margin(0.0, 10.0, 20.0) == 0.0 == health_margin(math.nan, 10.0, 20.0)  # no codes


def test_score_is_the_checklist_pass_count_then_the_margin():
    healthy = [_row(1), _row(2, val=4.0)]  # every seed item passes over 2 planned epochs
    s = run_score(healthy, 2)
    m = health_margin(0.2, 12.0, 25.0)
    assert abs(s - (8 + m / (1 + m))) < 1e-12 and items_passed(s) == 8
    # usage judged throughout: one low epoch at the start costs the item for good
    low_start = [_row(1, usage=0.04), _row(2, usage=0.9, ctx=40.0, tgt=80.0, val=4.0)]
    assert items_passed(run_score(low_start, 2)) == 7 and run_score(low_start, 2) < s
    # a grad spike, an early stop, a val-loss spike: one item each
    assert items_passed(run_score([_row(1), _row(2, gmax=151.0)], 2)) == 7
    assert items_passed(run_score(healthy, 3)) == 7  # the trainer stopped at 2 of 3 planned epochs
    assert items_passed(run_score([_row(1, val=2.0), _row(2, val=4.5)], 2)) == 7
    # within a pass count, the margin decides
    assert run_score([_row(1), _row(2, ctx=30.0)], 2) > run_score(healthy, 2)
    # the seed's sixth run (usage 1.7%, ranks 1.4 and 2.4, val 9.18) scores below a healthy run
    collapsed = [_row(1, usage=0.24, val=10.0), _row(2, usage=0.017, ctx=1.4, tgt=2.4, val=9.18)]
    assert run_score(collapsed, 2) < 5 < s
    assert run_score([_row(1, val=math.nan)], 1) == DIVERGED_SCORE < run_score(collapsed, 2)
    assert run_score([], 1) == DIVERGED_SCORE and items_passed(DIVERGED_SCORE) is None


def test_progress_line_counts_and_estimates():
    from search.runner import progress_line

    trials = [{"status": "TERMINATED", "trial_id": "a", "epoch": 3, "score": 5.2},
              {"status": "TERMINATED", "trial_id": "b", "epoch": 9, "score": 6.7},
              {"status": "RUNNING", "trial_id": "c", "epoch": 2, "score": 4.1},
              {"status": "PENDING", "trial_id": "d", "epoch": None, "score": None}]
    line = progress_line(trials, 10, elapsed_s=240.0)
    # 2 ended in 4 min: 2 min a trial, 8 to go -> about 16 min
    assert line == ("Progress: 2/10 trials ended, 1 running | 14 trial-epochs | best score 6.70000 (trial b) | "
                    "4.0 min elapsed, about 16 min left at this pace")
    assert "(trial c)" in progress_line(trials, 10, 240.0, mode="min")  # a collapse search's best is the lowest
    assert progress_line([], 4, 0.0) == "Progress: 0/4 trials ended, 0 running | 0 trial-epochs | 0.0 min elapsed"


def test_the_trial_table_leads_with_the_judged_metrics_and_fits_160_columns():
    """search/runner.py: trial_table at the default space: trial, status, epoch, score and the
    checklist's values first; then the parameters in the space's order while they fit; the rest
    named below; running trials first, the rows left out counted."""
    from search.metrics import table_columns
    from search.runner import TABLE_WIDTH, _header_lines, short_names, trial_table
    from search.space import load_space

    params = short_names(load_space(ROOT / "spaces" / "vq_gentle.yaml").space.params)
    result = {"epoch": 24, "score": 8.68247, "codebook/usage": 0.871094, "rank/context": 35.2189,
              "rank/target": 16.7876, "val/loss_reference": 8.60545}
    config = {k: 0.000123456 for k in params} | {"context.aggregator": "attention"}
    trials = [{"trial_id": f"t{i:07d}", "status": s, "config": config, "result": {} if s == "PENDING" else result}
              for i, s in enumerate(["TERMINATED", "PENDING", "RUNNING"] * 9)]
    table = trial_table(trials, table_columns(), params, max_rows=20)
    assert TABLE_WIDTH == 160 and all(len(line) <= 160 for line in table), max(map(len, table))
    header = [c.strip() for c in table[1].strip("|").split("|")]
    assert header[:8] == ["trial", "status", "epoch", "score", "usage", "rank_ctx", "rank_tgt", "val"]
    assert [c.strip() for c in table[2].strip("|").split("|")][7:9] == ["loss_ref", "interval"]  # two-line headers
    assert table[4].split("|")[2].strip() == "RUNNING" and "1.235e-04" not in table[4]  # 4 significant digits
    assert "0.0001235" in table[4]
    assert "... 7 more trials not shown (7 TERMINATED)" in table
    footnote = " ".join(line for line in table if not line.startswith(("+", "|", "...")))
    assert footnote.startswith("(not shown, to fit 160 columns: ") and footnote.endswith("; all in trials.csv)")
    # the space's order: the parameters shown are a prefix of it, the ones left out the rest
    names, shown = list(params.values()), len(header) - 8
    assert shown >= 4 and footnote[len("(not shown, to fit 160 columns: "):-len("; all in trials.csv)")].split(", ") \
        == names[shown:]
    assert _header_lines("refresh_usage_threshold") == ("refresh_usage", "threshold")
    assert _header_lines("score") == ("score", "")
    # the last table shows every trial
    assert not any(line.startswith("...") for line in trial_table(trials, table_columns(), params))
