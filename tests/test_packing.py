"""model/packing.py: where each real token goes, checked by its invariants and by hand."""

import torch

from model.packing import concat, pack_grids, segment_mean


def test_a_small_packing_by_hand():
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0]], dtype=torch.bool)
    p = pack_grids(mask, width=4)
    # first-fit decreasing: grid 1 (3 tokens) opens row 0, grid 0 (2) opens row 1, grid 2 (1) fits row 0
    assert p.slot_grid.tolist() == [[1, 1, 1, 2], [0, 0, -1, -1]]
    assert p.source.tolist() == [0, 1, 4, 5, 6, 8]  # grid order: mask.flatten().nonzero()
    assert p.grid.tolist() == [0, 0, 1, 1, 1, 2]
    assert p.slot.tolist() == [4, 5, 0, 1, 2, 3]
    assert p.counts.tolist() == [2.0, 3.0, 1.0] and (p.rows, p.width, p.num_tokens) == (2, 4, 6)
    allowed = p.attention_mask() == 0  # [R, 1, C, C]
    assert allowed[0, 0].tolist() == [[True, True, True, False], [True, True, True, False],
                                      [True, True, True, False], [False, False, False, True]]
    assert allowed[1, 0, 2].tolist() == [False, False, True, True]  # unused slots see each other only


def test_invariants_on_random_grids():
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 32, (300,), generator=generator)
    mask = torch.arange(31).unsqueeze(0) < lengths.unsqueeze(1)
    p = pack_grids(mask)
    assert p.width == 32 and len(set(p.slot.tolist())) == p.num_tokens == int(lengths.sum())
    assert torch.equal(p.source, mask.flatten().nonzero().squeeze(1))
    assert torch.equal(p.slot_grid.flatten()[p.slot], p.grid)
    for g in range(300):  # a grid's tokens are consecutive slots of one row, in order
        slots = p.slot[p.grid == g]
        assert torch.equal(slots, slots[0] + torch.arange(len(slots)))
        assert int(slots[0]) // p.width == int(slots[-1]) // p.width
    assert p.num_tokens / (p.rows * p.width) > 0.9  # first-fit decreasing leaves few slots unused


def test_a_grid_longer_than_the_width_widens_the_rows():
    mask = torch.ones(2, 40, dtype=torch.bool)
    assert pack_grids(mask, width=32).width == 40


def test_concat_is_the_packing_of_the_stacked_grids():
    a_mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    b_mask = torch.tensor([[1, 1, 1]], dtype=torch.bool)
    both = concat(pack_grids(a_mask, 4), pack_grids(b_mask, 4))
    stacked = torch.cat([a_mask, b_mask])
    assert torch.equal(both.source, stacked.flatten().nonzero().squeeze(1))
    assert both.grid.tolist() == [0, 0, 1, 2, 2, 2] and both.counts.tolist() == [2.0, 1.0, 3.0]
    assert torch.equal(both.slot_grid.flatten()[both.slot], both.grid)
    assert both.slot_grid.tolist() == [[0, 0, 1, -1], [2, 2, 2, -1]]


def test_segment_mean_by_hand():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    values = torch.tensor([[1.0, 2.0], [3.0, 6.0], [5.0, -1.0]])  # tokens of grid 0, 0, 1
    assert segment_mean(values, pack_grids(mask)).tolist() == [[2.0, 4.0], [5.0, -1.0]]


def test_batches_list_real_tokens_first_in_every_grid():
    """The batch builder's invariant that the bucketed reference layout relies on (checked there
    once per call; the packed layout needs no order)."""
    from model.data import load_arc_data, make_batch, make_examples

    data = load_arc_data(["arc1"], 0.1, 30, 40)
    contexts, targets = make_examples(data.train_tasks, 3, torch.Generator().manual_seed(0))
    grids = data.records.index(torch.cat([contexts[:64], targets[:64].unsqueeze(1)], 1))
    assert not (grids.mask[..., 1:] & ~grids.mask[..., :-1]).any()
    batch = make_batch(data.records, contexts[:64], targets[:64], torch.Generator().manual_seed(1), torch.device("cpu"))
    assert (batch.size, batch.context_length) == (64, 3)
    assert batch.context_packing.num_grids == 3 * 64 and batch.teacher_packing.num_grids == 4 * 64
    assert batch.features.shape[0] == batch.colours.shape[0] == int(grids.mask.sum())
    # the context tokens come first, grid by grid: each grid starts with its grid token (colour 10)
    starts = torch.cumsum(batch.teacher_packing.counts.long(), 0) - batch.teacher_packing.counts.long()
    assert (batch.colours[starts] == 10).all() and int((batch.colours == 10).sum()) == 4 * 64
