"""What the two explicit-codebook quantizers (ema.py, gradient.py) share.

- nearest-code search: k(z) = argmin_i ||z - e_i||^2 (VQ-VAE eq. 1);
- cosine codes (Yu et al. 2022, "Vector-quantized Image Modeling with Improved VQGAN",
  Sec. 3.2): z and the codes are l2-normalised, so the search is by cosine similarity;
- k-means++ initialisation of the codebook on the first training batch (Lloyd's algorithm;
  as in Lancucki et al. 2020, "Robust Training of Vector Quantized Bottleneck Models");
- the gradient estimator from the codes back to z: the straight-through estimator
  q = z + sg(e - z) (VQ-VAE Sec. 3.1), or the rotation trick (Fifty et al. 2024,
  "Restructuring Vector Quantization with the Rotation Trick", Sec. 4.2):
      q = sg(||e|| / ||z||) * sg(R) z,   R = I - 2 r r^T + 2 e^ z^T,   r = (z^ + e^) / ||z^ + e^||
  R rotates z^ onto e^, so the forward value is e and the gradient keeps the angle to e;
- usage counting and the dead-code refresh (see ema.py for the rule).
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F
from torch import nn


def codebook_generator(seed: int) -> torch.Generator:
    """The generator of the codebook's initial draws: a stream of its own, seeded by a hash of
    ("codebook", seed). The trainer seeds the model's parameters with torch.manual_seed(seed), and
    two generators seeded with the same number draw the same numbers: with the codebook on that
    seed too, its rows included exact copies of the encoder's N(0, 1) colour embeddings, so every
    token started next to the code of its colour (10 codes used at initialisation, code-colour
    NMI 1.0; tests/test_quantizers.py, docs/study.md)."""
    digest = hashlib.sha256(f"codebook:{seed}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def initial_codebook(num_codes: int, dim: int, init: str, seed: int,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """[K, D] starting codes. "random" (and "kmeans", overwritten on the first batch): N(0, 1)
    entries, norm ~sqrt(D), the scale of LayerNorm'd tokens. "uniform": U(-1/K, 1/K) entries, the
    reference VQ-VAE initialisation (van den Oord et al. 2017's released code and its common
    PyTorch ports: `embedding.weight.data.uniform_(-1/K, 1/K)`), codes near the origin, far
    smaller than the tokens, so the nearest code is the one with the largest z.e_i. Drawn from
    codebook_generator(seed) unless `generator` is given (the study replays the old shared stream)."""
    generator = generator if generator is not None else codebook_generator(seed)
    if init == "uniform":
        return (torch.rand(num_codes, dim, generator=generator) * 2 - 1) / num_codes
    return torch.randn(num_codes, dim, generator=generator)


def nearest_code(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """z [M, D], codebook [K, D] -> [M]: argmin_i ||z - e_i||^2 = argmin_i (||e_i||^2 - 2 z.e_i),
    since ||z||^2 is the same for every code (one addmm instead of the full distance)."""
    scores = torch.addmm(codebook.pow(2).sum(1), z, codebook.T, alpha=-2)  # [M, K]: ||e||^2 - 2 z.e
    return scores.min(dim=1).indices  # min(dim) returns the index faster than argmin on the CPU


def rotation_trick(z: torch.Tensor, e: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Fifty et al. 2024, Sec. 4.2: forward value e, gradient through a fixed rotation of z."""
    z_norm, e_norm = z.norm(dim=-1, keepdim=True).clamp(min=eps), e.norm(dim=-1, keepdim=True).clamp(min=eps)
    z_hat, e_hat = (z / z_norm).detach(), (e / e_norm).detach()
    r = F.normalize(z_hat + e_hat, dim=-1, eps=eps).detach()
    rotated = z - 2 * r * (r * z).sum(-1, keepdim=True) + 2 * e_hat * (z_hat * z).sum(-1, keepdim=True)  # R z
    return (e_norm / z_norm).detach() * rotated


