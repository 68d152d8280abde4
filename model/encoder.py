"""Object-centric grid encoder: object tokens -> relational self-attention -> embeddings.

Each token is a linear map of its geometric features plus a colour embedding; a stack of
pre-norm Transformer layers lets every object attend to every other object of the same grid
(relations: relative position, size, colour). No positional encoding of the slot order: the
encoder is permutation-equivariant over objects, as a set of objects has no order.

The encoder returns the real tokens only, [M, D] in grid order (the order of
`mask.flatten().nonzero()`), whatever the layout it computes them in (`layout`, the same
function up to float summation order, tested):

- packed (the default): the batch's real tokens back to back in rows of C slots
  (model/packing.py), every linear layer and norm over all of them at once, attention per row
  with a block-diagonal mask. One Transformer pass per batch, nothing read back to the host.
- buckets (the layout before packing, kept as the reference row of bench/train_throughput.py):
  grids of similar length run together, each bucket trimmed to its longest grid; one pass per
  bucket, the lengths read back to the host (off the CPU it runs padded instead).
- padded: every grid at the full N = 1 + max_objects slots (ARC-AGI-1: median 6 real of 31).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.objects import GRID_COLOUR, NUM_FEATURES
from model.packing import Packing

LAYOUTS = ("packed", "buckets", "padded")
# Upper edges of the length buckets (real tokens per grid); the last bucket takes the rest.
BUCKET_EDGES = (2, 4, 8, 16)


def packed_layer(layer: nn.TransformerEncoderLayer, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """One pre-norm Transformer layer (nn.TransformerEncoderLayer with norm_first=True, ReLU, no
    dropout, as built by ObjectEncoder), on packed slots, with its own parameters:

        x <- x + W_o MHA(LN_1(x))      attention within each packed row, under attention_mask
        x <- x + W_2 relu(W_1 LN_2(x))

    x [R*C, D] (2-D, so every linear layer is one matmul with no reshape of its gradient),
    attention_mask [R, 1, C, C] (additive: 0 = may attend, -inf = may not) -> [R*C, D]."""
    r, c = attention_mask.shape[0], attention_mask.shape[-1]
    d = x.shape[1]
    attention = layer.self_attn
    heads = attention.num_heads
    qkv = F.linear(layer.norm1(x), attention.in_proj_weight, attention.in_proj_bias)  # [R*C, 3D]
    q, k, v = qkv.view(r, c, 3, heads, d // heads).permute(2, 0, 3, 1, 4).unbind(0)  # 3 x [R, H, C, D/H]
    a = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask)  # [R, H, C, D/H], scale 1/sqrt(D/H)
    x = x + attention.out_proj(a.transpose(1, 2).reshape(r * c, d))  # heads back together: [R*C, D]
    return x + layer.linear2(F.relu(layer.linear1(layer.norm2(x)), inplace=True))  # in place: one buffer less


class ObjectEncoder(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, num_features: int = NUM_FEATURES, layout: str = "packed",
                 bucket_edges: tuple[int, ...] = BUCKET_EDGES, final_norm: bool = True,
                 colour_init_std: float | None = None):
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        self.layout, self.bucket_edges = layout, bucket_edges
        self.features = nn.Linear(num_features, dim)
        self.colour = nn.Embedding(GRID_COLOUR + 1, dim)  # N(0, 1) entries unless colour_init_std is given
        if colour_init_std is not None:
            nn.init.normal_(self.colour.weight, std=colour_init_std)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=4 * dim, dropout=0.0, activation="relu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        # final_norm=False leaves the token scale free (pre-norm blocks add to an unnormalised
        # residual stream): a candidate cause of collapse when the tokens feed a quantizer.
        self.norm = nn.LayerNorm(dim) if final_norm else nn.Identity()

    def forward(self, features: torch.Tensor, colours: torch.Tensor, packing: Packing) -> torch.Tensor:
        """The real tokens of G grids, features [M, F] and colours [M] in grid order, and their
        packing (model/packing.py: pack_grids, built on the host) -> their embeddings [M, D]."""
        x = self.features(features) + self.colour(colours)  # [M, D]
        if self.layout == "packed":
            r, c = packing.rows, packing.width
            x = x.new_zeros(r * c, x.shape[1]).index_copy(0, packing.slot, x)  # [R*C, D]: the packed rows
            attention_mask = packing.attention_mask(x.dtype)  # [R, 1, C, C], shared by the layers
            for layer in self.blocks.layers:
                x = packed_layer(layer, x, attention_mask)
            return self.norm(x[packing.slot])  # [M, D], grid order again
        # the reference layouts: every grid at N slots, its real tokens where `source` says
        g, n = packing.num_grids, packing.grid_slots
        padded = x.new_zeros(g * n, x.shape[1]).index_copy(0, packing.source, x).view(g, n, -1)  # [G, N, D]
        mask = torch.zeros(g * n, dtype=torch.bool, device=x.device).index_fill_(0, packing.source, True).view(g, n)
        if self.layout == "padded" or x.device.type != "cpu":  # buckets need the lengths on the host
            out = self.blocks(padded, src_key_padding_mask=~mask)  # [G, N, D]
        else:
            out = self._buckets(padded, mask)
        return self.norm(out.reshape(g * n, -1)[packing.source])  # [M, D]

    def _buckets(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The bucketed reference layout: x [G, N, D] -> [G, N, D], grids of similar length together."""
        if bool((mask[:, 1:] & ~mask[:, :-1]).any()):
            raise ValueError("ObjectEncoder: real tokens must come before the padding in every grid")
        lengths = mask.sum(-1)  # [G] real tokens per grid
        out = torch.zeros_like(x)  # [G, N, D]
        lower = 0
        for upper in (*self.bucket_edges, mask.shape[1]):
            rows = ((lengths > lower) & (lengths <= upper)).nonzero().squeeze(1)  # [g] grids in the bucket
            lower = upper
            if rows.numel() == 0:
                continue
            n = int(lengths[rows].max())  # trim to the bucket's longest grid
            y = self.blocks(x[rows, :n], src_key_padding_mask=~mask[rows, :n])  # [g, n, D]
            out = out.index_put((rows.unsqueeze(1), torch.arange(n, device=x.device)), y)  # out[rows, :n] = y
        return out
