"""Health metrics of a run: pure functions of tensors, computed once per epoch on the val split.

Checklist targets from the seed: codebook usage > 15%, context rank > 10, target rank > 20.
"""

from __future__ import annotations

import torch


def effective_rank(z: torch.Tensor, eps: float = 1e-12) -> float:
    """RankMe effective rank. Garrido et al. 2023, "RankMe: Assessing the Downstream Performance
    of Pretrained Self-Supervised Representations by Their Rank", eq. 1:

        p_k = sigma_k / ||sigma||_1 + eps,    erank(z) = exp(-sum_k p_k log p_k)

    over the singular values sigma of z [N, D] (uncentred, as in the paper). Lies in [1, min(N, D)]:
    ~1 for a rank-1 matrix, D for an orthogonal [D, D] matrix.
    """
    sigma = torch.linalg.svdvals(z.detach().double())
    p = sigma / sigma.sum().clamp(min=eps) + eps
    return float(torch.exp(-(p * p.log()).sum()))


def codebook_usage(indices: torch.Tensor, num_codes: int) -> float:
    """Fraction of the K codes used at least once over an evaluation pass: |unique(indices)| / K."""
    return float(torch.unique(indices).numel() / num_codes)


def perplexity(indices: torch.Tensor, num_codes: int) -> float:
    """Codebook perplexity exp(H(p)), p_i = share of assignments to code i (VQ-VAE literature,
    e.g. Dieleman's and Sonnet's VQ-VAE). 1 when one code takes everything, K when uniform."""
    counts = torch.bincount(indices.flatten(), minlength=num_codes).double()
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return float(torch.exp(entropy))


def isotropy(z: torch.Tensor) -> float:
    """Isotropy as the normalised participation ratio of the covariance spectrum:

        lambda = eigenvalues of Cov(z),   iso(z) = (sum lambda)^2 / (D * sum lambda^2)   in [1/D, 1]

    (participation ratio: Gao, Ganguli et al. 2017, "A theory of multineuronal dimensionality";
    divided by D so 1 = perfectly isotropic, 1/D = all variance on one axis). Unlike
    min/max-eigenvalue ratios, which sit near 1e-5 for both healthy and collapsed embeddings,
    it moves smoothly with the number of dimensions in use and is scale-free.
    Sample-size condition: Cov from N samples has rank <= N - 1, so iso <= (N - 1) / D; use
    N >> D (>= 4 D here: the val split gives hundreds of samples for D = 64).
    Computed from the singular values of the centred z [N, D] (lambda ~ sigma^2).
    """
    zc = z.detach().double() - z.detach().double().mean(0, keepdim=True)
    lam = torch.linalg.svdvals(zc) ** 2
    if lam.sum() <= 0:
        return float(1.0 / z.shape[1])  # all samples equal: fully collapsed
    return float(lam.sum() ** 2 / (z.shape[1] * (lam**2).sum()))


def mutual_information(x: torch.Tensor, y: torch.Tensor) -> float:
    """I(X; Y) in nats of two label vectors x, y [M] (non-negative ints), from their joint counts:

        p_ab = n_ab / M,   I = sum_ab p_ab log( p_ab / (p_a p_b) )     (Cover & Thomas, eq. 2.28)
    """
    # relabel each vector to 0..(distinct values - 1), in sorted order: I is invariant to it, and
    # the joint table stays [distinct x, distinct y] (shape labels span 2^16 values, codes 256)
    x = torch.unique(x.flatten().long(), return_inverse=True)[1]  # [M]
    y = torch.unique(y.flatten().long(), return_inverse=True)[1]  # [M]
    ny = int(y.max()) + 1
    joint = torch.bincount(x * ny + y, minlength=(int(x.max()) + 1) * ny).double().view(-1, ny)  # [X, Y]
    p = joint / joint.sum()
    px, py = p.sum(1, keepdim=True), p.sum(0, keepdim=True)  # [X, 1], [1, Y]
    nz = p > 0
    return float((p[nz] * (p[nz] / (px * py).expand_as(p)[nz]).log()).sum())


def _entropy(x: torch.Tensor) -> float:
    p = torch.bincount(x.flatten().long()).double()
    p = p[p > 0] / p.sum()
    return float(-(p * p.log()).sum())


def normalized_mutual_information(x: torch.Tensor, y: torch.Tensor) -> float:
    """NMI(X; Y) = 2 I(X; Y) / (H(X) + H(Y)) in [0, 1] (the arithmetic-mean normalisation, Vinh,
    Epps & Bailey 2010, "Information Theoretic Measures for Clusterings Comparison", Table 2;
    scikit-learn's default). 1: each labelling determines the other; 0: independent, or both
    constant. Biased upward when X has many values for few samples (256 codes): compare it with
    the same NMI against shuffled labels (model/train.py logs that chance level beside it)."""
    h = _entropy(x) + _entropy(y)
    return 0.0 if h <= 0 else max(0.0, min(1.0, 2 * mutual_information(x, y) / h))
