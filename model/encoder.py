"""Object-centric grid encoder: object tokens -> relational self-attention -> embeddings.

Each token is a linear map of its geometric features plus a colour embedding; a stack of
pre-norm Transformer layers lets every object attend to every other object of the same grid
(relations: relative position, size, colour). No positional encoding of the slot order: the
encoder is permutation-equivariant over objects, as a set of objects has no order.

Grids are padded to N = 1 + max_objects slots, but most have few objects (ARC-AGI-1: median 6
real tokens of 31). Every op acts within one grid, so the encoder runs on buckets of grids of
similar length, each trimmed to its longest grid: the same outputs on the real tokens (up to
float summation order) for about a third of the padded FLOPs (bench/train_throughput.py).
"""

from __future__ import annotations

import torch
from torch import nn

from model.objects import GRID_COLOUR, NUM_FEATURES


# Upper edges of the length buckets (real tokens per grid); the last bucket takes the rest.
BUCKET_EDGES = (2, 4, 8, 16)


class ObjectEncoder(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, num_features: int = NUM_FEATURES,
                 bucket_edges: tuple[int, ...] = BUCKET_EDGES, final_norm: bool = True):
        super().__init__()
        self.bucket_edges = bucket_edges  # () = one bucket: every grid at the batch's longest length
        self.features = nn.Linear(num_features, dim)
        self.colour = nn.Embedding(GRID_COLOUR + 1, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=4 * dim, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        # final_norm=False leaves the token scale free (pre-norm blocks add to an unnormalised
        # residual stream): a candidate cause of collapse when the tokens feed a quantizer.
        self.norm = nn.LayerNorm(dim) if final_norm else nn.Identity()

    def forward(self, features: torch.Tensor, colours: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """features [G, N, F], colours [G, N], mask [G, N] (True = real token, real tokens first)
        -> [G, N, D]; padded slots come out as norm(0) (or 0) and are ignored downstream (masked).

        On the CPU the grids run in length buckets, which needs the lengths on the host; on an
        accelerator reading them would stall it once a bucket, every step, so there every grid
        runs at the full padded length N (the same outputs on the real tokens, tested) and
        nothing is read back (the real-tokens-first layout is model/objects.featurize's)."""
        x = self.features(features) + self.colour(colours)  # [G, N, D]
        if x.device.type != "cpu":
            return self.norm(self.blocks(x, src_key_padding_mask=~mask))  # [G, N, D]
        if bool((mask[:, 1:] & ~mask[:, :-1]).any()):
            raise ValueError("ObjectEncoder: real tokens must come before the padding in every grid")
        lengths = mask.sum(-1)  # [G] real tokens per grid
        out = torch.zeros_like(x)  # [G, N, D]
        lower = 0
        for upper in (*self.bucket_edges, mask.shape[1]):
            rows = ((lengths > lower) & (lengths <= upper)).nonzero().squeeze(1)  # [g] grids in the bucket
            lower = upper
            if rows.numel() == 0:
                continue
            n = int(lengths[rows].max())  # trim to the bucket's longest grid
            y = self.blocks(x[rows, :n], src_key_padding_mask=~mask[rows, :n])  # [g, n, D]
            out = out.index_put((rows.unsqueeze(1), torch.arange(n, device=x.device)), y)  # out[rows, :n] = y
        return self.norm(out)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens: x [G, N, D], mask [G, N] -> [G, D]."""
    weights = mask.unsqueeze(-1).to(x.dtype)  # [G, N, 1]
    return (x * weights).sum(-2) / weights.sum(-2).clamp(min=1.0)
