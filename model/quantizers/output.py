"""What every quantizer returns (the interface is described in model/quantizers/__init__.py)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class QuantizerOutput:
    quantized: torch.Tensor  # [M, D], straight-through: forward = code vector, grad -> z
    indices: torch.Tensor  # [M] long, the code of each vector
    loss: torch.Tensor  # scalar added to the training loss (logged as loss/vq)
