"""DiTTA's temporal add-on: local cross-frame attention from frame t to frame t-1.

Each position of the current frame's h x w decoder grid attends to the previous frame's positions
inside a (2r+1) x (2r+1) window around it (positions outside the grid are excluded); attention
logits are plain dot products of query and key embeddings (no 1/sqrt(D) scaling), and the values
are the previous frame's plain class logits.

The reference builds this as a dense [hw, hw] attention with a boolean window mask, so its
memory grows with (hw)^2 (about 17 G entries at 1/4 of a 1024x2048 frame). `local_attention`
computes the same softmax over the window only (tile by tile, with batched matrix products):
memory and time grow with hw * (2r+1)^2. `dense_local_attention` is the reference formulation,
kept for the equality test and for the benchmark that compares the two.
"""
import math
from functools import lru_cache
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint


def mlp(dim: int) -> nn.Sequential:
    """Linear-ReLU-Linear, D -> D -> D (the query and key embeddings of the add-on)."""
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, dim))


def projection_head(dim: int) -> nn.Sequential:
    """Three 1x1 convolutions with ReLU between: features for the contrastive loss."""
    return nn.Sequential(nn.Conv2d(dim, dim, 1), nn.ReLU(inplace=True), nn.Conv2d(dim, dim, 1),
                         nn.ReLU(inplace=True),
                         nn.Conv2d(dim, dim, 1))


def recomputed(function: Callable[..., torch.Tensor], *inputs) -> torch.Tensor:
    """function(*inputs); while gradients are recorded, only the inputs are kept for the
    backward and the function's inner activations are recomputed there (for the add-on branch,
    its MLPs and the projection head: a few ms of compute against D floats per position per
    layer held through the whole adaptation step). Only for functions without randomness."""
    if torch.is_grad_enabled():
        return checkpoint(function, *inputs, use_reentrant=False, preserve_rng_state=False)
    return function(*inputs)


def embed_tokens(layer: Callable[[torch.Tensor], torch.Tensor],
                 embedding: torch.Tensor) -> torch.Tensor:
    """Apply a token-wise MLP to a [D, h, w] map; returns [D, h, w] (a channels-last view)."""
    d, h, w = embedding.shape
    return recomputed(layer, embedding.reshape(d, h * w).t()).t().reshape(-1, h, w)


class FoldedAddon:
    """The add-on's query and key maps for frozen inference, with one D x D token product fewer
    per frame than the two MLPs and the same attention weights.

    With the key MLP's hidden layer c = relu(W1k e + b1k), a key is W2k c + b2k, so an attention
    logit is q . (W2k c + b2k) = (W2k^T q) . c + q . b2k. The last term is the same for every key
    a query sees, and the softmax over those keys ignores it; and W2k^T q = (W2k^T W2q) a +
    W2k^T b2q, with a the query MLP's hidden layer. So the query map folds the key MLP's second
    layer into its own (a D x D product of the weights when the fold is made, instead of one per
    grid position and frame), and the key map stops at the hidden layer: three token products per
    frame instead of four (a 128 x 256 grid, 1024x512 frames on 2 cores: 141 instead of 163 ms
    for query, key and attention). Fused predictions equal those of the two MLPs on every
    reference fixture; gradients (stage C) still go through the MLPs as they are."""

    def __init__(self, query_mlp: nn.Sequential, key_mlp: nn.Sequential):
        (self._query_in, _, query_out), (self._key_in, _, key_out) = query_mlp, key_mlp
        with torch.autocast(query_out.weight.device.type, enabled=False):
            self._weight = key_out.weight.t() @ query_out.weight
            self._bias = key_out.weight.t() @ query_out.bias

    def _query_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.linear(F.relu(self._query_in(tokens), inplace=True), self._weight, self._bias)

    def _key_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.relu(self._key_in(tokens), inplace=True)

    def query(self, embedding: torch.Tensor) -> torch.Tensor:
        """[D, h, w] -> the frame's folded queries (channels-last [D, h, w])."""
        return embed_tokens(self._query_tokens, embedding)

    def key(self, embedding: torch.Tensor) -> torch.Tensor:
        """[D, h, w] -> the frame's keys for the folded queries (the key MLP's hidden layer)."""
        return embed_tokens(self._key_tokens, embedding)


# Side of the query tiles. A tile's queries share one halo of keys (the tile grown by the radius
# on every side), so smaller tiles compare each query with fewer keys ((8 + 2r)^2 instead of
# (4r + 1)^2 for tiles of 2r + 1), and 8 x 8 = 64 queries per product suit the CPU's vector
# units: at r = 5 on a 128 x 256 grid (1024x512 input), 47 ms instead of 76 ms on 2 cores;
# the best or near it for r = 2..5 and grids of 64 x 128 to 128 x 256.
TILE_SIDE = 8


