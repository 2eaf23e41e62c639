"""The image segmentation (ISS) model as DiTTA uses it: one frozen backbone, decode heads apart.

The backbone is frozen and shared (by every camera stream and by the background adaptation);
decode heads are separate modules (the source head, each stream's adapted head, the momentum
head during adaptation), so one backbone pass can feed any of them.
"""
import hashlib
from dataclasses import dataclass, asdict
from typing import List, Optional, Tuple

import torch
from torch import nn

from ditta_ros.model.addon import recomputed
from ditta_ros.model.heads import DiTTAHead


@dataclass(frozen=True)
class ModelIdentity:
    """What an adapted decoder belongs to; checked when a saved decoder is loaded."""
    family: str
    variant: str
    num_classes: int
    embed_dim: int
    window: int
    backbone_fingerprint: str

    def as_dict(self) -> dict:
        return asdict(self)


def fingerprint(module: nn.Module) -> str:
    """Short hash of a module's weights (identifies the backbone an adapted head was made on)."""
    digest = hashlib.sha1()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        flat = tensor.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 64)][:64].to(torch.float64).cpu().numpy()
        digest.update(sample.tobytes())
    return digest.hexdigest()[:16]


class Segmentor(nn.Module):
    """Backbone + source decode head, with the forward passes stages A-D need."""

    def __init__(self, backbone: nn.Module, decode_head: DiTTAHead, identity: ModelIdentity):
        super().__init__()
        self.backbone = backbone
        self.decode_head = decode_head
        self.identity = identity
        for param in self.backbone.parameters():
            param.requires_grad_(False)
        self.backbone.eval()
        # channels-last convolution weights: the MiT blocks hand their token sequences to their
        # convolutions as channels-last views, which a channels-first weight made PyTorch copy
        # to channels-first and back at every depthwise conv (a 1024x512 SegFormer-B0 backbone
        # pass on 2 CPU cores: 158 ms, 89 ms without the copies)
        self.backbone.to(memory_format=torch.channels_last)

    @property
    def num_classes(self) -> int:
        return self.decode_head.num_classes

    def train(self, mode: bool = True):
        """Only the source head follows train(); the backbone stays in eval mode (frozen BN
        statistics; stochastic depth is requested per call)."""
        self.training = mode
        self.decode_head.train(mode)
        return self

    def features(self, images: torch.Tensor, stochastic: bool = False) -> List[torch.Tensor]:
        """Backbone features of a [N, 3, H, W] batch; never tracks gradients (frozen)."""
        with torch.no_grad():
            return self.backbone(images, stochastic=stochastic)

    def clip_logits(self, head: DiTTAHead, clip: torch.Tensor, stochastic: bool = False,
                    return_feat: bool = False, with_addon: bool = True
                    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The reference's forward on a clip [prev, cur] (or [cur]) on the decoder grid.

        Returns (logits, feat): logits [1, C, h, w] for a one-frame clip, [2, C, h, w] (plain,
        add-on) for a two-frame clip; feat is the projected embedding of the current frame
        [1, D, h, w] when asked. The head runs on both frames at once, so train-mode BatchNorm
        normalises over the clip as in the reference. `with_addon=False` skips the add-on
        branch (it has no BatchNorm or dropout, so nothing else changes).
        """
        embedding, logits = head(self.features(clip, stochastic))
        feat = recomputed(head.proj_feat, embedding[-1:]) if return_feat else None
        if clip.shape[0] == 1 or not with_addon:
            return logits[-1:], feat
        addon = recomputed(head.addon_logits, embedding[0], embedding[-1], logits[0])
        return torch.stack([logits[-1], addon]), feat
