"""model/train.py: train_step, the one step train() runs and bench/train_throughput.py times."""

import math

import pytest
import torch

from model.config import load_config
from model.data import load_arc_data, make_batch, make_examples
from model.train import LOSS_TERMS, build_model, loss_weights, make_optimizer, train_step
from tests.conftest import ROOT


def setup():
    cfg = load_config(ROOT / "configs" / "sixth_run.yaml", ["data.max_tasks=20"])
    data = load_arc_data(cfg.data.sources, cfg.data.val_fraction, cfg.data.max_objects, cfg.data.max_tasks)
    g = torch.Generator().manual_seed(0)
    contexts, targets = make_examples(data.train_tasks, cfg.data.context_length, g)
    idx = torch.arange(cfg.training.batch_size) % len(targets)
    batch = make_batch(data.records, contexts[idx], targets[idx], None, torch.device("cpu"))
    torch.manual_seed(0)
    model = build_model(cfg)
    return model, make_optimizer(model, cfg.training.lr, cfg.training.weight_decay), batch, loss_weights(cfg), g


def test_the_step_returns_its_values_detached_with_the_norm_before_clipping():
    max_norm = 0.5  # the seed's clip: real gradients are far above it
    model, optimizer, batch, weights, g = setup()
    values = train_step(model, optimizer, batch, weights, g, max_norm, momentum=0.996)
    assert set(values) == {*LOSS_TERMS, "grad_norm"}
    assert all(v.ndim == 0 and not v.requires_grad for v in values.values())
    clipped = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]))
    assert float(values["grad_norm"]) > max_norm
    assert abs(float(clipped) - max_norm) < 1e-4, "the gradients were clipped to max_norm before AdamW"


def test_the_step_moves_the_target_encoder_by_the_ema_momentum():
    """theta_target <- m theta_target + (1 - m) theta_context, after the optimiser step."""
    model, optimizer, batch, weights, g = setup()
    before = [p.detach().clone() for p in model.target_encoder.parameters()]
    train_step(model, optimizer, batch, weights, g, 1.0, momentum=0.9)
    for t0, t1, c in zip(before, model.target_encoder.parameters(), model.context_encoder.parameters()):
        assert torch.allclose(t1, 0.9 * t0 + 0.1 * c.detach(), atol=1e-6)


