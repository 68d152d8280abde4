"""Context aggregation: k per-grid embeddings [B, k, D] -> one context embedding [B, D].

| kind | order-aware | permutation-invariant over the k grids |
|------|-------------|----------------------------------------|
| mean | no          | yes (the seed's baseline: A->B->C == C->B->A) |
| last | yes         | no (uses only the most recent grid)     |
"""

from __future__ import annotations

import torch
from torch import nn


class MeanAggregator(nn.Module):
    """The seed's order-blind pooling: the average of the k grid embeddings."""

    def forward(self, grids: torch.Tensor) -> torch.Tensor:  # [B, k, D] -> [B, D]
        return grids.mean(dim=1)


class LastAggregator(nn.Module):
    """Seed Phase 2 option A: the last context grid (input_b for k = 3) alone."""

    def forward(self, grids: torch.Tensor) -> torch.Tensor:  # [B, k, D] -> [B, D]
        return grids[:, -1]


def build_aggregator(kind: str, dim: int, context_length: int) -> nn.Module:
    if kind == "mean":
        return MeanAggregator()
    if kind == "last":
        return LastAggregator()
    raise ValueError(f"unknown aggregator {kind!r}")
