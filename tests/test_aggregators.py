import pytest
import torch

from model.aggregators import build_aggregator


@pytest.mark.parametrize("kind,invariant", [("mean", True), ("last", False), ("attention", False), ("gru", False)])
def test_permuting_context_changes_output_only_for_order_aware(kind, invariant):
    torch.manual_seed(0)
    agg = build_aggregator(kind, dim=8, context_length=3)
    grids = torch.randn(4, 3, 8)  # [B, k, D]
    permuted = grids[:, [2, 0, 1]]
    same = torch.allclose(agg(grids), agg(permuted), atol=1e-6)
    assert same == invariant
    assert agg(grids).shape == (4, 8)


def test_attention_weights_sum_to_one():
    torch.manual_seed(0)
    agg = build_aggregator("attention", dim=8, context_length=3)
    with torch.no_grad():
        agg.value.weight.copy_(torch.eye(8))
        agg.value.bias.zero_()
        agg.position.zero_()
    grids = torch.ones(2, 3, 8) * 2.0  # identical grids: any convex combination returns them
    assert torch.allclose(agg(grids), torch.full((2, 8), 2.0), atol=1e-6)
