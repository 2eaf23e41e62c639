"""DiTTA's temporal add-on: local cross-frame attention from frame t to frame t-1.

Each position of the current frame's h x w decoder grid attends to the previous frame's positions
inside a (2r+1) x (2r+1) window around it (positions outside the grid are excluded); attention
logits are plain dot products of query and key embeddings (no 1/sqrt(D) scaling), and the values
are the previous frame's plain class logits.

The reference builds this as a dense [hw, hw] attention with a boolean window mask, so its
memory grows with (hw)^2 (about 17 G entries at 1/4 of a 1024x2048 frame). `local_attention`
computes the same softmax over the window only, one window offset at a time: memory and time grow
with hw * (2r+1)^2. `dense_local_attention` is the reference formulation, kept for the equality
test and for the benchmark that compares the two.
"""
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
def _window_validity(h: int, w: int, radius: int, device: str) -> torch.Tensor:
    """[K, h, w] bool: whether offset k of each position's window falls inside the grid."""
    ys = torch.arange(h, device=device).view(h, 1)
    xs = torch.arange(w, device=device).view(1, w)
    valid = []
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            valid.append(((ys + dy >= 0) & (ys + dy < h)) & ((xs + dx >= 0) & (xs + dx < w)))
    return torch.stack(valid)


def local_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    radius: int) -> torch.Tensor:
    """Windowed attention over the previous frame.

    Args:
        query: [D, h, w] query embeddings of frame t.
        key: [D, h, w] key embeddings of frame t-1.
        value: [C, h, w] values (plain logits of frame t-1).
        radius: window radius r; each position sees (2r+1)^2 neighbours at most.
    Returns:
        [C, h, w] attended values (the add-on logits of frame t).
    """
    d, h, w = query.shape
    pad = radius
    key_padded = F.pad(key, (pad, pad, pad, pad))
    value_padded = F.pad(value, (pad, pad, pad, pad))
    size = 2 * radius + 1
    logits = torch.stack([
        (query * key_padded[:, dy:dy + h, dx:dx + w]).sum(0)
        for dy in range(size) for dx in range(size)])
    valid = _window_validity(h, w, radius, str(query.device))
    weights = torch.softmax(logits.masked_fill(~valid, float('-inf')), dim=0)
    out = value.new_zeros(value.shape)
    k = 0
    for dy in range(size):
        for dx in range(size):
            out = out + weights[k] * value_padded[:, dy:dy + h, dx:dx + w]
            k += 1
    return out


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
