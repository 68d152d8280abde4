import pytest
import torch

from model.aggregators import build_aggregator


@pytest.mark.parametrize("kind,invariant", [("mean", True), ("last", False)])
def test_permuting_context_changes_output_only_for_order_aware(kind, invariant):
    torch.manual_seed(0)
    agg = build_aggregator(kind, dim=8, context_length=3)
    grids = torch.randn(4, 3, 8)  # [B, k, D]
    permuted = grids[:, [2, 0, 1]]
    same = torch.allclose(agg(grids), agg(permuted), atol=1e-6)
    assert same == invariant
    assert agg(grids).shape == (4, 8)
