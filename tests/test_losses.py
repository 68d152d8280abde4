import pytest
import math

import torch
import torch.nn.functional as F

from model.losses import info_nce, relation_matching, sigreg


def test_info_nce_hand_value():
    pred = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    target = torch.tensor([[2.0, 0.0], [1.0, 1.0]])  # normalised: (1,0), (.707,.707)
    tau = 0.5
    c = 1 / math.sqrt(2)
    row0 = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + math.exp(c / tau)))
    row1 = -math.log(math.exp(c / tau) / (math.exp(0.0) + math.exp(c / tau)))
    assert abs(info_nce(pred, target, tau).item() - (row0 + row1) / 2) < 1e-6


def test_info_nce_aligned_pairs_beat_random_pairs():
    g = torch.Generator().manual_seed(0)
    z = F.normalize(torch.randn(64, 32, generator=g), dim=1)
    aligned = info_nce(z, z, 0.1)
    shuffled = info_nce(z, z[torch.randperm(64, generator=g)], 0.1)
    assert aligned < 0.5 < math.log(64) < shuffled


def test_sigreg_lower_for_gaussian_than_uniform_or_collapsed():
    g = torch.Generator().manual_seed(0)
    dirs = torch.eye(8)  # axis directions: the uniform's marginals stay exactly uniform
    gaussian = torch.randn(1024, 8, generator=g)
    uniform = (torch.rand(1024, 8, generator=g) - 0.5) * 2 * math.sqrt(3)  # unit variance
    collapsed = torch.ones(1024, 8) * 0.3
    s_g, s_u, s_c = (sigreg(z, dirs).item() for z in (gaussian, uniform, collapsed))
    assert s_g < s_u < s_c
    # under the null E[N * EP] = int (1 - exp(-t^2)) exp(-t^2 / 2) dt = sqrt(2 pi) - sqrt(2 pi / 3) ~ 1.06
    assert s_g < 3 * (math.sqrt(2 * math.pi) - math.sqrt(2 * math.pi / 3))
    assert s_u > 5 * s_g


def test_sigreg_gradient_flows():
    z = torch.randn(64, 4, requires_grad=True)
    sigreg(z, torch.randn(4, 8)).backward()
    assert z.grad.abs().sum() > 0


def test_relation_matching_hand_value():
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # cos = 0
    t = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # cos = 1/sqrt(2)
    # two off-diagonal entries each (0 - .707)^2 = 0.5, divided by B(B-1) = 2
    assert abs(relation_matching(s, t).item() - 0.5) < 1e-6
    assert relation_matching(t, t).item() < 1e-12


def test_relation_matching_sum_is_b_times_b_minus_1_times_the_mean():
    # same pair as above: the two off-diagonal entries sum to 0.5 + 0.5 = 1.0
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    assert abs(relation_matching(s, t, "sum").item() - 1.0) < 1e-6
    a, b = torch.randn(64, 8, generator=torch.Generator().manual_seed(0)), torch.randn(64, 8)
    assert torch.allclose(relation_matching(a, b, "sum"), 64 * 63 * relation_matching(a, b, "mean"))
    with pytest.raises(ValueError):
        relation_matching(a, b, "max")
