"""model/early_stopping.py: the trainer's patience rule with its floor band, on val losses worked
out by hand, and the trainer applying it."""

import math

import pytest

from model.early_stopping import FLOOR_TOLERANCE, patience_step, stop_epoch


def test_one_epoch_of_the_rule_by_hand():
    assert patience_step(math.inf, 0, 10.0) == (10.0, 0)  # the first epoch is a new best
    assert patience_step(10.0, 3, 9.0) == (9.0, 0)  # new best
    assert patience_step(10.0, 3, 10.0) == (10.0, 4)  # a tie is no new best, and without a band it counts
    assert patience_step(10.0, 3, 10.4, floor_tolerance=0.05) == (10.0, 0)  # 4% above: holds the floor
    assert patience_step(10.0, 3, 10.6, floor_tolerance=0.05) == (10.0, 4)  # 6% above: counts
    assert patience_step(10.0, 3, 9.5, min_delta=1.0) == (10.0, 4)  # an improvement under min_delta
    assert patience_step(10.0, 3, 9.5, min_delta=1.0, floor_tolerance=0.05) == (10.0, 0)  # ... on the floor
    assert patience_step(10.0, 3, math.nan, floor_tolerance=0.05) == (10.0, 4)  # NaN is never on the floor


def test_a_run_on_its_floor_is_stopped_by_the_plain_rule_and_not_by_the_band():
    floor = [10.0, 8.0, 6.0, 5.0, 5.1, 5.2, 5.05, 5.15, 5.1, 5.2]  # best 5.0 at epoch 4, then within 4%
    assert stop_epoch(floor, patience=3) == 7  # epochs 5, 6, 7 set no new best
    assert stop_epoch(floor, patience=3, floor_tolerance=0.05) is None


def test_a_run_that_rises_above_the_band_stops_at_the_same_epoch_under_both_rules():
    """The seed's sixth run: a spike, then a val loss that stays above its best (here > 5%)."""
    rising = [12.0, 10.0, 9.0, 27.2, 14.0, 12.5, 11.0, 10.5, 10.0, 9.8, 9.6]
    assert stop_epoch(rising, patience=5) == 8
    assert stop_epoch(rising, patience=5, floor_tolerance=0.05) == 8


def test_no_stop_on_the_last_epoch_and_none_without_patience():
    flat = [5.0, 6.0, 6.0, 6.0]
    assert stop_epoch(flat, patience=3) == 4 and stop_epoch(flat, patience=3, epochs=4) is None
    assert stop_epoch(flat, patience=None) is None


def test_the_trainer_default_is_the_band_of_this_module():
    from model.config import TrainConfig

    assert TrainConfig().training.early_stopping.floor_tolerance == FLOOR_TOLERANCE > 0
    with pytest.raises(Exception, match="floor_tolerance"):
        TrainConfig.model_validate({"training": {"early_stopping": {"floor_tolerance": -0.1}}})
