"""Decode heads behind one interface, each carrying DiTTA's add-on and projection head.

A decode head maps backbone features to (E, logits): the fused decoder embedding E [N, D, h, w]
and the plain class logits [N, C, h, w] on the same grid. Every head also owns

* `query_layer`, `key_layer`: the add-on's token MLPs (D -> D -> D),
* `proj_feat`: the projection head used by the contrastive loss,
* `classifier_parameters()`: the final classifier (the `cls_head` target decoder).

so the adaptation code never needs to know which model family it adapts.
"""
from typing import Iterator, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ditta_ros.model.addon import (dense_local_attention, embed_tokens, local_attention, mlp,
                                   projection_head)

TARGET_DECODERS = ('decoder', 'cls_head', 'addon')


class DiTTAHead(nn.Module):
    """Base class: the add-on, the projection head and the parameter groups."""

    def __init__(self, embed_dim: int, num_classes: int, window: int):
        super().__init__()
        self.embedding_dim = embed_dim
        self.num_classes = num_classes
        self.window = window
        # 'windowed' (ours) or 'dense' (the reference's [hw, hw] formulation; for checks and
        # benchmarks only: its memory grows with the square of the pixel count)
        self.attention = 'windowed'

    def _build_addon(self) -> None:
        """Create the add-on modules; called by subclasses after their decoder modules."""
        self.query_layer = mlp(self.embedding_dim)
        self.key_layer = mlp(self.embedding_dim)
        self.proj_feat = projection_head(self.embedding_dim)

    def forward(self, features: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def classifier_parameters(self) -> Iterator[nn.Parameter]:
        raise NotImplementedError

    def running_stat_norms(self) -> List[nn.Module]:
        """BatchNorms that always keep their running statistics, also in train mode (none by
        default; a norm applied to a 1x1 pooled map has one value per channel and frame)."""
        return []

    def addon_parameters(self) -> List[nn.Parameter]:
        return list(self.query_layer.parameters()) + list(self.key_layer.parameters())

    def target_parameters(self, target_decoder: str) -> List[nn.Parameter]:
        """Parameters that adapt for a target-decoder choice (the backbone never does)."""
        if target_decoder == 'decoder':
            return list(self.parameters())
        if target_decoder == 'cls_head':
            return list(self.classifier_parameters())
        if target_decoder == 'addon':
            return self.addon_parameters()
        raise ValueError(f'unknown target decoder {target_decoder!r}; '
                         f'choose one of {", ".join(TARGET_DECODERS)}')

    def query(self, embedding: torch.Tensor) -> torch.Tensor:
        """[D, h, w] -> add-on query embedding of one frame."""
        return embed_tokens(self.query_layer, embedding)

    def key(self, embedding: torch.Tensor) -> torch.Tensor:
        """[D, h, w] -> add-on key embedding of one frame."""
        return embed_tokens(self.key_layer, embedding)

    def attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """Add-on logits [C, h, w] of frame t from its query, frame t-1's key and logits."""
        if self.attention == 'dense':
            return dense_local_attention(query, key, value, self.window)
        return local_attention(query, key, value, self.window)


class ConvBNReLU(nn.Module):
    """1x1 conv (no bias) + BatchNorm + ReLU, with mmcv ConvModule's submodule names."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class LinearEmbedding(nn.Module):
    """Per-position linear projection of a feature map to the decoder width."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)

    def forward(self, x):
        n, _, h, w = x.shape
        return self.proj(x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(n, -1, h, w)


class SegFormerHead(DiTTAHead):
    """SegFormer's all-MLP decoder (module names of the mmseg/DiTTA checkpoints)."""

    def __init__(self, in_channels: Sequence[int], embed_dim: int, num_classes: int,
                 window: int = 5, dropout_ratio: float = 0.1):
        super().__init__(embed_dim, num_classes, window)
        c1, c2, c3, c4 = in_channels
        self.linear_c4 = LinearEmbedding(c4, embed_dim)
        self.linear_c3 = LinearEmbedding(c3, embed_dim)
        self.linear_c2 = LinearEmbedding(c2, embed_dim)
        self.linear_c1 = LinearEmbedding(c1, embed_dim)
        self.linear_fuse = ConvBNReLU(4 * embed_dim, embed_dim)
        self.dropout_ratio = dropout_ratio
        self.linear_pred = nn.Conv2d(embed_dim, num_classes, 1)
        self._build_addon()

    def forward(self, features):
        c1, c2, c3, c4 = features
        size = c1.shape[2:]
        upsampled = [F.interpolate(layer(x), size=size, mode='bilinear', align_corners=False)
                     for layer, x in ((self.linear_c4, c4), (self.linear_c3, c3),
                                      (self.linear_c2, c2))]
        embedding = self.linear_fuse(torch.cat(upsampled + [self.linear_c1(c1)], dim=1))
        dropped = F.dropout2d(embedding, self.dropout_ratio, self.training) \
            if self.dropout_ratio > 0 else embedding
        return embedding, self.linear_pred(dropped)

    def classifier_parameters(self):
        return self.linear_pred.parameters()
