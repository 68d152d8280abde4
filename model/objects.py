"""ARC grid -> object records -> token features.

An object is an 8-connected component of one non-background colour (scipy.ndimage.label).
Each grid becomes a fixed-size table of records: slot 0 is the *grid token* (the whole grid),
slots 1..n the objects, the rest padding. A record holds

    colour    int    1..9 for objects, GRID_COLOUR (10) for the grid token
    box       4      r0, c0, r1, c1 (half-open pixel bounds)
    centroid  2      mean pixel (row, col)
    size      1      pixel count (grid token: non-background pixels)
    shape     SxS    occupancy of the bounding box, adaptive-average-pooled to SxS

Augmentation (the 8 dihedral transforms, colour permutations fixing 0) acts on the records,
not on pixels, so extraction runs once per distinct grid and is cached. This is exact: connected
components are dihedral-invariant, and the adaptive pooling bands are mirror-symmetric
(band i of length L spans [floor(iL/S), ceil((i+1)L/S)), whose reflection is band S-1-i), so
transforming the pooled shape equals pooling the transformed shape (tests/test_objects.py).

Object cap: a grid keeps its `max_objects` largest components (ties: earliest top-left pixel in
raster order). Noise grids have hundreds of single pixels; the grid token still summarises them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

NUM_COLOURS = 10
GRID_COLOUR = 10  # colour id of the grid token
SHAPE_SIZE = 4  # S: shape descriptor is S x S
MAX_GRID_SIDE = 30.0  # ARC grids are at most 30 x 30; coordinates are divided by this
NUM_FEATURES = 13 + SHAPE_SIZE * SHAPE_SIZE
_EIGHT_CONNECTED = np.ones((3, 3), dtype=int)


def _pool_bounds(length: int, bins: int) -> list[tuple[int, int]]:
    """Adaptive pooling bands [floor(iL/S), ceil((i+1)L/S)), as torch.nn.AdaptiveAvgPool."""
    return [((i * length) // bins, -((-(i + 1) * length) // bins)) for i in range(bins)]


def pooled_shape(mask: np.ndarray, bins: int = SHAPE_SIZE) -> np.ndarray:
    """[h, w] bool -> [bins, bins] float occupancy (adaptive average pooling, via an integral image)."""
    integral = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1))
    integral[1:, 1:] = mask.cumsum(0).cumsum(1)
    (r0, r1), (c0, c1) = (np.array(_pool_bounds(n, bins)).T for n in mask.shape)  # [bins] each
    total = (integral[r1][:, c1] - integral[r0][:, c1] - integral[r1][:, c0] + integral[r0][:, c0])
    return (total / np.outer(r1 - r0, c1 - c0)).astype(np.float32)


@dataclass(frozen=True)
class GridRecords:
    """Records of a set of grids, padded to the same slot count N (slot 0 = grid token)."""

    colour: torch.Tensor  # [G, N] long
    box: torch.Tensor  # [G, N, 4] float
    centroid: torch.Tensor  # [G, N, 2] float
    size: torch.Tensor  # [G, N] float
    shape: torch.Tensor  # [G, N, S, S] float
    hw: torch.Tensor  # [G, 2] float, grid height and width
    mask: torch.Tensor  # [G, N] bool, True where a record exists

    def index(self, idx: torch.Tensor) -> "GridRecords":
        """Gather grids by index; idx of any shape [*I] gives records shaped [*I, N, ...]."""
        return GridRecords(*(t[idx] for t in (self.colour, self.box, self.centroid, self.size,
                                              self.shape, self.hw, self.mask)))

    def tokens(self, grid: torch.Tensor, slot: torch.Tensor) -> "GridRecords":
        """The records of single tokens, each as a grid of one slot: token i is slot slot[i] of
        grid grid[i] (both [M]) -> records shaped [M, 1, ...] (hw [M, 2], the token's grid's). The
        augmentation and the features act per slot, so they run on the real tokens alone."""
        fields = (self.colour, self.box, self.centroid, self.size, self.shape)
        return GridRecords(*(t[grid, slot].unsqueeze(1) for t in fields), self.hw[grid], self.mask[grid, slot].unsqueeze(1))

    def to(self, device: torch.device | str) -> "GridRecords":
        return GridRecords(*(t.to(device) for t in (self.colour, self.box, self.centroid,
                                                     self.size, self.shape, self.hw, self.mask)))


def extract_objects(grid: np.ndarray, max_objects: int) -> list[tuple]:
    """One grid -> list of (colour, box, centroid, size, shape) records, grid token first."""
    grid = np.asarray(grid)
    h, w = grid.shape
    foreground = grid != 0
    records = [(GRID_COLOUR, (0, 0, h, w), ((h - 1) / 2, (w - 1) / 2), float(foreground.sum()),
                pooled_shape(foreground))]
    candidates = []  # (-size, raster position of top-left pixel, colour, label image, slice, label)
    for colour in np.unique(grid[foreground]):
        labels, _ = ndimage.label(grid == colour, structure=_EIGHT_CONNECTED)
        sizes = np.bincount(labels.ravel())
        for label, sl in enumerate(ndimage.find_objects(labels), start=1):
            first = np.flatnonzero(labels[sl][0] == label)[0]  # top row of the box holds a pixel
            candidates.append((-sizes[label], sl[0].start * w + sl[1].start + first,
                               int(colour), labels, sl, label))
    candidates.sort(key=lambda c: c[:2])  # largest first, then raster order
    for neg_size, _, colour, labels, sl, label in candidates[:max_objects]:
        piece = labels[sl] == label
        rr, cc = np.nonzero(piece)
        r0, c0 = sl[0].start, sl[1].start
        records.append((colour, (r0, c0, sl[0].stop, sl[1].stop), (r0 + rr.mean(), c0 + cc.mean()),
                        float(-neg_size), pooled_shape(piece)))
    return records


def build_records(grids: list[np.ndarray], max_objects: int) -> GridRecords:
    """Extract and pad the records of many grids into one GridRecords table."""
    per_grid = [extract_objects(g, max_objects) for g in grids]
    n_slots = max(len(r) for r in per_grid)
    g = len(grids)
    colour = np.zeros((g, n_slots), np.int64)
    box = np.zeros((g, n_slots, 4), np.float32)
    centroid = np.zeros((g, n_slots, 2), np.float32)
    size = np.zeros((g, n_slots), np.float32)
    shape = np.zeros((g, n_slots, SHAPE_SIZE, SHAPE_SIZE), np.float32)
    mask = np.zeros((g, n_slots), bool)
    for i, recs in enumerate(per_grid):
        for j, (c, b, ctr, s, sh) in enumerate(recs):
            colour[i, j], box[i, j], centroid[i, j], size[i, j], shape[i, j] = c, b, ctr, s, sh
        mask[i, : len(recs)] = True
    hw = np.array([np.shape(gr) for gr in grids], np.float32)
    return GridRecords(*(torch.from_numpy(a) for a in (colour, box, centroid, size, shape, hw, mask)))


# --------------------------------------------------------------------------------------------
# Augmentation on records. A dihedral op d in 0..7 is: transpose if d & 4, then flip rows if
# d & 1, then flip columns if d & 2 (same order as `dihedral_grid`).


def dihedral_grid(grid: np.ndarray, d: int) -> np.ndarray:
    """The pixel-level definition the record transform must match."""
    out = grid.T if d & 4 else grid
    out = out[::-1] if d & 1 else out
    return np.ascontiguousarray(out[:, ::-1] if d & 2 else out)


def augment(rec: GridRecords, dihedral: torch.Tensor, colour_perm: torch.Tensor) -> GridRecords:
    """Apply one dihedral op and one colour permutation per leading index.

    rec has shape [B, ...] or [B, K, ...] (K grids of one example share the op);
    dihedral: [B] long in 0..7; colour_perm: [B, 11] long lookup table with perm[0] = 0 and
    perm[10] = 10 (background and grid token fixed).
    """
    extra = rec.colour.dim() - 2  # 0 for [B, N], 1 for [B, K, N]
    d = dihedral.view(-1, *([1] * extra))  # [B, 1?]
    transpose, flip_r, flip_c = (d & 4).bool(), (d & 1).bool(), (d & 2).bool()

    hw = torch.where(transpose[..., None], rec.hw.flip(-1), rec.hw)  # [B, K?, 2]
    box = torch.where(transpose[..., None, None], rec.box[..., [1, 0, 3, 2]], rec.box)
    ctr = torch.where(transpose[..., None, None], rec.centroid.flip(-1), rec.centroid)
    shape = torch.where(transpose[..., None, None, None], rec.shape.transpose(-1, -2), rec.shape)

    height, width = hw[..., 0, None], hw[..., 1, None]  # [B, K?, 1]
    fr, fc = flip_r[..., None], flip_c[..., None]
    # r -> H - r for half-open bounds (r0, r1) -> (H - r1, H - r0); pixel centres r -> H - 1 - r
    box = torch.stack([
        torch.where(fr, height - box[..., 2], box[..., 0]),
        torch.where(fc, width - box[..., 3], box[..., 1]),
        torch.where(fr, height - box[..., 0], box[..., 2]),
        torch.where(fc, width - box[..., 1], box[..., 3]),
    ], dim=-1)
    ctr = torch.stack([torch.where(fr, height - 1 - ctr[..., 0], ctr[..., 0]),
                       torch.where(fc, width - 1 - ctr[..., 1], ctr[..., 1])], dim=-1)
    shape = torch.where(fr[..., None, None], shape.flip(-2), shape)
    shape = torch.where(fc[..., None, None], shape.flip(-1), shape)

    perm = colour_perm.view(colour_perm.shape[0], *([1] * extra), -1)  # [B, 1?, 11]
    colour = torch.gather(perm.expand(*rec.colour.shape[:-1], -1), -1, rec.colour)
    return GridRecords(colour, box, ctr, rec.size, shape, hw, rec.mask)


def random_augmentation(batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """[B] dihedral ops and [B, 11] colour permutations that fix 0 and the grid token."""
    dihedral = torch.randint(0, 8, (batch,), generator=generator)
    perm = torch.argsort(torch.rand(batch, NUM_COLOURS - 1, generator=generator), dim=1) + 1
    zeros = torch.zeros(batch, 1, dtype=torch.long)
    grid = torch.full((batch, 1), GRID_COLOUR, dtype=torch.long)
    return dihedral, torch.cat([zeros, perm, grid], dim=1)


SHAPE_FEATURES = slice(13, NUM_FEATURES)  # where featurize puts the S x S occupancy


def shape_class(features: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """Discrete shape label of each token for code-quality metrics: the S x S pooled occupancy
    thresholded at 1/2, read as an S*S-bit integer; grid tokens get their own label 2^(S*S).
    features [*, F], colours [*] -> [*] long."""
    bits = (features[..., SHAPE_FEATURES] >= 0.5).long()  # [*, S*S]
    label = (bits * (2 ** torch.arange(bits.shape[-1], device=bits.device))).sum(-1)
    return torch.where(colours == GRID_COLOUR, torch.full_like(label, 2 ** bits.shape[-1]), label)


def featurize(rec: GridRecords) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Records [*, N] -> (features [*, N, F], colour ids [*, N], mask [*, N]).

    Coordinates are divided by 30 (the largest ARC side) so absolute position and size survive.
    """
    box, ctr = rec.box / MAX_GRID_SIDE, rec.centroid / MAX_GRID_SIDE
    height, width = box[..., 2] - box[..., 0], box[..., 3] - box[..., 1]
    area = (rec.box[..., 2] - rec.box[..., 0]) * (rec.box[..., 3] - rec.box[..., 1])
    fill = rec.size / area.clamp(min=1.0)
    log_size = torch.log1p(rec.size) / np.log1p(MAX_GRID_SIDE**2)
    hw = (rec.hw / MAX_GRID_SIDE).unsqueeze(-2).expand(*box.shape[:-1], 2)
    is_grid = (rec.colour == GRID_COLOUR).float()
    feats = torch.cat([box, height[..., None], width[..., None], fill[..., None],  # 4 + 3
                       log_size[..., None], ctr, hw, is_grid[..., None],  # 1 + 2 + 2 + 1
                       rec.shape.flatten(-2)], dim=-1)  # S * S  -> [*, N, NUM_FEATURES]
    feats = feats * rec.mask[..., None]  # padding slots are exact zeros
    return feats, rec.colour * rec.mask, rec.mask
