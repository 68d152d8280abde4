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
restarts its EMA statistics (N_i = 1, m_i = e_i). Options shared with gradient.py (k-means
init, cosine codes, rotation trick) are in _codebook.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from model.quantizers.output import QuantizerOutput
from model.quantizers._codebook import CodebookQuantizer, initial_codebook, nearest_code


@dataclass(frozen=True)
class EMAConfig:
    """The EMA quantizer's options (a training config's `vq:` section gives them by these names,
    `decay` as `ema_decay`)."""

    num_codes: int = 256  # K, the codebook's size
    commitment_cost: float = 0.25  # beta of the commitment term (eq. 3)
    decay: float = 0.99  # gamma of the EMA update (A.1, eqs. 6-7)
    epsilon: float = 1e-5  # Laplace smoothing of the cluster sizes N_i
    refresh_usage_threshold: float = 0.05  # dead: under this fraction of the fair share since the last refresh
    init: str = "random"  # random | kmeans | uniform (_codebook.py: initial_codebook)
    cosine: bool = False  # l2-normalised z and codes
    estimator: str = "ste"  # ste | rotation: the gradient to the encoder


class EMAQuantizer(CodebookQuantizer):
    Config = EMAConfig

    def __init__(self, dim: int, config: EMAConfig, seed: int = 0):
        c = config
        super().__init__(c.num_codes, dim, c.refresh_usage_threshold, c.init, c.cosine, c.estimator, seed)
        self.commitment_cost, self.decay, self.epsilon = c.commitment_cost, c.decay, c.epsilon
        codebook = initial_codebook(c.num_codes, dim, c.init, seed)
        self.register_buffer("codebook", codebook)  # e   [K, D]
        self.register_buffer("cluster_size", torch.ones(c.num_codes))  # N [K]
        self.register_buffer("embed_sum", codebook.clone())  # m   [K, D]

    def codebook_tensor(self) -> torch.Tensor:
        return self.codebook

    def _write_codes(self, rows: torch.Tensor, vectors: torch.Tensor) -> None:
        """New codes with fresh EMA statistics (N_i = 1, m_i = e_i)."""
        self.codebook[rows] = vectors
        self.embed_sum[rows] = vectors
        self.cluster_size[rows] = 1.0

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        z = self.prepare(z)
        indices = nearest_code(z.detach(), self.codes())  # eq. 1, [M]
        codes = self.lookup(indices)  # [M, D]
        if self.training:
            self._ema_update(z.detach(), indices)
            self.record(z, indices)
        loss = self.commitment_cost * F.mse_loss(z, codes.detach())  # eq. 3, commitment
        return QuantizerOutput(self.pass_through(z, codes), indices, loss)

    @torch.no_grad()
    def _ema_update(self, z: torch.Tensor, indices: torch.Tensor) -> None:
        # n_i = #{j: k(z_j) = i} and sum_{j: k(z_j) = i} z_j by index_add_ (the one-hot matrix
        # [M, K] and its product with z, without building them)
        counts = torch.zeros_like(self.cluster_size).index_add_(0, indices, torch.ones_like(indices, dtype=z.dtype))  # [K]
        sums = torch.zeros_like(self.embed_sum).index_add_(0, indices, z)  # [K, D]
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)  # eq. 6
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)  # eq. 7
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.epsilon) / (n + self.num_codes * self.epsilon) * n
        self.codebook.copy_(self.embed_sum / smoothed.unsqueeze(1))  # eq. 8