def test_val_loss_reference_scores_the_same_predictions_under_the_fixed_weights():
    """evaluate(): val/loss is the run's own weighted loss, val/loss_reference the same model under
    REFERENCE_WEIGHTS; equal when the run's weights are those, and computed by jepa_loss directly."""
    from dataclasses import replace

    from model.jepa import REFERENCE_WEIGHTS, jepa_loss
    from model.evaluation import evaluate

    cfg = load_config(ROOT / "configs" / "sixth_run.yaml", ["data.max_tasks=30"])
    data = load_arc_data(cfg.data.sources, cfg.data.val_fraction, cfg.data.max_objects, cfg.data.max_tasks)
    val = make_examples(data.val_tasks, cfg.data.context_length, torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    model = build_model(cfg)
    assert loss_weights(cfg) == REFERENCE_WEIGHTS  # the sixth run's weights are the yardstick
    own = evaluate(model, data, val, loss_weights(cfg), 64, torch.device("cpu"), 0, 256)
    assert own["val/loss_reference"] == own["val/loss"]
    lighter = replace(REFERENCE_WEIGHTS, relational=0.01, context_self=0.002)
    light = evaluate(model, data, val, lighter, 64, torch.device("cpu"), 0, 256)
    assert light["val/loss"] < own["val/loss"]  # a smaller weight shrinks the run's own loss ...
    assert abs(light["val/loss_reference"] - own["val/loss"]) < 1e-5  # ... not the reference one
    # by hand: one val batch (all val examples fit in one) under the reference weights
    assert len(val[1]) <= 64
    model.eval()
    batch = make_batch(data.records, *[x[:64] for x in val], None, torch.device("cpu"))
    with torch.no_grad():
        by_hand = float(jepa_loss(model, model(batch), REFERENCE_WEIGHTS, torch.Generator().manual_seed(0))["total"])
    assert abs(by_hand - own["val/loss_reference"]) < 1e-5


def test_the_calibration_runs_use_the_reference_weights():
    """The final val-loss bar is calibrated on configs/diagnostic_no_vq.yaml: its weights must be
    the yardstick val/loss_reference is measured with."""
    from model.jepa import REFERENCE_WEIGHTS

    assert loss_weights(load_config(ROOT / "configs" / "diagnostic_no_vq.yaml")) == REFERENCE_WEIGHTS


def test_learning_rate_warmup_then_constant_or_cosine_by_hand():
    from model.train import learning_rate

    lr = 1e-3
    # warmup W = 4: lr * (t + 1) / W
    assert learning_rate(0, 13, lr, "cosine", 4, 0.01) == pytest.approx(2.5e-4)
    assert learning_rate(3, 13, lr, "constant", 4, 0.01) == pytest.approx(1e-3)
    assert learning_rate(100, 13, lr, "constant", 0, 0.01) == lr
    # cosine, T = 13, W = 2: p = (t - 2) / 10; t = 2 -> lr, t = 7 -> midway, t = 12 -> lr_min
    assert learning_rate(2, 13, lr, "cosine", 2, 0.01) == pytest.approx(1e-3)
    assert learning_rate(7, 13, lr, "cosine", 2, 0.01) == pytest.approx(1e-5 + 0.99e-3 / 2)
    assert learning_rate(12, 13, lr, "cosine", 2, 0.01) == pytest.approx(1e-5)
    assert learning_rate(3, 13, lr, "cosine", 2, 0.01) == pytest.approx(1e-5 + 0.99e-3 * (1 + math.cos(math.pi / 10)) / 2)


def test_a_cosine_run_ends_at_the_final_lr_and_warmup_must_end_before_the_run(tmp_path):
    from model.config import ConfigError
    from model.train import learning_rate, train

    cfg = load_config(ROOT / "configs" / "sixth_run.yaml",
                      ["data.max_tasks=80", "training.epochs=2", "training.lr_schedule=cosine",
                       "training.warmup_epochs=0.5", "training.final_lr_fraction=0.1"])
    history = train(cfg, tmp_path / "run", log=lambda _: None).history
    assert [m["epoch"] for m in history] == [1, 2]
    per_epoch = history[0]["step"]
    assert per_epoch >= 3 and history[1]["step"] == 2 * per_epoch
    warmup = round(0.5 * per_epoch)
    assert history[0]["train/lr"] == pytest.approx(learning_rate(per_epoch - 1, 2 * per_epoch, 1e-3, "cosine", warmup, 0.1))
    assert history[0]["train/lr"] < cfg.training.lr  # part of the way down the cosine
    assert history[1]["train/lr"] == pytest.approx(0.1 * cfg.training.lr)  # the run's last step
    with pytest.raises(ConfigError, match=r"training: warmup_epochs \(2.0\) must be < epochs"):
        load_config(ROOT / "configs" / "sixth_run.yaml", ["training.epochs=2", "training.warmup_epochs=2"])


def test_patience_ends_a_run_early_but_a_run_that_reaches_its_last_epoch_is_completed(tmp_path):
    """min_delta far above any improvement and no floor band: epoch 1 is the only new best, so
    patience 1 runs out at epoch 2, which ends a 3-epoch run early and is simply the end of a
    2-epoch one."""
    from model.train import train

    base = ["data.max_tasks=20", "training.early_stopping.patience=1", "training.early_stopping.min_delta=1e9",
            "training.early_stopping.floor_tolerance=0"]
    for epochs, status in ((3, "early_stopped"), (2, "completed")):
        cfg = load_config(ROOT / "configs" / "sixth_run.yaml", [*base, f"training.epochs={epochs}"])
        result = train(cfg, tmp_path / f"run{epochs}", log=lambda _: None)
        assert (result.status, result.epochs) == (status, 2)


def test_two_epochs_of_the_packed_layout_equal_the_bucketed_reference(tmp_path):
    """The packed encoder is the bucketed one, computed faster: two epochs of training (k-means
    init, dead-code refreshes every 4 steps, the EMA target update each step, the GRU) give the
    same metrics up to float summation order."""
    from model.train import train

    base = ["data.max_tasks=80", "training.epochs=2", "training.batch_size=32", "vq.refresh_interval=4",
            "vq.init=kmeans"]
    histories = {}
    for layout in ("buckets", "packed"):
        cfg = load_config(ROOT / "configs" / "stable_production.yaml", [*base, f"model.encoder_layout={layout}"])
        histories[layout] = train(cfg, tmp_path / layout, log=lambda _: None).history
    reference, packed = histories["buckets"], histories["packed"]
    assert [m["epoch"] for m in packed] == [1, 2] and all(m["codebook/refreshed"] > 0 for m in packed)
    for a, b in zip(reference, packed):
        compared = {k: a[k] for k in a if not k.startswith("time/") and math.isfinite(a[k])}
        assert {k: b[k] for k in compared} == pytest.approx(compared, rel=1e-5, abs=1e-6)
