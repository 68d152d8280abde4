"""The encoder's three layouts (packed, buckets, padded) compute one function on the real tokens."""

import pytest
import torch

from model.encoder import LAYOUTS, ObjectEncoder
from model.objects import GRID_COLOUR, NUM_FEATURES
from model.packing import pack_grids


def random_grids(g: int, n: int, generator: torch.Generator, real_first: bool = True):
    lengths = torch.randint(1, n + 1, (g,), generator=generator)
    lengths[0], lengths[1] = 1, n  # both extremes present
    mask = torch.arange(n).unsqueeze(0) < lengths.unsqueeze(1)  # [G, N], real tokens first
    if not real_first:  # the same counts, scattered over the slots
        mask = torch.stack([row[torch.randperm(n, generator=generator)] for row in mask])
    features = torch.randn(g, n, NUM_FEATURES, generator=generator)
    colours = torch.randint(0, GRID_COLOUR + 1, (g, n), generator=generator)
    return features, colours, mask


def encode(encoder, features, colours, mask, width=32):
    """The encoder on the real tokens of padded grids [G, N, ...] (as make_batch hands them)."""
    packing = pack_grids(mask, width)
    return encoder(features.flatten(0, 1)[packing.source], colours.flatten()[packing.source], packing)


def outputs_and_grads(encoder, layout, features, colours, mask):
    encoder.layout = layout
    out = encode(encoder, features, colours, mask)  # [M, D]
    weights = torch.randn(out.shape[1], generator=torch.Generator().manual_seed(9))
    grads = torch.autograd.grad((out * weights).sum(), [encoder.features.weight, encoder.blocks.layers[0].self_attn.in_proj_weight])
    return out, grads


def test_every_layout_gives_the_padded_outputs_and_gradients_on_the_real_tokens():
    torch.manual_seed(0)
    encoder = ObjectEncoder(dim=32, depth=2, heads=4)
    features, colours, mask = random_grids(40, 31, torch.Generator().manual_seed(1))
    reference, reference_grads = outputs_and_grads(encoder, "padded", features, colours, mask)
    assert reference.shape == (int(mask.sum()), 32)
    for layout in LAYOUTS:
        out, grads = outputs_and_grads(encoder, layout, features, colours, mask)
        torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-5)
        for a, b in zip(grads, reference_grads):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_packed_rows_mix_grids_without_leaking_between_them():
    """Small grids share rows: a grid's output must not change when its row-mates change."""
    torch.manual_seed(0)
    encoder = ObjectEncoder(dim=16, depth=1, heads=2)
    features, colours, mask = random_grids(12, 6, torch.Generator().manual_seed(4))
    out = encode(encoder, features, colours, mask, width=8)
    assert pack_grids(mask, width=8).rows < 12  # rows do hold several grids
    alone = torch.cat([encode(encoder, features[i:i + 1], colours[i:i + 1], mask[i:i + 1], width=8) for i in range(12)])
    torch.testing.assert_close(out, alone, rtol=1e-5, atol=1e-6)


def test_packed_needs_no_token_order_and_buckets_refuse_padding_first():
    torch.manual_seed(0)
    encoder = ObjectEncoder(dim=16, depth=1, heads=2)
    features, colours, mask = random_grids(10, 8, torch.Generator().manual_seed(2), real_first=False)
    packed, _ = outputs_and_grads(encoder, "packed", features, colours, mask)
    padded, _ = outputs_and_grads(encoder, "padded", features, colours, mask)
    torch.testing.assert_close(packed, padded, rtol=1e-4, atol=1e-5)
    encoder.layout = "buckets"
    with pytest.raises(ValueError, match="real tokens must come before the padding"):
        encode(encoder, features, colours, mask)


def test_the_packed_encoder_reads_nothing_back_on_a_device():
    """On an accelerator the packed layout never waits on the device: its packing is made on the
    host; on the meta device, where any read-back raises, it runs through."""
    encoder = ObjectEncoder(dim=16, depth=1, heads=2).to("meta")
    features, colours, mask = random_grids(4, 8, torch.Generator().manual_seed(3))
    packing = pack_grids(mask)
    features, colours = features.flatten(0, 1)[packing.source].to("meta"), colours.flatten()[packing.source].to("meta")
    packing = packing.to("meta")
    assert encoder(features, colours, packing).shape == (packing.num_tokens, 16)
    with pytest.raises(Exception):
        bool(packing.grid.any())  # the premise: the meta device has no values to read


def test_final_norm_off_leaves_the_token_scale_free():
    torch.manual_seed(0)
    features, colours = torch.randn(4, 5, NUM_FEATURES) * 10, torch.randint(0, 10, (4, 5))
    mask = torch.ones(4, 5, dtype=torch.bool)
    normed = encode(ObjectEncoder(16, 1, 2), features, colours, mask)
    free = encode(ObjectEncoder(16, 1, 2, final_norm=False), features, colours, mask)
    # LayerNorm output: zero mean, unit variance per token (no affine change at init)
    assert torch.allclose(normed.mean(-1), torch.zeros(20), atol=1e-5)
    assert not torch.allclose(free.mean(-1), torch.zeros(20), atol=1e-3)
