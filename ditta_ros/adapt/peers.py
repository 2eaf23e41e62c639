"""Peer test-time adaptation methods, frame by frame, behind one interface.

Each method keeps its own copy of what it adapts (the backbone is shared and frozen, so every
update is confined to the decode head or to an auxiliary network) and exposes
`predict(frame_rgb, adapt: bool) -> Prediction`: the prediction of the frame and, when `adapt`,
one update step on it. As in the methods' papers, the prediction comes from the forward pass
that the update uses (before the step).

* TENT (Wang et al., ICLR 2021): minimise the mean softmax entropy of the predictions; only the
  BatchNorm affine parameters of the head adapt, BatchNorm normalises with the frame's own
  statistics; Adam, lr 1e-3, one step per frame.
* CoTTA (Wang et al., CVPR 2022): a student and an EMA teacher (0.999); the teacher's prediction
  is averaged over augmentations (flips and scales) when the source model's mean confidence is
  low; the student minimises the symmetric cross-entropy to it; after each step a fraction
  0.001 of the student's weights is restored to the source values. The teacher predicts.
* AuxAdapt (Zhang et al., WACV 2022): a small auxiliary network whose logits are added to the
  frozen main model's; only the auxiliary network is updated, by self-training on the combined
  argmax.
* SAM2 refinement: no adaptation; SAM2 refines the ISS masks at every frame.
"""
import copy
from dataclasses import replace
from typing import List, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ditta_ros.model.heads import DiTTAHead
from ditta_ros.model.segmentor import Segmentor
from ditta_ros.prediction import Prediction, reliability, to_prediction
from ditta_ros.predictor import frame_input
from ditta_ros.preprocess import InputSpec
from ditta_ros.teacher.targets import IGNORE_INDEX, build_targets

class _PeerBase:
    def __init__(self, model: Segmentor, source_head: DiTTAHead, spec: InputSpec, device):
        self.model = model
        self.source_head = source_head
        self.spec = spec
        self.device = torch.device(device)

    def _input(self, frame_rgb):
        return frame_input(frame_rgb, self.spec, self.device)

    def predict(self, frame_rgb: np.ndarray, adapt: bool,
                want_reliability: bool = False) -> Prediction:
        raise NotImplementedError


def batch_statistics_norms(head: DiTTAHead) -> List[nn.BatchNorm2d]:
    """The head's BatchNorms that can normalise a single frame by its own statistics (a norm
    applied to a 1x1 pooled map cannot: it keeps its running statistics)."""
    frozen = {id(m) for m in head.running_stat_norms()}
    return [m for m in head.modules() if isinstance(m, nn.BatchNorm2d) and id(m) not in frozen]


class Tent(_PeerBase):
    """Entropy minimisation on the head's BatchNorm affine parameters."""

    def __init__(self, model, source_head, spec, device, lr: float = 1e-3):
        super().__init__(model, source_head, spec, device)
        self.head = copy.deepcopy(source_head).eval()   # eval: no dropout
        self.head.requires_grad_(False)
        params = []
        for norm in batch_statistics_norms(self.head):
            norm.track_running_stats = False               # always the frame's own statistics
            norm.running_mean = norm.running_var = None
            norm.weight.requires_grad_(True)
            norm.bias.requires_grad_(True)
            params += [norm.weight, norm.bias]
        if not params:
            raise ValueError('TENT needs BatchNorm layers in the decode head; this head has none')
        self.optimizer = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999))

    def predict(self, frame_rgb, adapt, want_reliability=False):
        x = self._input(frame_rgb)
        with torch.set_grad_enabled(adapt):
            _, logits = self.head(self.model.features(x))
            if adapt:
                step(self.optimizer, softmax_entropy(logits).mean())
        return to_prediction(logits.detach(), x.shape[-2:], frame_rgb.shape[:2],
                             want_reliability=want_reliability)


