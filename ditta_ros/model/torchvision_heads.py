"""torchvision segmentation models (DeepLabV3, LR-ASPP) behind the DiTTA head interface.

The backbone is torchvision's own feature extractor and the decode head wraps torchvision's own
classifier module (as `decode_head.classifier`), so torchvision-format state dicts load by a plain
key prefix change. The fused decoder embedding E is where each head has one feature map right
before its final classifier:

* DeepLabV3: the output of ASPP + 3x3 conv + BN + ReLU (256 channels, stride 8 or 16);
* LR-ASPP: the gated high-level branch upsampled to the low-level grid (128 channels, stride 8);
  its logits add the low-level classifier, so both classifiers form the `cls_head` group.
"""
import torch.nn.functional as F
from torch import nn
from torchvision.models import segmentation as tv_seg

from ditta_ros.model.heads import DiTTAHead

TORCHVISION_VARIANTS = {
    ('deeplabv3', 'resnet50'): tv_seg.deeplabv3_resnet50,
    ('deeplabv3', 'resnet101'): tv_seg.deeplabv3_resnet101,
    ('deeplabv3', 'mobilenet_v3_large'): tv_seg.deeplabv3_mobilenet_v3_large,
    ('lraspp', 'mobilenet_v3_large'): tv_seg.lraspp_mobilenet_v3_large,
}


class DeepLabV3Head(DiTTAHead):
    """DeepLabHead = [ASPP, conv3x3, BN, ReLU, conv1x1]; E is the input of the last conv."""

    def __init__(self, classifier: nn.Sequential, num_classes: int, window: int):
        super().__init__(classifier[4].in_channels, num_classes, window)
        self.classifier = classifier
        self._build_addon()

    def forward(self, features):
        embedding = self.classifier[3](self.classifier[2](self.classifier[1](
            self.classifier[0](features['out']))))
        return embedding, self.classifier[4](embedding)

    def classifier_parameters(self):
        return self.classifier[4].parameters()

    def running_stat_norms(self):
        """The ASPP image-pooling BatchNorm sees one value per channel and frame."""
        pooling_branch = self.classifier[0].convs[-1]
        return [m for m in pooling_branch.modules() if isinstance(m, nn.BatchNorm2d)]

    def train(self, mode: bool = True):
        """Train mode, except the norms that keep their running statistics."""
        super().train(mode)
        for module in self.running_stat_norms():
            module.eval()
        return self


class LRASPPHead(DiTTAHead):
    """LR-ASPP: E = upsampled (cbr(high) * scale(high)); logits = low_cls(low) + high_cls(E)."""

    def __init__(self, classifier: nn.Module, num_classes: int, window: int):
        super().__init__(classifier.high_classifier.in_channels, num_classes, window)
        self.classifier = classifier
        self._build_addon()

    def forward(self, features):
        low, high = features['low'], features['high']
        gated = self.classifier.cbr(high) * self.classifier.scale(high)
        embedding = F.interpolate(gated, size=low.shape[-2:], mode='bilinear', align_corners=False)
        logits = self.classifier.low_classifier(low) + self.classifier.high_classifier(embedding)
        return embedding, logits

    def classifier_parameters(self):
        return list(self.classifier.low_classifier.parameters()) + \
            list(self.classifier.high_classifier.parameters())


class TorchvisionBackbone(nn.Module):
    """torchvision's IntermediateLayerGetter, with the `stochastic` flag the interface expects
    (these backbones have no stochastic layers; their BatchNorms always use running stats)."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x, stochastic: bool = False):
        return self.body(x)


def build_torchvision(family: str, variant: str, num_classes: int, window: int):
    """(backbone, decode head) of a torchvision segmentation model, randomly initialised."""
    builder = TORCHVISION_VARIANTS.get((family, variant))
    if builder is None:
        known = ', '.join(f'{f}/{v}' for f, v in TORCHVISION_VARIANTS)
        raise ValueError(f'unknown torchvision model {family}/{variant}; known: {known}')
    model = builder(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False)
    head_cls = DeepLabV3Head if family == 'deeplabv3' else LRASPPHead
    return TorchvisionBackbone(model.backbone), head_cls(model.classifier, num_classes, window)
