"""Mix Transformer (MiT-B0..B5), the SegFormer encoder.

Parameter names follow the SegFormer/mmsegmentation layout (`patch_embed1.proj`, `block1.0.attn.q`,
`block1.0.attn.kv`, `block1.0.mlp.dwconv.dwconv`, `norm1`, ...), which is also the layout of the
released DiTTA/CFFM checkpoints, so those load without renaming.

Stochastic depth is switched on per call (`forward(x, stochastic=True)`), not by `train()`:
the backbone is frozen and shared by every camera stream and by the background adaptation, so a
module-wide training flag set by one thread must never change another thread's inference.
The random numbers are drawn exactly as timm's DropPath draws them (one Bernoulli per sample, in
block order), which keeps stage C reproducible against the reference.
"""
from dataclasses import dataclass
from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class MiTConfig:
    """Shape of one MiT variant (values of the SegFormer paper, Table 6)."""
    embed_dims: Sequence[int]
    depths: Sequence[int]
    num_heads: Sequence[int] = (1, 2, 5, 8)
    sr_ratios: Sequence[int] = (8, 4, 2, 1)
    mlp_ratio: int = 4
    drop_path_rate: float = 0.1
    layer_norm_eps: float = 1e-6


MIT_VARIANTS = {
    'b0': MiTConfig(embed_dims=(32, 64, 160, 256), depths=(2, 2, 2, 2)),
    'b1': MiTConfig(embed_dims=(64, 128, 320, 512), depths=(2, 2, 2, 2)),
    'b2': MiTConfig(embed_dims=(64, 128, 320, 512), depths=(3, 4, 6, 3)),
    'b3': MiTConfig(embed_dims=(64, 128, 320, 512), depths=(3, 4, 18, 3)),
    'b4': MiTConfig(embed_dims=(64, 128, 320, 512), depths=(3, 8, 27, 3)),
    'b5': MiTConfig(embed_dims=(64, 128, 320, 512), depths=(3, 6, 40, 3)),
}


def drop_path(x: torch.Tensor, drop_prob: float, active: bool) -> torch.Tensor:
    """Stochastic depth: zero whole samples of a residual branch, rescale the survivors."""
    if not active or drop_prob == 0.0:
        return x
    keep_prob = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep_prob)
    if keep_prob > 0.0:
        mask.div_(keep_prob)
    return x * mask


class OverlapPatchEmbed(nn.Module):
    """Strided convolution with overlapping patches, then LayerNorm over channels."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int, stride: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x):
        x = self.proj(x)
        h, w = x.shape[2:]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class EfficientSelfAttention(nn.Module):
    """Multi-head self-attention whose keys/values come from a spatially reduced sequence."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, eps: float):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'MiT: embedding dim {dim} is not divisible by {num_heads} heads')
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.norm = nn.LayerNorm(dim, eps=1e-5)

    def forward(self, x, h, w):
        b, n, c = x.shape
        heads = self.num_heads
        q = self.q(x).reshape(b, n, heads, c // heads).transpose(1, 2)
        if self.sr_ratio > 1:
            reduced = self.sr(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)
            x = self.norm(reduced)
        kv = self.kv(x).reshape(b, -1, 2, heads, c // heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1])
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class DepthwiseConv(nn.Module):
    """3x3 depthwise convolution applied to a token sequence laid out on its h x w grid."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x, h, w):
        b, n, c = x.shape
        return self.dwconv(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)


class MixFFN(nn.Module):
    """Linear -> depthwise 3x3 conv -> GELU -> Linear (the conv supplies positional cues)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DepthwiseConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x, h, w):
        return self.fc2(self.act(self.dwconv(self.fc1(x), h, w)))


class TransformerBlock(nn.Module):
    """Pre-norm transformer block with stochastic depth on both residual branches."""

    def __init__(self, dim, num_heads, mlp_ratio, sr_ratio, drop_prob, eps):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = EfficientSelfAttention(dim, num_heads, sr_ratio, eps)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = MixFFN(dim, dim * mlp_ratio)
        self.drop_prob = drop_prob

    def forward(self, x, h, w, stochastic: bool):
        x = x + drop_path(self.attn(self.norm1(x), h, w), self.drop_prob, stochastic)
        return x + drop_path(self.mlp(self.norm2(x), h, w), self.drop_prob, stochastic)


class MixVisionTransformer(nn.Module):
    """Four-stage hierarchical encoder; returns feature maps at strides 4, 8, 16 and 32."""

    def __init__(self, cfg: MiTConfig, in_chans: int = 3):
        super().__init__()
        self.cfg = cfg
        dims = list(cfg.embed_dims)
        total = sum(cfg.depths)
        rates = torch.linspace(0, cfg.drop_path_rate, total).tolist() if total else []
        start = 0
        for stage in range(4):
            patch, stride = (7, 4) if stage == 0 else (3, 2)
            setattr(self, f'patch_embed{stage + 1}', OverlapPatchEmbed(
                in_chans if stage == 0 else dims[stage - 1], dims[stage], patch, stride))
            setattr(self, f'block{stage + 1}', nn.ModuleList(
                TransformerBlock(dims[stage], cfg.num_heads[stage], cfg.mlp_ratio,
                                 cfg.sr_ratios[stage], rates[start + i], cfg.layer_norm_eps)
                for i in range(cfg.depths[stage])))
            setattr(self, f'norm{stage + 1}', nn.LayerNorm(dims[stage], eps=cfg.layer_norm_eps))
            start += cfg.depths[stage]

    @property
    def out_channels(self) -> List[int]:
        return list(self.cfg.embed_dims)

    def forward(self, x: torch.Tensor, stochastic: bool = False) -> List[torch.Tensor]:
        outs = []
        b = x.shape[0]
        for stage in range(1, 5):
            x, h, w = getattr(self, f'patch_embed{stage}')(x)
            for block in getattr(self, f'block{stage}'):
                x = block(x, h, w, stochastic)
            x = getattr(self, f'norm{stage}')(x)
            # [N, C, h, w] in channels-last memory: the token layout itself, no copy; the
            # next stage's and the decode head's convolutions take it as it is
            x = x.reshape(b, h, w, -1).permute(0, 3, 1, 2)
            outs.append(x)
        return outs