def softmax_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-pixel entropy of softmax(logits), from log-softmax (finite gradients even where a
    probability underflows to 0)."""
    log_p = torch.log_softmax(logits, dim=1)
    return -(log_p.exp() * log_p).sum(1)


def step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> bool:
    """One optimiser step; skipped (weights untouched) when the loss is not finite."""
    if not torch.isfinite(loss):
        return False
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return True


def symmetric_cross_entropy(student_logits: torch.Tensor, teacher_probs: torch.Tensor):
    """0.5 * (CE(teacher -> student) + CE(student -> teacher)), mean over pixels."""
    log_student = torch.log_softmax(student_logits, dim=1)
    student = log_student.exp()
    log_teacher = torch.log(teacher_probs.clamp_min(1e-8))
    return -0.5 * ((teacher_probs * log_student).sum(1) + (student * log_teacher).sum(1)).mean()


class CoTTA(_PeerBase):
    """Continual test-time adaptation with an EMA teacher and stochastic restoration."""

    def __init__(self, model, source_head, spec, device, lr: float = 1e-3,
                 ema: float = 0.999, restore_prob: float = 0.001,
                 confidence_threshold: float = 0.9, scales: Sequence[float] = (0.75, 1.0, 1.25),
                 flip: bool = True, seed: int = 0):
        super().__init__(model, source_head, spec, device)
        self.student = copy.deepcopy(source_head).eval()
        self.teacher = copy.deepcopy(source_head).eval().requires_grad_(False)
        self.student.requires_grad_(True)
        self.source_state = {k: v.detach().clone() for k, v in source_head.state_dict().items()}
        self.optimizer = torch.optim.Adam(self.student.parameters(), lr=lr, betas=(0.9, 0.999))
        self.ema = ema
        self.restore_prob = restore_prob
        self.threshold = confidence_threshold
        self.scales = tuple(scales)
        self.flip = flip
        self.generator = torch.Generator(device='cpu').manual_seed(seed)

    def _augmented_teacher(self, x: torch.Tensor, grid) -> torch.Tensor:
        """Teacher probabilities averaged over scaled and flipped inputs, on the grid `grid`."""
        total, count = 0.0, 0
        div = self.spec.size_divisor
        for scale in self.scales:
            h = max(div, int(round(x.shape[-2] * scale / div)) * div)
            w = max(div, int(round(x.shape[-1] * scale / div)) * div)
            xs = F.interpolate(x, size=(h, w), mode='bilinear', align_corners=False)
            for flipped in ((False, True) if self.flip else (False,)):
                inp = xs.flip(-1) if flipped else xs
                _, logits = self.teacher(self.model.features(inp))
                logits = logits.flip(-1) if flipped else logits
                logits = F.interpolate(logits, size=grid, mode='bilinear', align_corners=False)
                total = total + torch.softmax(logits, dim=1)
                count += 1
        return total / count

    @torch.no_grad()
    def _after_step(self) -> None:
        student = dict(self.student.named_parameters())
        for name, param in self.teacher.named_parameters():
            param.mul_(self.ema).add_(student[name], alpha=1 - self.ema)
        for name, param in student.items():
            source = self.source_state[name].to(param.device)
            keep = torch.rand(param.shape, generator=self.generator) >= self.restore_prob
            param.copy_(torch.where(keep.to(param.device), param, source))

    def predict(self, frame_rgb, adapt, want_reliability=False):
        x = self._input(frame_rgb)
        features = self.model.features(x)
        with torch.no_grad():
            _, teacher_logits = self.teacher(features)
            grid = teacher_logits.shape[-2:]
            teacher = torch.softmax(teacher_logits, dim=1)
            _, anchor_logits = self.source_head(features)
            confidence = torch.softmax(anchor_logits, dim=1).max(1).values.mean()
            if confidence < self.threshold:
                teacher = self._augmented_teacher(x, grid)
        if adapt:
            _, student_logits = self.student(features)
            if step(self.optimizer, symmetric_cross_entropy(student_logits, teacher)):
                self._after_step()
        return to_prediction(torch.log(teacher.clamp_min(1e-12)), x.shape[-2:],
                             frame_rgb.shape[:2], want_reliability=want_reliability)


class AuxiliaryNet(nn.Module):
    """A small convolutional network from the image to class logits on the decoder grid; its
    last layer starts at zero, so at first it leaves the main model's prediction unchanged."""

    def __init__(self, num_classes: int, stride: int, width: int = 32):
        super().__init__()
        layers, channels, reach = [], 3, 1
        while reach < stride:
            layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.ReLU()]
            channels, reach = width, reach * 2
        layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Conv2d(width, num_classes, 1)
        nn.init.zeros_(self.classifier.weight)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x, grid):
        return F.interpolate(self.classifier(self.body(x)), size=grid, mode='bilinear',
                             align_corners=False)


