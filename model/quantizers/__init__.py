"""Quantizers: one file per method, all behind one interface.

    out = quantizer(z)            # z [M, D] continuous vectors (real object tokens only)
    out.quantized                 # [M, D], straight-through: forward = code vector, grad -> z
    out.indices                   # [M] long, code of each vector
    out.loss                      # scalar added to the training loss (logged as loss/vq)
    quantizer.lookup(indices)     # [*] -> [*, D] code vectors (indices -> vectors round trip)
    quantizer.refresh_dead_codes(generator) -> int   # codes revived (0 if not applicable)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class QuantizerOutput:
    quantized: torch.Tensor  # [M, D]
    indices: torch.Tensor  # [M]
    loss: torch.Tensor  # scalar


def build_quantizer(kind: str, dim: int, num_codes: int, commitment_cost: float, ema_decay: float,
                    epsilon: float, usage_threshold: float):
    if kind == "ema":
        from model.quantizers.ema import EMAQuantizer

        return EMAQuantizer(dim, num_codes, commitment_cost, ema_decay, epsilon, usage_threshold)
    raise ValueError(f"unknown quantizer kind {kind!r}")
