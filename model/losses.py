"""Training losses: pure functions of tensors."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(pred: torch.Tensor, target: torch.Tensor, temperature: torch.Tensor | float) -> torch.Tensor:
    """InfoNCE with predictions as queries and the batch's other targets as negatives.

    van den Oord et al. 2018, "Representation Learning with Contrastive Predictive Coding", eq. 4:
        p_i = pred_i / ||pred_i||,  t_j = target_j / ||target_j||
        L = -1/B sum_i log( exp(p_i.t_i / tau) / sum_j exp(p_i.t_j / tau) )
    i.e. the mean cross-entropy of the logits p t^T / tau with positives on the diagonal.
    pred, target: [B, D]. Perfectly aligned orthogonal pairs give ~0; random pairs ~log B.
    """
    logits = F.normalize(pred, dim=-1) @ F.normalize(target, dim=-1).T / temperature  # [B, B]
    labels = torch.arange(len(pred), device=pred.device)
    return F.cross_entropy(logits, labels)


def sigreg(z: torch.Tensor, directions: torch.Tensor, num_knots: int = 17, t_max: float = 5.0) -> torch.Tensor:
    """SIGReg: sketched Epps-Pulley test of 1-D projections of z against N(0, 1).

    Balestriero & LeCun 2025, "LeJEPA: Provable and Scalable Self-Supervised Learning Without
    the Heuristics", Sec. 4 (SIGReg) with the Epps-Pulley statistic (Epps & Pulley 1983):
        x_m = z a_m  for unit directions a_m (m = 1..M)
        phi_N(t) = 1/N sum_n exp(i t x_mn)         (empirical characteristic function)
        EP_m = N * int |phi_N(t) - exp(-t^2 / 2)|^2 w(t) dt,  w(t) = exp(-t^2 / 2)
        SIGReg = 1/M sum_m EP_m
    The integral is the trapezoid rule on `num_knots` points of [-t_max, t_max].
    z: [N, D]; directions: [D, M] (columns are normalised here). 0 iff every projection's
    empirical characteristic function equals the standard normal's on the knots.
    """
    a = directions / directions.norm(dim=0, keepdim=True)  # [D, M]
    t = torch.linspace(-t_max, t_max, num_knots, device=z.device, dtype=z.dtype)  # [T]
    xt = (z @ a).unsqueeze(-1) * t  # [N, M, T]
    real, imag = torch.cos(xt).mean(0), torch.sin(xt).mean(0)  # [M, T]
    gauss = torch.exp(-0.5 * t**2)  # [T], characteristic function of N(0,1) and weight w(t)
    err = ((real - gauss) ** 2 + imag**2) * gauss  # [M, T]
    return torch.trapezoid(err, t, dim=-1).mean() * z.shape[0]


def random_directions(dim: int, num: int, generator: torch.Generator, device=None) -> torch.Tensor:
    """[dim, num] Gaussian directions for sigreg (normalised there), drawn from `generator`."""
    return torch.randn(dim, num, generator=generator).to(device)


def relation_matching(student: torch.Tensor, teacher: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Relational loss: match the batch's pairwise cosine-similarity matrices.

    The distance-wise term of Park et al. 2019, "Relational Knowledge Distillation", with cosine
    similarity as the relation:
        S_ij = cos(student_i, student_j),  T_ij = cos(teacher_i, teacher_j)
        L = 1 / (B (B - 1)) sum_{i != j} (S_ij - T_ij)^2       (reduction "mean")
        L =                 sum_{i != j} (S_ij - T_ij)^2       (reduction "sum")
    "sum" is B (B - 1) times "mean" (4032x at B = 64): a candidate for the seed's relational loss
    of 37.1 at epoch 1 (weight 0.05), larger than its InfoNCE. The teacher side is a target
    (detached by the caller). student, teacher: [B, D]; B >= 2.
    """
    s = F.normalize(student, dim=-1)
    t = F.normalize(teacher, dim=-1)
    diff = s @ s.T - t @ t.T  # [B, B]; diagonal is 0 - 0
    b = len(s)
    total = diff.pow(2).sum()
    if reduction == "sum":
        return total
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    return total / (b * (b - 1))

