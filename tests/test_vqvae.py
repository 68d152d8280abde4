"""model/vqvae.py, the second model: its pieces by hand, and its search through the contract."""

import math

import pytest
import torch

from model.config import ConfigError
from model.quantizers import build_quantizer
from model.vqvae import VQVAE, batch_tensors, reconstruction_loss, vqvae_config
from tests.conftest import ROOT, run_script


def test_a_batch_is_cropped_to_its_largest_grid_with_cells_outside_left_out():
    grids = torch.full((2, 30, 30), -1, dtype=torch.long)
    grids[0, :2, :3] = torch.tensor([[1, 0, 2], [3, 3, 0]])
    grids[1, :3, :1] = 7
    one_hot, colours, mask = batch_tensors(grids)
    assert one_hot.shape == (2, 10, 3, 3) and colours.shape == mask.shape == (2, 3, 3)
    assert mask[0].tolist() == [[True] * 3, [True] * 3, [False] * 3]
    assert one_hot[0, :, 2].sum() == 0 and one_hot[1, 7, :, 0].tolist() == [1.0, 1.0, 1.0]  # outside: zeros
    assert one_hot[0, 2, 0, 2] == 1.0 and one_hot[0].sum() == 6


def test_the_model_quantizes_only_the_cells_and_the_loss_is_their_cross_entropy():
    torch.manual_seed(0)
    model = VQVAE(8, 8, build_quantizer("ema", 8, num_codes=16))
    grids = torch.full((3, 30, 30), -1, dtype=torch.long)
    grids[0, :4, :5], grids[1, :2, :2], grids[2, :5, :1] = 1, 2, 3
    one_hot, colours, mask = batch_tensors(grids)
    logits, cells, indices, vq_loss = model(one_hot, mask)
    assert logits.shape == (3, 10, 5, 5) and cells.shape == (int(mask.sum()), 8) == (4 * 5 + 2 * 2 + 5, 8)
    assert indices.shape == (29,) and vq_loss.ndim == 0
    by_hand = -torch.log_softmax(logits.permute(0, 2, 3, 1)[mask], -1)[torch.arange(29), colours[mask]].mean()
    assert float(reconstruction_loss(logits, colours, mask).detach()) == pytest.approx(float(by_hand.detach()), rel=1e-6)


def test_its_config_is_typed_and_rejects_unknown_keys():
    assert vqvae_config({}).vq.refresh_enabled is False  # the textbook baseline
    with pytest.raises(ConfigError, match="vq.refresh_intervall: unknown key; did you mean 'refresh_interval'"):
        vqvae_config({"vq": {"refresh_intervall": 3}})
    with pytest.raises(ConfigError, match="vq.kind"):
        vqvae_config({"vq": {"kind": "kmeans"}})


@pytest.mark.slow
def test_the_vqvae_space_searches_end_to_end(tmp_path):
    """python scripts/search.py spaces/vqvae.yaml on a tiny budget: the contract trainer of this
    repository runs in Ray's trials, then in the space's final race (its `final:` seeds at its
    epochs); the best config names it with the race's budget, the target-rank item is n/a."""
    import json

    import yaml

    # the space as it is, its final race at 3 epochs instead of its 30 (the suite's time)
    raw = yaml.safe_load(open(ROOT / "spaces" / "vqvae.yaml"))
    raw["base"], raw["final"]["epochs"] = str(ROOT / "configs" / "vqvae.yaml"), 3
    (tmp_path / "vqvae.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    proc = run_script("scripts/search.py", str(tmp_path / "vqvae.yaml"), "--storage", str(tmp_path), "--name", "vq",
                      "--num-samples", "2", "--max-epochs", "2", timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    exp = tmp_path / "vq"
    best = yaml.safe_load((exp / "best_config.yaml").read_text())
    space = raw["final"]
    assert best["trainer"] == "model.vqvae:train" and best["epochs"] == space["epochs"]
    summary = json.loads((exp / "best_trial.json").read_text())
    race = summary["final_race"]
    assert race["epochs"] == space["epochs"] and len(race["seeds"]) == space["seeds"]
    assert race["winner"]["trial_id"] == summary["trial_id"] and set(race["winner"]["seeds"]) == {str(s) for s in race["seeds"]}
    assert summary["checklist"]["target_rank"]["pass"] is None
    assert 0 < summary["final"]["codebook/usage"] <= 1 and math.isfinite(summary["final"]["score"])
    rows = [json.loads(x) for x in (exp / f"trial_{summary['trial_id']}" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and {"val/accuracy", "rank/encoder", "grad/norm_max"} <= set(rows[0])
    # its encoder's rank is judged as the checklist's context rank (spaces/vqvae.yaml: metrics)
    assert summary["checklist"]["context_rank"]["value"] == rows[-1]["rank/encoder"] == rows[-1]["rank/context"]
