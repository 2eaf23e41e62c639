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

import torch
import torch.nn.functional as F
from torch import nn


def mlp(dim: int) -> nn.Sequential:
    """Linear-ReLU-Linear, D -> D -> D (the query and key embeddings of the add-on)."""
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))


def projection_head(dim: int) -> nn.Sequential:
    """Three 1x1 convolutions with ReLU between: features for the contrastive loss."""
    return nn.Sequential(nn.Conv2d(dim, dim, 1), nn.ReLU(), nn.Conv2d(dim, dim, 1), nn.ReLU(),
                         nn.Conv2d(dim, dim, 1))


def embed_tokens(layer: nn.Module, embedding: torch.Tensor) -> torch.Tensor:
    """Apply a token-wise MLP to a [D, h, w] map; returns [D, h, w]."""
    d, h, w = embedding.shape
    return layer(embedding.reshape(d, h * w).t()).t().reshape(-1, h, w)


@lru_cache(maxsize=16)
def _tile_window(tile: int, radius: int, device: str) -> torch.Tensor:
    """[tile^2, span^2] bool: whether a halo position is inside a tile position's window."""
    span = tile + 2 * radius
    offset = torch.arange(span, device=device)[None, :] - torch.arange(tile, device=device)[:, None]
    near = (offset - radius).abs() <= radius                       # [tile, span]
    return (near[:, None, :, None] & near[None, :, None, :]).reshape(tile * tile, span * span)


def local_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    radius: int, budget_floats: int = 8 * 2 ** 20) -> torch.Tensor:
    """Windowed attention over the previous frame, computed tile by tile.

    The grid is cut into tiles of (2r+1) x (2r+1) positions; each tile's queries attend, by one
    matrix product, to the tile's halo (the tile grown by r on every side), with the positions
    outside each query's own window, or outside the grid, masked out. The softmax therefore runs
    over exactly the keys of the dense formulation. Rows of tiles are processed in chunks that
    keep the temporaries under `budget_floats`, so memory stays linear in the pixel count.

    Args:
        query: [D, h, w] query embeddings of frame t.
        key: [D, h, w] key embeddings of frame t-1.
        value: [C, h, w] values (plain logits of frame t-1).
        radius: window radius r; each position sees (2r+1)^2 neighbours at most.
    Returns:
        [C, h, w] attended values (the add-on logits of frame t).
    """
    d, h, w = query.shape
    c = value.shape[0]
    tile = 2 * radius + 1
    span = tile + 2 * radius
    rows, cols = math.ceil(h / tile), math.ceil(w / tile)
    pad_h, pad_w = rows * tile - h, cols * tile - w
    tiles_q = F.pad(query, (0, pad_w, 0, pad_h)).view(d, rows, tile, cols, tile)
    # grid padding of the last tiles: those queries are cropped away, but must not be left with
    # every key masked (an all -inf softmax row would put NaN into the gradients)
    padding_q = F.pad(query.new_zeros(h, w, dtype=torch.bool), (0, pad_w, 0, pad_h),
                      value=True).view(rows, tile, cols, tile)
    halo_pad = (radius, radius + pad_w, radius, radius + pad_h)
    keys = F.pad(key, halo_pad)[None]
    values = F.pad(value, halo_pad)[None]
    inside = F.pad(query.new_ones(1, 1, h, w), halo_pad)
    window = _tile_window(tile, radius, str(query.device))
    per_row = cols * span * span * (d + c + 2 + tile * tile)
    step = max(1, budget_floats // per_row)
    outputs = []
    for top in range(0, rows, step):
        bottom = min(rows, top + step)
        y0, y1 = top * tile, bottom * tile + 2 * radius
        n = (bottom - top) * cols
        q = tiles_q[:, top:bottom].permute(1, 3, 2, 4, 0).reshape(n, tile * tile, d)
        k = F.unfold(keys[:, :, y0:y1], span, stride=tile).view(d, span * span, n)
        v = F.unfold(values[:, :, y0:y1], span, stride=tile).view(c, span * span, n)
        valid = F.unfold(inside[:, :, y0:y1], span, stride=tile).view(span * span, n) > 0
        allowed = valid.t()[:, None, :] & window[None]               # [n, tile^2, span^2]
        allowed = allowed | padding_q[top:bottom].permute(0, 2, 1, 3).reshape(n, -1, 1)
        logits = torch.bmm(q, k.permute(2, 0, 1))
        weights = torch.softmax(logits.masked_fill(~allowed, float('-inf')), dim=-1)
        out = torch.bmm(weights, v.permute(2, 1, 0))                  # [n, tile^2, C]
        outputs.append(out.view(bottom - top, cols, tile, tile, c))
    out = torch.cat(outputs).permute(4, 0, 2, 1, 3).reshape(c, rows * tile, cols * tile)
    return out[:, :h, :w]


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
