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


def test_mutual_information_and_nmi_hand_values():
    import math

    from model.metrics import mutual_information, normalized_mutual_information

    same = torch.tensor([0, 0, 1, 1])
    assert abs(mutual_information(same, same) - math.log(2)) < 1e-12
    assert abs(normalized_mutual_information(same, same) - 1.0) < 1e-12
    assert normalized_mutual_information(torch.tensor([0, 1, 0, 1]), same) < 1e-12  # independent
    # x = [0,0,0,1], y = [0,0,1,1]: I = 1/2 ln(4/3) + 1/4 ln(2/3) + 1/4 ln 2 = 0.215762 nats,
    # H(x) = 0.562335, H(y) = ln 2, NMI = 2 I / (H(x) + H(y)) = 0.343712
    x, y = torch.tensor([0, 0, 0, 1]), same
    assert abs(mutual_information(x, y) - 0.215762) < 1e-6
    assert abs(normalized_mutual_information(x, y) - 0.343712) < 1e-6
    # relabelling either side changes nothing; a constant labelling carries no information
    assert abs(normalized_mutual_information(x + 7, 1 - y) - 0.343712) < 1e-6
    assert normalized_mutual_information(torch.zeros(4, dtype=torch.long), y) == 0.0
    # labels spread over a large range (shape labels go up to 2^16) give the same values
    assert abs(mutual_information(x * 255, y * 65536) - 0.215762) < 1e-6
    assert abs(normalized_mutual_information(x * 255, y * 65536) - 0.343712) < 1e-6


def test_shape_class_reads_the_thresholded_occupancy():
    from model.objects import GRID_COLOUR, NUM_FEATURES, SHAPE_FEATURES, shape_class

    f = torch.zeros(3, NUM_FEATURES)
    f[0, SHAPE_FEATURES] = torch.tensor([1.0, 0.6] + [0.0] * 14)  # bits 0 and 1 -> 3
    f[1, SHAPE_FEATURES] = 0.4  # nothing reaches 1/2 -> 0
    labels = shape_class(f, torch.tensor([1, 2, GRID_COLOUR]))
    assert labels.tolist() == [3, 0, 2 ** 16]
