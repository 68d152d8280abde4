"""The length-bucketed encoder computes what the plain padded encoder computes, on real tokens."""

import pytest
import torch

from model.encoder import ObjectEncoder
from model.objects import GRID_COLOUR, NUM_FEATURES


def padded_reference(encoder: ObjectEncoder, features, colours, mask):
    """The encoder without bucketing: every grid at the full padded length N."""
    x = encoder.features(features) + encoder.colour(colours)
    return encoder.norm(encoder.blocks(x, src_key_padding_mask=~mask))


def random_grids(g: int, n: int, generator: torch.Generator):
    lengths = torch.randint(1, n + 1, (g,), generator=generator)
    lengths[0], lengths[1] = 1, n  # both extremes present
    mask = torch.arange(n).unsqueeze(0) < lengths.unsqueeze(1)  # [G, N], real tokens first
    features = torch.randn(g, n, NUM_FEATURES, generator=generator)
    colours = torch.randint(0, GRID_COLOUR + 1, (g, n), generator=generator)
    return features, colours, mask


def test_bucketed_equals_padded_on_real_tokens_and_gradients():
    torch.manual_seed(0)
    encoder = ObjectEncoder(dim=32, depth=2, heads=4)
    features, colours, mask = random_grids(40, 31, torch.Generator().manual_seed(1))
    out = encoder(features, colours, mask)
    ref = padded_reference(encoder, features, colours, mask)
    assert out.shape == ref.shape == (40, 31, 32)
    torch.testing.assert_close(out[mask], ref[mask], rtol=1e-4, atol=1e-5)
    # the gradients of any loss on real tokens agree too
    weights = torch.randn(32)
    grads = [torch.autograd.grad((y[mask] * weights).sum(), encoder.features.weight)[0]
             for y in (encoder(features, colours, mask), padded_reference(encoder, features, colours, mask))]
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-5)


def test_on_a_device_it_cannot_read_from_the_encoder_runs_padded():
    """Off the CPU the encoder reads nothing back (bucketing would, once a bucket a step): on the
    meta device, where any read-back raises, it runs at the full padded length."""
    encoder = ObjectEncoder(dim=16, depth=1, heads=2).to("meta")
    features, colours, mask = (t.to("meta") for t in random_grids(4, 8, torch.Generator().manual_seed(3)))
    assert encoder(features, colours, mask).shape == (4, 8, 16)
    with pytest.raises(Exception):
        bool(mask.any())  # the premise: the meta device has no values to read


def test_padding_before_real_tokens_is_rejected():
    encoder = ObjectEncoder(dim=16, depth=1, heads=2)
    features, colours, mask = random_grids(4, 8, torch.Generator().manual_seed(2))
    mask[2] = torch.tensor([False, True, True, False, False, False, False, False])
    with pytest.raises(ValueError, match="real tokens must come before the padding"):
        encoder(features, colours, mask)


def test_final_norm_off_leaves_the_token_scale_free():
    import torch

    from model.encoder import ObjectEncoder
    from model.objects import NUM_FEATURES

    torch.manual_seed(0)
    features, colours = torch.randn(4, 5, NUM_FEATURES) * 10, torch.randint(0, 10, (4, 5))
    mask = torch.ones(4, 5, dtype=torch.bool)
    normed = ObjectEncoder(16, 1, 2)(features, colours, mask)
    free = ObjectEncoder(16, 1, 2, final_norm=False)(features, colours, mask)
    # LayerNorm output: zero mean, unit variance per token (no affine change at init)
    assert torch.allclose(normed.mean(-1), torch.zeros(4, 5), atol=1e-5)
    assert not torch.allclose(free.mean(-1), torch.zeros(4, 5), atol=1e-3)
