"""VQ with an EMA codebook, commitment loss and dead-code refresh (the seed's design).

van den Oord et al. 2017, "Neural Discrete Representation Learning" (VQ-VAE), Sec. 3.1 and
Appendix A.1; Laplace smoothing of the cluster sizes as in Sonnet's VectorQuantizerEMA.

    k(z)   = argmin_i ||z - e_i||^2                                  (eq. 1)
    q      = z + sg(e_k - z)                    straight-through estimator (Sec. 3.1)
    L_vq   = beta * ||z - sg(e_k)||^2           commitment term (eq. 3); no codebook term:
                                                the codebook is moved by the EMA below
    N_i   <- gamma N_i + (1 - gamma) n_i                                  (A.1, eq. 6)
    m_i   <- gamma m_i + (1 - gamma) sum_{j: k(z_j) = i} z_j              (A.1, eq. 7)
    N_i   <- (N_i + eps) / (n + K eps) * n,  n = sum_i N_i               (Laplace smoothing)
    e_i    = m_i / N_i                                                    (A.1, eq. 8)

Dead-code refresh: between two refreshes the quantizer counts assignments per code. A code
is dead when its count is below `usage_threshold` times the fair share (total / K); a refresh
replaces every dead code by a distinct random vector from the most recent training batch and
restarts its EMA statistics (N_i = 1, m_i = e_i).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.quantizers import QuantizerOutput


class EMAQuantizer(nn.Module):
    def __init__(self, dim: int, num_codes: int, commitment_cost: float, decay: float,
                 epsilon: float = 1e-5, usage_threshold: float = 0.05):
        super().__init__()
        self.num_codes, self.commitment_cost, self.decay = num_codes, commitment_cost, decay
        self.epsilon, self.usage_threshold = epsilon, usage_threshold
        codebook = torch.randn(num_codes, dim)
        self.register_buffer("codebook", codebook)  # e   [K, D]
        self.register_buffer("cluster_size", torch.ones(num_codes))  # N [K]
        self.register_buffer("embed_sum", codebook.clone())  # m   [K, D]
        self.register_buffer("counts", torch.zeros(num_codes))  # assignments since last refresh
        self.register_buffer("recent", torch.zeros(0, dim), persistent=False)  # last batch, for refresh

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        return self.codebook[indices]

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """eq. 1: ||z||^2 - 2 z.e + ||e||^2, argmin over codes. z [M, D] -> [M]."""
        dist = z.pow(2).sum(1, keepdim=True) - 2 * z @ self.codebook.T + self.codebook.pow(2).sum(1)
        return dist.argmin(dim=1)

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        indices = self.nearest(z.detach())  # [M]
        codes = self.lookup(indices)  # [M, D]
        if self.training:
            self._ema_update(z.detach(), indices)
        loss = self.commitment_cost * F.mse_loss(z, codes.detach())  # eq. 3, commitment
        quantized = z + (codes - z).detach()  # straight-through
        return QuantizerOutput(quantized, indices, loss)

    @torch.no_grad()
    def _ema_update(self, z: torch.Tensor, indices: torch.Tensor) -> None:
        onehot = F.one_hot(indices, self.num_codes).to(z.dtype)  # [M, K]
        n_i = onehot.sum(0)  # [K]
        self.counts += n_i
        self.cluster_size.mul_(self.decay).add_(n_i, alpha=1 - self.decay)  # eq. 6
        self.embed_sum.mul_(self.decay).add_(onehot.T @ z, alpha=1 - self.decay)  # eq. 7
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.epsilon) / (n + self.num_codes * self.epsilon) * n
        self.codebook.copy_(self.embed_sum / smoothed.unsqueeze(1))  # eq. 8
        self.recent = z.clone()

    @torch.no_grad()
    def dead_codes(self) -> torch.Tensor:
        """Bool [K]: codes used less than usage_threshold x fair share since the last refresh."""
        fair_share = self.counts.sum() / self.num_codes
        return self.counts < self.usage_threshold * fair_share

    @torch.no_grad()
    def refresh_dead_codes(self, generator: torch.Generator) -> int:
        """Replace dead codes by random recent encoder outputs; returns how many were revived."""
        if self.counts.sum() == 0:
            return 0  # no assignments seen since the last refresh: nothing to judge
        dead = self.dead_codes().nonzero().squeeze(1)[: len(self.recent)]
        self.counts.zero_()  # a new counting window starts at every refresh
        if len(dead) == 0:
            return 0
        pick = torch.randperm(len(self.recent), generator=generator)[: len(dead)].to(dead.device)
        self.codebook[dead] = self.recent[pick]
        self.embed_sum[dead] = self.recent[pick]
        self.cluster_size[dead] = 1.0
        return len(dead)