class AuxAdapt(_PeerBase):
    """Self-training of an auxiliary network added to the frozen model's logits."""

    def __init__(self, model, source_head, spec, device, lr: float = 1e-3, seed: int = 0):
        super().__init__(model, source_head, spec, device)
        self.seed = seed
        self.lr = lr
        self.aux = None
        self.optimizer = None

    def _build(self, x, grid):
        stride = max(1, x.shape[-2] // grid[0])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.aux = AuxiliaryNet(self.source_head.num_classes, stride).to(self.device)
        self.optimizer = torch.optim.Adam(self.aux.parameters(), lr=self.lr, betas=(0.9, 0.999))

    def predict(self, frame_rgb, adapt, want_reliability=False):
        x = self._input(frame_rgb)
        with torch.no_grad():
            _, main = self.source_head(self.model.features(x))
        grid = main.shape[-2:]
        if self.aux is None:
            self._build(x, grid)
        with torch.set_grad_enabled(adapt):
            combined = main + self.aux(x, grid)
            if adapt:
                pseudo = combined.detach().max(1).indices
                step(self.optimizer, F.cross_entropy(combined, pseudo))
        return to_prediction(combined.detach(), x.shape[-2:], frame_rgb.shape[:2],
                             want_reliability=want_reliability)


class Sam2Refine(_PeerBase):
    """Zero-shot SAM2 refinement at every frame (no adaptation): the ISS prediction is prompted
    into SAM2 exactly as in stage B, on the frame alone, and every pixel inside a SAM2 mask takes
    its object's voted class; other pixels keep the ISS label. Slow by design: it is the
    comparison point for running SAM2 at inference."""

    def __init__(self, model, source_head, spec, device, teacher, targets_cfg):
        super().__init__(model, source_head, spec, device)
        self.teacher = teacher
        self.targets_cfg = replace(targets_cfg, num_classes=source_head.num_classes)

    @torch.no_grad()
    def predict(self, frame_rgb, adapt=False, want_reliability=False):
        x = self._input(frame_rgb)
        _, logits = self.source_head(self.model.features(x))
        iss = to_prediction(logits, x.shape[-2:], frame_rgb.shape[:2], want_probs=True)
        rel = reliability(iss.probs)
        build = build_targets(self.teacher(), [frame_rgb], [iss.label.cpu()], [rel.cpu()],
                              self.targets_cfg)
        label = iss.label
        if build.targets:
            refined = build.targets[0].label().to(label.device)
            label = torch.where(refined != IGNORE_INDEX, refined, label)
        return Prediction(label, rel if want_reliability else None)


def make_peer(method: str, model, source_head, spec, device, lr: float, seed: int = 0,
              teacher=None, targets_cfg=None):
    """A fresh instance of a peer method, starting from the source head."""
    if method == 'tent':
        return Tent(model, source_head, spec, device, lr)
    if method == 'cotta':
        return CoTTA(model, source_head, spec, device, lr, seed=seed)
    if method == 'auxadapt':
        return AuxAdapt(model, source_head, spec, device, lr, seed=seed)
    if method == 'sam2_refine':
        if teacher is None or targets_cfg is None:
            raise ValueError('sam2_refine needs a SAM2 teacher')
        return Sam2Refine(model, source_head, spec, device, teacher, targets_cfg)
    raise ValueError(f'unknown peer method {method!r}')
