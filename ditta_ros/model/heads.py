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

from ditta_ros.model.addon import (FoldedAddon, dense_local_attention, embed_tokens,
                                   local_attention, mlp, projection_head)

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

    def folded_addon(self) -> FoldedAddon:
        """The query and key maps of frozen inference: same add-on logits, one token MLP layer
        fewer per frame (see FoldedAddon). Folded from the current weights at each call."""
        return FoldedAddon(self.query_layer, self.key_layer)

    def attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """Add-on logits [C, h, w] of frame t from its query, frame t-1's key and logits."""
        if self.attention == 'dense':
            return dense_local_attention(query, key, value, self.window)
        return local_attention(query, key, value, self.window)

    def addon_logits(self, embedding_prev: torch.Tensor, embedding: torch.Tensor,
                     logits_prev: torch.Tensor) -> torch.Tensor:
        """Add-on logits [C, h, w] of a frame from its embedding and the previous frame's
        embedding and plain logits (each [K, h, w])."""
        return self.attend(self.query(embedding), self.key(embedding_prev), logits_prev)


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
        """The mmseg head computes conv1x1(concat(upsample(linear_ci(ci)))) on the 1/4 grid with
        4D channels. The 1x1 conv and the bilinear upsampling are both linear and commute (the
        upsampling keeps constants, so the biases commute too), and the conv's slice for stage i
        folds into that stage's linear embedding: one D x C_i projection at the stage's own
        resolution, upsampled and summed. Same maths without the 4D-channel map: about 15x fewer
        multiply-adds in the head (B0) and none of its activations kept for the backward."""
        size = features[0].shape[2:]
        fuse_blocks = self.linear_fuse.conv.weight.flatten(1).split(self.embedding_dim, dim=1)
        stages = ((self.linear_c4, features[3]), (self.linear_c3, features[2]),
                  (self.linear_c2, features[1]), (self.linear_c1, features[0]))
        fused = None
        for block, (layer, x) in zip(fuse_blocks, stages):
            weight = (block @ layer.proj.weight)[:, :, None, None]
            projected = F.conv2d(x, weight, block @ layer.proj.bias)
            if projected.shape[2:] != size:
                projected = F.interpolate(projected, size=size, mode='bilinear',
                                          align_corners=False)
            fused = projected if fused is None else fused.add_(projected)
        del projected
        # in place: BatchNorm's backward needs its input, not its output
        embedding = F.relu_(self.linear_fuse.bn(fused))
        del fused
        return embedding, self._classify(embedding)

    def _classify(self, embedding: torch.Tensor) -> torch.Tensor:
        """linear_pred(dropout2d(embedding)). In training, the channel dropout mask is drawn as
        dropout2d draws it (same random stream) and folded into the 1x1 classifier per frame,
        so the dropped embedding (D floats per position) is neither built nor kept."""
        if not (self.training and self.dropout_ratio > 0):
            return self.linear_pred(embedding)
        n, d, h, w = embedding.shape
        keep = 1 - self.dropout_ratio
        noise = embedding.new_empty(n, d, 1, 1).bernoulli_(keep).div_(keep)
        weight = self.linear_pred.weight.flatten(1)[None] * noise.view(n, 1, d)
        logits = torch.baddbmm(self.linear_pred.bias[None, :, None], weight, embedding.flatten(2))
        return logits.view(n, -1, h, w)

    def classifier_parameters(self):
        return self.linear_pred.parameters()
