"""search/targets.py: one home for the thresholds and the collapse rule; the study's seed signature
(study/signature.py)."""

import json
import math

import pytest

from search import targets as T
from study.signature import seed_signature, usage_decay
from search.judge import checklist
from search.score import diverged_score, objective_score, run_score
from search.space import load_space
from tests.conftest import ROOT


def test_seed_targets_are_the_checklist_literals():
    assert (T.SEED.usage, T.SEED.context_rank, T.SEED.target_rank) == (0.15, 10.0, 20.0)


def test_collapse_rule():
    assert T.collapsed([0.5, 0.01, 0.01, 0.01], floor=0.02, patience=3)
    assert not T.collapsed([0.01, 0.01, 0.5, 0.01], floor=0.02, patience=3)
    assert not T.collapsed([0.01, 0.01], floor=0.02, patience=3)  # too few epochs to judge
    assert not T.collapsed([math.nan] * 3, floor=0.02, patience=3)  # no codes is not collapse


def row(epoch, usage, ctx):
    return {"epoch": epoch, "codebook/usage": usage, "rank/context": ctx}


def test_seed_signature_needs_low_usage_and_low_rank_in_the_same_epoch_within_30():
    assert seed_signature([row(1, 0.24, 6.4), row(9, 0.017, 1.4)]) == {
        "reproduced": True, "epoch": 9, "min_usage": 0.017, "min_context_rank": 1.4}
    assert not seed_signature([row(1, 0.03, 9.0), row(2, 0.3, 2.0)])["reproduced"]
    assert not seed_signature([row(31, 0.01, 1.0)])["reproduced"]  # too late


def test_usage_decay_needs_a_healthy_epoch_before_the_fall():
    seed_like = [row(1, 0.24, 6.4), row(5, 0.30, 6.0), row(9, 0.017, 1.4), row(10, 0.02, 1.4)]
    assert usage_decay(seed_like) == {"decayed": True, "healthy_epoch": 1, "epoch": 9, "lowest_usage_epoch": 9}
    # starts collapsed, then a refresh lifts it: the signature's numbers, but no decay
    assert usage_decay([row(1, 0.04, 2.3), row(6, 0.73, 3.8), row(7, 0.76, 4.0)]) == {
        "decayed": False, "healthy_epoch": 6, "epoch": None, "lowest_usage_epoch": 1}
    assert not usage_decay([row(1, 0.19, 6.0), row(2, 0.01, 1.0)])["decayed"]  # never healthy first
    assert not usage_decay([row(1, 0.5, 6.0), row(2, 0.05, 1.0)])["decayed"]  # 5% is not below 5%


def test_calibration_rule_and_file(tmp_path):
    t = T.calibrate_from([12.0, 15.0, 20.0], [18.0, 19.0], [12.0, 15.5])
    # 0.8 x the lowest ranks; (8 / 7.75) x the highest final val loss: 15.5 * 8 / 7.75 = 16
    assert (t.usage, t.context_rank, t.target_rank, t.final_val_loss) == (0.15, 9.6, 14.4, 16.0)
    path = tmp_path / "calibrated_targets.yaml"
    assert T.calibrated(path) == T.SEED  # no file: the seed's
    path.write_text("rule: test\ntargets: {usage: 0.15, context_rank: 9.6, target_rank: 14.4, final_val_loss: 16}\n")
    got = T.calibrated(path)
    assert (got.context_rank, got.target_rank, got.final_val_loss) == (9.6, 14.4, 16.0) and "calibrated" in got.source
    path.write_text("rule: test\ntargets: {usage: 0.15, context_rank: 9.6, target_rank: 14.4}\n")
    assert T.calibrated(path).final_val_loss == T.SEED.final_val_loss  # a file from before the val-loss bar


def test_judging_is_frozen_per_experiment(tmp_path):
    assert T.read_judging(tmp_path) == T.Judging("health", T.SEED)  # older experiments
    j = T.Judging("collapse", T.Targets(0.15, 9.6, 14.4, "x"), 0.05, 2)
    (tmp_path / T.JUDGING_FILE).write_text(json.dumps(j.as_dict()))
    assert T.read_judging(tmp_path) == j and j.mode == "min"
    assert j.as_dict()["seed"] == T.SEED.as_dict()  # the literal ones travel beside


def test_score_and_checklist_follow_the_targets():
    lower = T.Targets(0.15, 8.0, 15.0, "test")
    history = [{"epoch": 1, "codebook/usage": 0.5, "rank/context": 9.0, "rank/target": 16.0, "val/loss": 1.0,
                "val/loss_reference": 1.0, "grad/norm_mean": 1.0, "grad/norm_max": 2.0}]
    assert int(run_score(history, 1, lower)) == int(run_score(history, 1)) + 2  # both rank items pass
    assert not checklist(history, 1)["context_rank"]["pass"]
    assert checklist(history, 1, lower)["context_rank"]["pass"]


def test_goal_collapse_minimises_and_never_rewards_divergence(tmp_path):
    assert T.mode_of("health") == "max" and T.mode_of("collapse") == "min"
    assert diverged_score("health") < 0 and diverged_score("collapse") > 9  # worst under each mode
    loaded = load_space(ROOT / "spaces" / "collapse.yaml")
    o = loaded.space.objective
    assert o.goal == "collapse" and o.mode == "min" and o.resolved_targets() == T.SEED
    history = [{"epoch": 1, "codebook/usage": 0.01, "rank/context": 1.4, "rank/target": 2.4, "val/loss": 9.0,
                "val/loss_reference": 9.0, "grad/norm_mean": 60.0, "grad/norm_max": 200.0}]  # only "ran all epochs" and "no spike" pass
    assert 2 <= objective_score(history, 1, o) < 2.2


def test_space_target_overrides_and_collapse_with_pareto_rejected(tmp_path):
    from model.config import ConfigError

    base = ROOT / "configs" / "sixth_run.yaml"
    path = tmp_path / "s.yaml"
    path.write_text(f"base: {base}\nparams: {{vq.ema_decay: {{dist: uniform, low: 0.8, high: 0.9}}}}\n"
                    "objective: {targets: seed, context_rank_target: 7}\n")
    t = load_space(path).space.objective.resolved_targets()
    assert (t.usage, t.context_rank, t.target_rank) == (0.15, 7, 20.0) and "overridden" in t.source
    path.write_text(f"base: {base}\nparams: {{vq.ema_decay: {{dist: uniform, low: 0.8, high: 0.9}}}}\n"
                    "objective: {goal: collapse, multi_objective: true}\n")
    with pytest.raises(ConfigError, match="goal: collapse"):
        load_space(path)