def kmeans(z: torch.Tensor, k: int, iters: int, generator: torch.Generator) -> torch.Tensor:
    """Lloyd's k-means on z [M, D] -> [k, D] centroids, seeded by k-means++ (Arthur &
    Vassilvitskii 2007: each next seed drawn with probability proportional to its squared
    distance to the nearest seed so far). An empty cluster keeps its previous centroid."""
    x = z.detach().cpu()
    centroids = x[torch.randint(0, len(x), (1,), generator=generator)]
    dist = (x - centroids[0]).pow(2).sum(1)  # [M] squared distance to the nearest seed
    for _ in range(1, k):
        weights = dist if dist.sum() > 0 else torch.ones_like(dist)
        pick = torch.multinomial(weights, 1, generator=generator)
        centroids = torch.cat([centroids, x[pick]])
        dist = torch.minimum(dist, (x - x[pick]).pow(2).sum(1))
    for _ in range(iters):
        assign = nearest_code(x, centroids)  # [M]
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).unsqueeze(1).to(x.dtype)
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
    return centroids.to(z.device)


def _forget_initialised(module: "CodebookQuantizer", incompatible_keys) -> None:
    """After load_state_dict: the loaded `initialised` decides (read on the next training batch)."""
    module._known_initialised = False


class CodebookQuantizer(nn.Module):
    """Base for ema.py and gradient.py; subclasses hold the codebook and implement
    `codebook_tensor()` and `_write_codes(rows, vectors)`."""

    def __init__(self, num_codes: int, dim: int, usage_threshold: float, init: str, cosine: bool,
                 estimator: str, seed: int):
        super().__init__()
        self.num_codes, self.usage_threshold = num_codes, usage_threshold
        self.init, self.cosine, self.estimator = init, cosine, estimator
        self.generator = torch.Generator().manual_seed(seed)  # k-means seeding
        self.register_buffer("initialised", torch.tensor(init != "kmeans"))
        # the host's copy of `initialised` once it is true: prepare() reads the buffer (on an
        # accelerator, a wait for the device) only until the codebook has been initialised, and
        # once more after a load_state_dict, which may bring either value
        self._known_initialised = init != "kmeans"
        self.register_load_state_dict_post_hook(_forget_initialised)
        self.register_buffer("counts", torch.zeros(num_codes))  # assignments since last refresh
        self.register_buffer("recent", torch.zeros(0, dim), persistent=False)  # last training batch

    def codebook_tensor(self) -> torch.Tensor:
        raise NotImplementedError

    def _write_codes(self, rows: torch.Tensor, vectors: torch.Tensor) -> None:
        raise NotImplementedError

    def codes(self) -> torch.Tensor:
        """The code vectors [K, D] as used (unit-norm rows with cosine codes)."""
        book = self.codebook_tensor()
        return F.normalize(book, dim=-1) if self.cosine else book

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        return self.codes()[indices]

    def prepare(self, z: torch.Tensor) -> torch.Tensor:
        """Normalise (cosine codes) and, on the first training batch, k-means the codebook."""
        if self.cosine:
            z = F.normalize(z, dim=-1)
        if self.training and not self._known_initialised:
            if not bool(self.initialised):
                with torch.no_grad():
                    self._write_codes(torch.arange(self.num_codes, device=z.device),
                                      kmeans(z.detach(), self.num_codes, iters=10, generator=self.generator))
                self.initialised.fill_(True)
            self._known_initialised = True
        return z

    def pass_through(self, z: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Forward value = codes; gradient to z by STE or the rotation trick."""
        if self.estimator == "rotation":
            return rotation_trick(z, codes.detach())
        return z + (codes - z).detach()

    @torch.no_grad()
    def record(self, z: torch.Tensor, indices: torch.Tensor) -> None:
        # counts[k] += #{i: indices[i] = k}; index_add_ rather than bincount, which reads the
        # largest index back to the host (a wait on an accelerator) to size its output
        self.counts.index_add_(0, indices, torch.ones_like(indices, dtype=self.counts.dtype))
        self.recent = z.detach().clone()

    @torch.no_grad()
    def dead_codes(self) -> torch.Tensor:
        """Bool [K]: codes used less than usage_threshold x fair share since the last refresh."""
        return self.counts < self.usage_threshold * self.counts.sum() / self.num_codes

    @torch.no_grad()
    def refresh_dead_codes(self, generator: torch.Generator) -> int:
        """Replace dead codes by distinct random recent encoder outputs; returns how many."""
        if self.counts.sum() == 0:
            return 0  # no assignments seen since the last refresh: nothing to judge
        dead = self.dead_codes().nonzero().squeeze(1)[: len(self.recent)]
        self.counts.zero_()  # a new counting window starts at every refresh
        if len(dead) == 0:
            return 0
        pick = torch.randperm(len(self.recent), generator=generator)[: len(dead)].to(dead.device)
        self._write_codes(dead, self.recent[pick])
        return len(dead)
