"""Gumbel-softmax quantizer (the seed's Phase 1 option D).

Jang et al. 2017, "Categorical Reparameterization with Gumbel-Softmax", eq. 1; used as a VQ
bottleneck as in wav2vec 2.0 (Baevski et al. 2020, Sec. 2) and DALL-E's dVAE:

    l = W z                                   code logits [M, K]
    y = softmax((l + g) / tau),  g ~ Gumbel(0, 1)      (training: soft, differentiable)
    y = onehot(argmax l)                      (eval: hard, a codebook row exactly)
    q = y E                                   E: codebook [K, D], learned by gradient
    L = kl_weight * KL(softmax(l) || U_K) = kl_weight * (sum_k p_k log p_k + log K)
    tau(t) = max(tau_min, tau_start * exp(-anneal_rate * t)),  t = training steps so far

The KL term to the uniform prior keeps the mean code distribution from collapsing. There is
no dead-code refresh: every code keeps a gradient through the softmax.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from model.quantizers._codebook import codebook_generator
from model.quantizers.output import QuantizerOutput


@dataclass(frozen=True)
class GumbelConfig:
    """The Gumbel-softmax quantizer's options (in a training config's `vq:` with a `gumbel_` prefix,
    num_codes as it is)."""

    num_codes: int = 256  # K, the codebook's size
    temperature_start: float = 1.0  # tau at step 0
    temperature_min: float = 0.1  # floor of the annealed tau
    anneal_rate: float = 1e-3  # tau(t) = max(min, start * exp(-rate * t)), t in steps
    kl_weight: float = 0.01  # weight of KL(code distribution || uniform)


class GumbelQuantizer(nn.Module):
    Config = GumbelConfig

    def __init__(self, dim: int, config: GumbelConfig, seed: int = 0):
        super().__init__()
        num_codes = config.num_codes
        self.num_codes, self.kl_weight = num_codes, config.kl_weight
        self.temperature_start, self.temperature_min = config.temperature_start, config.temperature_min
        self.anneal_rate = config.anneal_rate
        self.to_logits = nn.Linear(dim, num_codes)
        # the codebook's own stream, not the model's (_codebook.py: codebook_generator)
        self.codebook = nn.Parameter(torch.randn(num_codes, dim, generator=codebook_generator(seed)))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)  # Gumbel noise (on the CPU; _noise_generator)

    def temperature(self) -> torch.Tensor:
        """tau(t) = max(tau_min, tau_start * exp(-anneal_rate * t)), a scalar tensor on the step
        counter's device: computed there, never read back to the host."""
        t = self.steps.to(torch.float64)
        return (self.temperature_start * torch.exp(-self.anneal_rate * t)).clamp(min=self.temperature_min)

    def _noise_generator(self, device: torch.device) -> torch.Generator:
        """The Gumbel noise's generator on the logits' device (seeded as the CPU one), so the noise
        is drawn where it is used instead of copied there each step."""
        if self.generator.device != device:
            self.generator = torch.Generator(device=device).manual_seed(self.seed)
        return self.generator

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        return self.codebook[indices]

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        logits = self.to_logits(z)  # [M, K]
        indices = logits.argmax(dim=-1)  # [M]
        probs = logits.softmax(dim=-1)
        kl = (probs * torch.log(probs.clamp(min=1e-12))).sum(-1).mean() + math.log(self.num_codes)
        if self.training:
            u = torch.rand(logits.shape, generator=self._noise_generator(logits.device),
                           device=logits.device).clamp(1e-10, 1 - 1e-10)
            gumbel = -torch.log(-torch.log(u))  # g ~ Gumbel(0, 1)
            y = ((logits + gumbel) / self.temperature().to(logits.dtype)).softmax(dim=-1)  # eq. 1
            self.steps += 1
            quantized = y @ self.codebook  # [M, D]
        else:
            quantized = self.lookup(indices)  # hard codes at eval
        return QuantizerOutput(quantized, indices, self.kl_weight * kl)

    def refresh_dead_codes(self, generator: torch.Generator) -> int:
        return 0  # not applicable: every code gets a gradient through the softmax
