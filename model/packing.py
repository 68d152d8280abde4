"""Packing: the real object tokens of many grids laid into rows of a fixed width.

A grid has 1 to N = 1 + max_objects tokens (ARC-AGI-1: median 6 of 31), and every op of the
encoder acts within one grid. Padding every grid to N wastes most of the work; running grids
in length buckets (model/encoder.py's reference layout) still costs one Transformer call per
bucket and reads the lengths back from the device. Packing is the standard remedy for many
short variable-length sequences (sequence packing with a document mask): the grids' real
tokens fill rows of C slots, a grid never split across rows. The linear layers and norms then
run on every slot of the R x C block at once, and self-attention runs per row with a
block-diagonal mask (a token sees the tokens of its own grid only), so one call serves the
whole batch:

    mask [G=3, N=4]           packed, C = 4              slot_grid [R=2, C=4]
    grid 0: x x . .           row 0: g1 g1 g1 g2         [[1, 1, 1, 2],
    grid 1: x x x .           row 1: g0 g0 .  .           [0, 0, -1, -1]]
    grid 2: x . . .

Rows are filled first-fit decreasing (the longest grid first, each into the first row with
room: Johnson 1973's FFD, within 11/9 of the fewest rows): about 98% of the slots hold a real
token on ARC batches at C = 32. Where a grid lands does not matter to anyone downstream: the
encoder gathers its output back into grid order.

Built on the host by the batch builder (model/data.py: make_batch), which has the masks there
before the batch moves to its device, so a GPU step never reads a length back. Everything the
encoder needs is an index: `source` (where each real token sits among the grids' G*N slots, in
grid order: the order of `mask.flatten().nonzero()`), `slot` (where it goes among the R*C packed
slots) and `grid` (which grid it belongs to, for the per-grid means).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PACK_WIDTH = 32  # C: slots per packed row, at least N (32: the attention's cost per token halves from 64, and FFD still fills 98%)


@dataclass(frozen=True)
class Packing:
    source: torch.Tensor  # [M] long: index of each real token among the G*N grid slots, grid by grid
    slot: torch.Tensor  # [M] long: its index among the R*C packed slots
    grid: torch.Tensor  # [M] long: the grid it belongs to (0..G-1), non-decreasing
    slot_grid: torch.Tensor  # [R, C] long: the grid of each packed slot, -1 where unused
    counts: torch.Tensor  # [G] float: real tokens per grid (>= 1: every grid has its grid token)
    grid_slots: int  # N, the slots per grid of the [G, N] layout `source` indexes

    @property
    def num_grids(self) -> int:
        return self.counts.shape[0]

    @property
    def num_tokens(self) -> int:
        return self.source.shape[0]

    @property
    def rows(self) -> int:
        return self.slot_grid.shape[0]

    @property
    def width(self) -> int:
        return self.slot_grid.shape[1]

    def to(self, device: torch.device | str) -> "Packing":
        return Packing(*(t.to(device) for t in (self.source, self.slot, self.grid, self.slot_grid, self.counts)),
                       self.grid_slots)

    def attention_mask(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """[R, 1, C, C] additive mask: 0 where a slot may attend to another (same grid; unused
        slots see each other, so no row of the softmax is empty), -inf elsewhere. Additive rather
        than boolean: SDPA would turn a boolean mask into this once per call, i.e. per layer."""
        same = (self.slot_grid.unsqueeze(2) == self.slot_grid.unsqueeze(1)).unsqueeze(1)  # [R, 1, C, C]
        return torch.zeros(same.shape, dtype=dtype, device=same.device).masked_fill_(~same, float("-inf"))


def pack_grids(mask: torch.Tensor, width: int = PACK_WIDTH) -> Packing:
    """mask [G, N] bool (on the host) -> the Packing of the G grids' real tokens into rows of
    max(width, N) slots, first-fit decreasing. The packed real tokens are listed in grid order
    (`source`: the order of `mask.flatten().nonzero()`, the order the quantizer and the metrics
    index codes in), each with the slot it occupies (`slot`)."""
    mask = mask.cpu()
    g, n = mask.shape
    width = max(width, n)
    lengths = mask.sum(1)  # [G]
    sizes = lengths.tolist()
    starts = [0] * g  # each grid's first slot
    free: list[int] = []  # room left in each row so far
    for i in sorted(range(g), key=sizes.__getitem__, reverse=True):  # first-fit decreasing
        length = sizes[i]
        row = next((r for r, room in enumerate(free) if room >= length), len(free))
        if row == len(free):
            free.append(width)
        starts[i] = row * width + width - free[row]
        free[row] -= length
    grid = torch.repeat_interleave(torch.arange(g), lengths)  # [M]
    first = torch.cumsum(lengths, 0) - lengths  # [G] index of each grid's first real token
    within = torch.arange(len(grid)) - first[grid]  # [M] position among its grid's real tokens
    slot = torch.tensor(starts, dtype=torch.long)[grid] + within  # [M]
    slot_grid = torch.full((len(free) * width,), -1, dtype=torch.long)
    slot_grid[slot] = grid
    return Packing(mask.flatten().nonzero().squeeze(1), slot, grid, slot_grid.view(len(free), width),
                   lengths.to(torch.float32), n)


def concat(first: Packing, second: Packing) -> Packing:
    """The packing of first's grids followed by second's, second's rows after first's: for the
    grids stacked in that order (torch.cat of their [G, N] tensors). Same N and width."""
    if (first.grid_slots, first.width) != (second.grid_slots, second.width):
        raise ValueError(f"packings of different layouts: N {first.grid_slots} vs {second.grid_slots}, "
                         f"width {first.width} vs {second.width}")
    g = first.num_grids
    return Packing(torch.cat([first.source, second.source + g * first.grid_slots]),
                   torch.cat([first.slot, second.slot + first.rows * first.width]),
                   torch.cat([first.grid, second.grid + g]),
                   torch.cat([first.slot_grid, torch.where(second.slot_grid >= 0, second.slot_grid + g, -1)]),
                   torch.cat([first.counts, second.counts]), first.grid_slots)


def segment_mean(values: torch.Tensor, packing: Packing) -> torch.Tensor:
    """Mean over each grid's real tokens: values [M, D] in packing order -> [G, D].

        out_g = (1 / n_g) sum_{i: grid_i = g} values_i"""
    sums = values.new_zeros(packing.num_grids, values.shape[-1]).index_add_(0, packing.grid, values)  # [G, D]
    return sums / packing.counts.to(values.dtype).unsqueeze(1)