@lru_cache(maxsize=16)
def _window_bias(radius: int, tile: int, device: str) -> torch.Tensor:
    """[tile^2, span^2] float, span = tile + 2r: 0 where a halo position is inside a tile
    position's window, -inf elsewhere (added to the attention logits)."""
    span = tile + 2 * radius
    offset = torch.arange(span, device=device)[None, :] - torch.arange(tile, device=device)[:, None]
    near = (offset - radius).abs() <= radius                       # [tile, span]
    inside = (near[:, None, :, None] & near[None, :, None, :]).reshape(tile * tile, span * span)
    return torch.zeros(inside.shape, device=device).masked_fill_(~inside, float('-inf'))


def _halos(grid: torch.Tensor, tile: int, span: int) -> torch.Tensor:
    """[H, W, K] padded grid (channels last) -> [tiles, span^2, K]: each tile's halo, tiles in
    row-major order (one copy of runs of K contiguous floats; the unfold views' backward sums
    the overlaps)."""
    k = grid.shape[-1]
    views = grid.unfold(0, span, tile).unfold(1, span, tile)      # [rows, cols, K, span, span]
    return views.permute(0, 1, 3, 4, 2).reshape(-1, span * span, k)


def _attend_tiles(tiles_q, keys, values, outside, padding_q, window) -> torch.Tensor:
    """One chunk of tile rows: [rows, tile, cols, tile, D] queries, their halo rows of keys,
    values and the -inf grid border (channels last) -> [rows, cols, tile, tile, C]. padding_q:
    [rows, cols, tile, tile] bool, the grid padding's queries, or None where the chunk has none."""
    rows, tile, cols, _, d = tiles_q.shape
    span = keys.shape[0] - (rows - 1) * tile
    n = rows * cols
    q = tiles_q.permute(0, 2, 1, 3, 4).reshape(n, tile * tile, d)
    bias = window + _halos(outside, tile, span).transpose(1, 2)          # [n, tile^2, span^2]
    if padding_q is not None:         # masked in place: no data-dependent read (a GPU sync)
        bias.masked_fill_(padding_q.reshape(n, tile * tile, 1), 0.0)
    logits = torch.baddbmm(bias, q, _halos(keys, tile, span).transpose(1, 2))
    weights = torch.softmax(logits, dim=-1)
    out = torch.bmm(weights, _halos(values, tile, span))                 # [n, tile^2, C]
    return out.view(rows, cols, tile, tile, -1)


