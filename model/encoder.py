"""Object-centric grid encoder: object tokens -> relational self-attention -> embeddings.

Each token is a linear map of its geometric features plus a colour embedding; a stack of
pre-norm Transformer layers lets every object attend to every other object of the same grid
(relations: relative position, size, colour). No positional encoding of the slot order: the
encoder is permutation-equivariant over objects, as a set of objects has no order.
"""

from __future__ import annotations

import torch
from torch import nn

from model.objects import GRID_COLOUR, NUM_FEATURES


class ObjectEncoder(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, num_features: int = NUM_FEATURES):
        super().__init__()
        self.features = nn.Linear(num_features, dim)
        self.colour = nn.Embedding(GRID_COLOUR + 1, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=4 * dim, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, features: torch.Tensor, colours: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """features [G, N, F], colours [G, N], mask [G, N] (True = real token) -> [G, N, D]."""
        x = self.features(features) + self.colour(colours)  # [G, N, D]
        x = self.blocks(x, src_key_padding_mask=~mask)
        return self.norm(x)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens: x [G, N, D], mask [G, N] -> [G, D]."""
    weights = mask.unsqueeze(-1).to(x.dtype)  # [G, N, 1]
    return (x * weights).sum(-2) / weights.sum(-2).clamp(min=1.0)
