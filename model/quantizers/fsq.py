"""Finite Scalar Quantization (Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE Made
Simple", Sec. 3 and their reference implementation).

    u = W_in z                                  project to d = len(levels) dims
    b_j = tanh(u_j + s_j) * h_j - o_j           bound dim j to L_j values:
          h_j = (L_j - 1)(1 + eps) / 2,  o_j = 0.5 if L_j even else 0,  s_j = atanh(o_j / h_j)
    c = round_ste(b) / floor(L_j / 2)           round with straight-through, scale to [-1, 1]
    q = W_out c                                 back to D dims

The codebook is implicit: the product grid of levels, K = prod_j L_j codes, none of them
learned, so there is no codebook state to collapse. index(c) = sum_j (c_j' ) * prod_{i<j} L_i
with c_j' = round(b_j) + floor(L_j / 2) in 0..L_j - 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from model.quantizers.output import QuantizerOutput


@dataclass(frozen=True)
class FSQConfig:
    """FSQ's options (in a training config's `vq:` as `fsq_levels`)."""

    levels: tuple[int, ...] = (8, 5, 5, 5)  # L_j per dimension; K = prod_j L_j (8,5,5,5: 1000 codes, as in the paper)
    eps: float = 1e-3  # keeps tanh's bound off the half-way points


class FSQuantizer(nn.Module):
    Config = FSQConfig

    def __init__(self, dim: int, config: FSQConfig, seed: int = 0):  # seed: nothing random at init
        super().__init__()
        levels, eps = config.levels, config.eps
        self.levels = list(levels)
        self.num_codes = math.prod(self.levels)
        self.project_in, self.project_out = nn.Linear(dim, len(levels)), nn.Linear(len(levels), dim)
        lv = torch.tensor(self.levels, dtype=torch.float32)
        half = (lv - 1) * (1 + eps) / 2  # h_j
        offset = torch.where(lv % 2 == 0, 0.5, 0.0)  # o_j
        self.register_buffer("half_range", half)
        self.register_buffer("offset", offset)
        self.register_buffer("shift", torch.atanh(offset / half))  # s_j
        self.register_buffer("half_width", torch.floor(lv / 2))  # floor(L_j / 2)
        self.register_buffer("basis", torch.cumprod(torch.tensor([1] + self.levels[:-1]), 0))  # mixed radix

    def quantize_codes(self, u: torch.Tensor) -> torch.Tensor:
        """[M, d] -> points of the grid, scaled to [-1, 1] (STE through round)."""
        bounded = torch.tanh(u + self.shift) * self.half_range - self.offset
        rounded = bounded + (torch.round(bounded) - bounded).detach()
        return rounded / self.half_width

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        digits = torch.round(codes * self.half_width + self.half_width).long()  # 0..L_j - 1
        return (digits * self.basis).sum(-1)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        digits = (indices.unsqueeze(-1) // self.basis) % torch.tensor(self.levels, device=indices.device)
        return (digits - self.half_width) / self.half_width

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        return self.project_out(self.indices_to_codes(indices))

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        codes = self.quantize_codes(self.project_in(z))  # [M, d]
        indices = self.codes_to_indices(codes.detach())
        return QuantizerOutput(self.project_out(codes), indices, z.new_zeros(()))

    def refresh_dead_codes(self, generator: torch.Generator) -> int:
        return 0  # no codebook to refresh
