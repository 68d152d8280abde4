"""Context aggregation: k per-grid embeddings [B, k, D] -> one context embedding [B, D].

| kind      | order-aware | permutation-invariant over the k grids | seed option |
|-----------|-------------|----------------------------------------|-------------|
| mean      | no          | yes: A->B->C == C->B->A                | baseline    |
| last      | yes         | no (only the most recent grid)         | Phase 2 A   |
| attention | yes         | no (position/role embeddings)          | Phase 2 B   |
| gru       | yes         | no (a recurrence over the sequence)    | Phase 2 C   |
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


class AttentionAggregator(nn.Module):
    """Seed Phase 2 option B, made order-aware: attention pooling with a learned query over the
    grids plus learned position embeddings (position i in the sequence; with the sequence laid
    out as in, out, in, ... the position also fixes the role). Attention-based MIL pooling,
    Ilse et al. 2018, with a single learned query as in Set Transformer's PMA (Lee et al. 2019).

        h_i = x_i + p_i;   a = softmax_i(q . W_k h_i / sqrt(D));   out = sum_i a_i W_v h_i
    """

    def __init__(self, dim: int, context_length: int):
        super().__init__()
        self.position = nn.Parameter(torch.randn(context_length, dim) * 0.02)  # p_i
        self.query = nn.Parameter(torch.randn(dim) * 0.02)  # q
        self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, grids: torch.Tensor) -> torch.Tensor:  # [B, k, D] -> [B, D]
        h = grids + self.position[: grids.shape[1]]  # [B, k, D]
        scores = self.key(h) @ self.query / h.shape[-1] ** 0.5  # [B, k]
        weights = scores.softmax(dim=1).unsqueeze(-1)  # [B, k, 1]
        return (weights * self.value(h)).sum(dim=1)


class GRUAggregator(nn.Module):
    """Seed Phase 2 option C: a GRU over the k grids in order; its final hidden state."""

    def __init__(self, dim: int):
        super().__init__()
        self.gru = nn.GRU(dim, dim, num_layers=1, batch_first=True)

    def forward(self, grids: torch.Tensor) -> torch.Tensor:  # [B, k, D] -> [B, D]
        _, hidden = self.gru(grids)  # hidden: [1, B, D]
        return hidden.squeeze(0)


def build_aggregator(kind: str, dim: int, context_length: int) -> nn.Module:
    if kind == "mean":
        return MeanAggregator()
    if kind == "last":
        return LastAggregator()
    if kind == "attention":
        return AttentionAggregator(dim, context_length)
    if kind == "gru":
        return GRUAggregator(dim)
    raise ValueError(f"unknown aggregator {kind!r}")
