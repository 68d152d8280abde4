import math

import torch

from model.metrics import codebook_usage, effective_rank, isotropy, perplexity


def test_effective_rank_rank_one_is_one():
    u, v = torch.randn(100, 1), torch.randn(1, 16)
    assert abs(effective_rank(u @ v) - 1.0) < 1e-3


def test_effective_rank_identity_is_dimension():
    assert abs(effective_rank(torch.eye(32)) - 32.0) < 1e-3


def test_effective_rank_hand_value():
    # singular values 3 and 1: p = (0.75, 0.25), erank = exp(-(.75 ln .75 + .25 ln .25))
    z = torch.diag(torch.tensor([3.0, 1.0]))
    expected = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert abs(effective_rank(z) - expected) < 1e-6


def test_codebook_usage_and_perplexity_hand_values():
    idx = torch.tensor([0, 0, 1, 3])
    assert codebook_usage(idx, 8) == 3 / 8
    # p = (1/2, 1/4, 0, 1/4): H = 1.5 ln 2, exp(H) = 2 ** 1.5
    assert abs(perplexity(idx, 8) - 2**1.5) < 1e-9
    assert abs(perplexity(torch.tensor([5, 5, 5]), 8) - 1.0) < 1e-12
    assert abs(perplexity(torch.arange(8), 8) - 8.0) < 1e-9


def test_isotropy_separates_healthy_from_collapsed():
    g = torch.Generator().manual_seed(0)
    healthy = torch.randn(4000, 16, generator=g)
    collapsed = torch.randn(4000, 1, generator=g) @ torch.randn(1, 16, generator=g)
    assert isotropy(healthy) > 0.95
    assert abs(isotropy(collapsed) - 1 / 16) < 1e-6
    # two equal directions of variance out of D = 4: (2)^2 / (4 * 2) = 0.5
    two = torch.zeros(4, 4)
    two[0, 0], two[1, 0], two[2, 1], two[3, 1] = 1, -1, 1, -1
    assert abs(isotropy(two) - 0.5) < 1e-9


def test_isotropy_is_scale_free():
    z = torch.randn(500, 8)
    assert abs(isotropy(z) - isotropy(1e-3 * z)) < 1e-9