class _Tiling:
    """The padded, channels-last grids of one windowed-attention call and its chunks of tile
    rows (each chunk's temporaries stay under the float budget)."""

    def __init__(self, query, key, value, radius: int, budget_floats: int):
        d, self.h, self.w = query.shape
        self.c = value.shape[0]
        self.radius = radius
        self.tile = tile = TILE_SIDE
        self.span = span = tile + 2 * radius
        self.rows, self.cols = math.ceil(self.h / tile), math.ceil(self.w / tile)
        self.pad_h, self.pad_w = self.rows * tile - self.h, self.cols * tile - self.w
        # channels last: the token MLPs already produce that memory layout (then these are views)
        queries = query.permute(1, 2, 0)
        # grid sides that are multiples of the tile need no padding: then the queries stay a view
        # (F.pad would copy the whole map, 7 ms of a 864x480 frame's add-on)
        self.queries = F.pad(queries, (0, 0, 0, self.pad_w, 0, self.pad_h)) \
            if self.pad_w or self.pad_h else queries.contiguous()
        halo_pad = (0, 0, radius, radius + self.pad_w, radius, radius + self.pad_h)
        self.keys = F.pad(key.permute(1, 2, 0), halo_pad)
        self.values = F.pad(value.permute(1, 2, 0), halo_pad)
        self.outside = F.pad(query.new_zeros(self.h, self.w, 1), halo_pad, value=float('-inf'))
        # grid padding of the last tiles: those queries are cropped away, but must not be left
        # with every key masked (an all -inf softmax row would put NaN into the gradients)
        self.padding_q = F.pad(query.new_zeros(self.h, self.w, dtype=torch.bool),
                               (0, self.pad_w, 0, self.pad_h), value=True)
        self.window = _window_bias(radius, tile, str(query.device)).to(query.dtype)
        per_row = self.cols * span * span * (d + self.c + 3 * tile * tile)
        self.step = max(1, budget_floats // per_row)

    def chunks(self):
        """(query rows, halo rows) slices of every chunk of tile rows."""
        for top in range(0, self.rows, self.step):
            bottom = min(self.rows, top + self.step)
            yield (slice(top * self.tile, bottom * self.tile),
                   slice(top * self.tile, bottom * self.tile + 2 * self.radius))

    def attend(self, queries, keys, values, rows: slice, halo: slice) -> torch.Tensor:
        """One chunk: its query rows and halo rows of keys and values -> [rows, cols, tile,
        tile, C] outputs."""
        tile = self.tile
        padded = self.pad_w > 0 or rows.stop > self.h      # known from the shapes alone
        padding_q = self.padding_q[rows].view(-1, tile, self.cols, tile).permute(0, 2, 1, 3) \
            if padded else None
        return _attend_tiles(queries.view(-1, tile, self.cols, tile, queries.shape[-1]), keys,
                             values, self.outside[halo], padding_q, self.window)

    def assemble(self, outputs) -> torch.Tensor:
        """Chunk outputs -> [C, h, w]."""
        out = torch.cat(outputs).permute(4, 0, 2, 1, 3)
        out = out.reshape(self.c, self.rows * self.tile, self.cols * self.tile)
        return out[:, :self.h, :self.w]


class _WindowedAttention(torch.autograd.Function):
    """Windowed attention whose backward recomputes each chunk and accumulates the gradients of
    its rows in place: only the inputs are kept, and no chunk's backward touches (or zero-fills)
    more than its own rows."""

    @staticmethod
    def forward(ctx, query, key, value, radius, budget_floats):
        ctx.save_for_backward(query, key, value)
        ctx.radius, ctx.budget_floats = radius, budget_floats
        return _windowed(_Tiling(query, key, value, radius, budget_floats))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        query, key, value = ctx.saved_tensors
        tiling = _Tiling(query, key, value, ctx.radius, ctx.budget_floats)
        grid = F.pad(grad_out, (0, tiling.pad_w, 0, tiling.pad_h))
        grid = grid.view(tiling.c, tiling.rows, tiling.tile, tiling.cols, tiling.tile)
        grid_out = grid.permute(1, 3, 2, 4, 0)                        # [rows, cols, t, t, C]
        inputs = (tiling.queries, tiling.keys, tiling.values)
        grads = [torch.zeros_like(t) for t in inputs]
        for rows, halo in tiling.chunks():
            leaves = [t[part].detach().requires_grad_() for t, part in zip(inputs, (rows, halo,
                                                                                      halo))]
            with torch.enable_grad():
                out = tiling.attend(*leaves, rows, halo)
                chunk = grid_out[rows.start // tiling.tile:rows.stop // tiling.tile]
                for total, part, g in zip(grads, (rows, halo, halo),
                                          torch.autograd.grad(out, leaves, chunk)):
                    total[part] += g
        r, h, w = tiling.radius, tiling.h, tiling.w
        grad_q = grads[0][:h, :w].permute(2, 0, 1)
        grad_k, grad_v = (g[r:r + h, r:r + w].permute(2, 0, 1) for g in grads[1:])
        return grad_q, grad_k, grad_v, None, None


def _windowed(tiling: _Tiling) -> torch.Tensor:
    return tiling.assemble([tiling.attend(tiling.queries[rows], tiling.keys[halo],
                                          tiling.values[halo], rows, halo)
                            for rows, halo in tiling.chunks()])


def local_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    radius: int, budget_floats: int = 8 * 2 ** 20) -> torch.Tensor:
    """Windowed attention over the previous frame, computed tile by tile.

    The grid is cut into tiles of TILE_SIDE x TILE_SIDE positions; each tile's queries attend,
    by one matrix product, to the tile's halo (the tile grown by r on every side); an additive bias
    of -inf removes the halo positions outside each query's own window or outside the grid, so
    the softmax runs over exactly the keys of the dense formulation. Rows of tiles are processed
    in chunks that keep the temporaries under `budget_floats`, so memory stays linear in the
    pixel count, also in the backward (which recomputes each chunk).

    Args:
        query: [D, h, w] query embeddings of frame t.
        key: [D, h, w] key embeddings of frame t-1.
        value: [C, h, w] values (plain logits of frame t-1).
        radius: window radius r; each position sees (2r+1)^2 neighbours at most.
    Returns:
        [C, h, w] attended values (the add-on logits of frame t).
    """
    if torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value)):
        return _WindowedAttention.apply(query, key, value, radius, budget_floats)
    return _windowed(_Tiling(query, key, value, radius, budget_floats))


def dense_local_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                          radius: int) -> torch.Tensor:
    """The reference formulation: full [hw, hw] attention masked to the window (tests/bench)."""
    d, h, w = query.shape
    c = value.shape[0]
    ys = torch.arange(h, device=query.device).repeat_interleave(w)
    xs = torch.arange(w, device=query.device).repeat(h)
    allowed = ((ys[:, None] - ys[None, :]).abs() <= radius) & \
        ((xs[:, None] - xs[None, :]).abs() <= radius)
    attn = query.reshape(d, h * w).t() @ key.reshape(d, h * w)
    attn = attn.masked_fill(~allowed, float('-inf'))
    out = torch.softmax(attn, dim=-1) @ value.reshape(c, h * w).t()
    return out.t().reshape(c, h, w)
