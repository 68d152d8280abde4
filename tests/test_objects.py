import numpy as np
import pytest
import torch

from model.objects import (GRID_COLOUR, NUM_FEATURES, augment, build_records, dihedral_grid,
                           extract_objects, featurize, random_augmentation)


def test_extract_objects_by_hand():
    grid = np.array([
        [1, 1, 0, 2],
        [0, 1, 0, 0],
        [0, 0, 0, 1],  # this 1 touches nothing: a second object of colour 1
    ])
    recs = extract_objects(grid, max_objects=10)
    colour, box, centroid, size, _ = recs[0]
    assert colour == GRID_COLOUR and box == (0, 0, 3, 4) and size == 5
    objs = recs[1:]
    assert [(o[0], o[1], o[3]) for o in objs] == [
        (1, (0, 0, 2, 2), 3.0),  # largest first
        (2, (0, 3, 1, 4), 1.0),  # ties by raster order of the top-left pixel: (0, 3) ...
        (1, (2, 3, 3, 4), 1.0),  # ... before (2, 3)
    ]
    assert np.allclose(objs[0][2], (1 / 3, 2 / 3))


def test_diagonal_pixels_are_one_object():
    grid = np.eye(4, dtype=int) * 3
    assert len(extract_objects(grid, 10)) == 2  # grid token + one 8-connected diagonal


def test_object_cap_keeps_largest():
    rng = np.random.default_rng(0)
    grid = rng.integers(0, 10, (30, 30))
    recs = extract_objects(grid, max_objects=5)
    assert len(recs) == 6
    sizes = [r[3] for r in recs[1:]]
    assert sizes == sorted(sizes, reverse=True)


def _sorted_records(rec, i):
    """Records of grid i as a sorted list of tuples (slot order is irrelevant to the encoder)."""
    rows = []
    for j in range(int(rec.mask[i].sum())):
        rows.append(tuple([int(rec.colour[i, j])] + rec.box[i, j].tolist() + rec.centroid[i, j].round(decimals=4).tolist()
                          + [float(rec.size[i, j])] + rec.shape[i, j].flatten().round(decimals=5).tolist()))
    return sorted(rows)


@pytest.mark.parametrize("d", range(8))
def test_augmenting_records_equals_extracting_augmented_grid(d):
    rng = np.random.default_rng(d)
    grid = rng.integers(0, 4, (5, 7)) * (rng.random((5, 7)) > 0.4)
    perm = torch.tensor([[0, 3, 1, 2, 4, 5, 6, 7, 8, 9, GRID_COLOUR]])
    rec = build_records([grid], max_objects=100)
    augmented = augment(rec, torch.tensor([d]), perm)
    lut = perm[0, :10].numpy()
    expected = build_records([lut[dihedral_grid(grid, d)]], max_objects=100)
    assert torch.equal(augmented.hw, expected.hw)
    assert _sorted_records(augmented, 0) == _sorted_records(expected, 0)


def test_augment_shares_one_op_across_context_grids():
    grids = [np.array([[1, 0], [0, 0]]), np.array([[0, 2, 2]])]
    rec = build_records(grids, 10)
    ctx = rec.index(torch.tensor([[0, 1]]))  # [B=1, k=2, N]
    d, perm = torch.tensor([4]), torch.tensor([[0, 2, 1, 3, 4, 5, 6, 7, 8, 9, 10]])
    out = augment(ctx, d, perm)
    assert out.hw[0].tolist() == [[2.0, 2.0], [3.0, 1.0]]  # both transposed
    assert out.colour[0, 0, 1] == 2 and out.colour[0, 1, 1] == 1


def test_random_augmentation_fixes_background_and_grid_token():
    d, perm = random_augmentation(100, torch.Generator().manual_seed(0))
    assert d.min() >= 0 and d.max() <= 7
    assert (perm[:, 0] == 0).all() and (perm[:, 10] == GRID_COLOUR).all()
    assert (perm.sort(1).values == torch.arange(11)).all()


def test_featurize_shapes_and_padding():
    rec = build_records([np.array([[1]]), np.array([[1, 0, 2], [0, 3, 0]])], 10)
    feats, colours, mask = featurize(rec)
    assert feats.shape == (2, 4, NUM_FEATURES)
    assert mask.tolist() == [[True, True, False, False], [True, True, True, True]]
    assert (feats[~mask] == 0).all() and (colours[~mask] == 0).all()
