"""VQ with a codebook learned by gradient (the seed's Phase 1 option C, `ema_decay: null`).

van den Oord et al. 2017, "Neural Discrete Representation Learning", eq. 3:

    L_vq = ||sg(z) - e_k||^2 + beta * ||z - sg(e_k)||^2
           codebook term        commitment term

No EMA path: the codebook is an nn.Parameter moved by the optimiser through the codebook
term alone. Dead-code refresh, k-means init, cosine codes and the rotation trick as in
_codebook.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from model.quantizers.output import QuantizerOutput
from model.quantizers._codebook import CodebookQuantizer, initial_codebook, nearest_code


@dataclass(frozen=True)
class GradientConfig:
    """The gradient-learned quantizer's options (by these names in a training config's `vq:`)."""

    num_codes: int = 256  # K, the codebook's size
    commitment_cost: float = 0.25  # beta of the commitment term (eq. 3)
    refresh_usage_threshold: float = 0.05  # dead: under this fraction of the fair share since the last refresh
    init: str = "random"  # random | kmeans | uniform (_codebook.py: initial_codebook)
    cosine: bool = False  # l2-normalised z and codes
    estimator: str = "ste"  # ste | rotation: the gradient to the encoder


class GradientQuantizer(CodebookQuantizer):
    Config = GradientConfig

    def __init__(self, dim: int, config: GradientConfig, seed: int = 0):
        c = config
        super().__init__(c.num_codes, dim, c.refresh_usage_threshold, c.init, c.cosine, c.estimator, seed)
        self.commitment_cost = c.commitment_cost
        self.codebook = nn.Parameter(initial_codebook(c.num_codes, dim, c.init, seed))

    def codebook_tensor(self) -> torch.Tensor:
        return self.codebook

    @torch.no_grad()
    def _write_codes(self, rows: torch.Tensor, vectors: torch.Tensor) -> None:
        self.codebook.data[rows] = vectors

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        z = self.prepare(z)
        codes_all = self.codes()
        indices = nearest_code(z.detach(), codes_all.detach())  # eq. 1, [M]
        codes = codes_all[indices]  # [M, D], differentiable w.r.t. the codebook
        if self.training:
            self.record(z, indices)
        loss = F.mse_loss(codes, z.detach()) + self.commitment_cost * F.mse_loss(z, codes.detach())  # eq. 3
        return QuantizerOutput(self.pass_through(z, codes), indices, loss)
