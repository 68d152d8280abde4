"""VQ with a codebook learned by gradient (the seed's Phase 1 option C, `ema_decay: null`).

van den Oord et al. 2017, "Neural Discrete Representation Learning", eq. 3:

    L_vq = ||sg(z) - e_k||^2 + beta * ||z - sg(e_k)||^2
           codebook term        commitment term

No EMA path: the codebook is an nn.Parameter moved by the optimiser through the codebook
term alone. Dead-code refresh, k-means init, cosine codes and the rotation trick as in
_codebook.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.quantizers.output import QuantizerOutput
from model.quantizers._codebook import CodebookQuantizer, initial_codebook, nearest_code


class GradientQuantizer(CodebookQuantizer):
    def __init__(self, dim: int, num_codes: int, commitment_cost: float, usage_threshold: float = 0.05,
                 init: str = "random", cosine: bool = False, estimator: str = "ste", seed: int = 0):
        super().__init__(num_codes, dim, usage_threshold, init, cosine, estimator, seed)
        self.commitment_cost = commitment_cost
        self.codebook = nn.Parameter(initial_codebook(num_codes, dim, init, seed))

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
