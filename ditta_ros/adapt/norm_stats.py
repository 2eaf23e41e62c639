"""Normalisation statistics of the decode head re-estimated from the warm-up frames.

Covariate-shift adaptation (Schneider et al., NeurIPS 2020): a BatchNorm normalises with the
mean and variance of the source data; under a shift of appearance (fog, night, sensor noise) the
activations of the target domain have others, and normalising them with the target's moves the
features back to where the classifier expects them. The statistics of n target frames are
blended with the source's by a prior strength N (in frames):

    mu = (N mu_source + n mu_target) / (N + n),  var = (N var_source + n var_target) / (N + n)

N = 0 takes the warm-up's statistics alone. They are pooled over every position of every warm-up
frame (the variance includes the spread of the per-frame means), so one odd frame cannot swing
them the way the reference's 2-frame train-mode clip does. No weight moves: the head that results
is the "statistics only" candidate, and DiTTA's stage C trains on top of it.

Which norms: every BatchNorm of the head that normalises a feature map (`statistics_norms`); a
norm behind a global pooling (DeepLabV3's image-pooling branch) keeps its running statistics.
Norms in sequence are estimated in one pass each frame, each normalising with that frame's own
statistics while it is measured (the way the heads are trained).
"""
import copy
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ditta_ros.model.heads import DiTTAHead
from ditta_ros.model.segmentor import Segmentor
from ditta_ros.predictor import frame_input
from ditta_ros.preprocess import InputSpec


def statistics_norms(head: DiTTAHead) -> List[nn.BatchNorm2d]:
    """The head's BatchNorms that can take statistics from the frames they see (a norm applied
    to a 1x1 pooled map has one value per channel and frame: it keeps its running statistics)."""
    frozen = {id(m) for m in head.running_stat_norms()}
    return [m for m in head.modules() if isinstance(m, nn.BatchNorm2d) and id(m) not in frozen]


@dataclass
class _Moments:
    """Per-channel running sums of the per-frame means and of the per-frame second moments."""
    mean_sum: torch.Tensor
    square_sum: torch.Tensor
    frames: int = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().float()
        self.mean_sum += x.mean(dim=(0, 2, 3))
        self.square_sum += x.pow(2).mean(dim=(0, 2, 3))
        self.frames += 1

    def mean_var(self) -> Tuple[torch.Tensor, torch.Tensor]:
        mean = self.mean_sum / self.frames
        return mean, (self.square_sum / self.frames - mean.pow(2)).clamp_min(0)


@dataclass
class NormStatistics:
    """Pooled (mean, var) of each statistics norm of a head, keyed by module name, and the
    number of frames they come from."""
    moments: Dict[str, Tuple[torch.Tensor, torch.Tensor]]
    frames: int


@torch.no_grad()
def warmup_statistics(model: Segmentor, head: DiTTAHead, frames: Sequence[np.ndarray],
                      spec: InputSpec, device) -> NormStatistics:
    """The input statistics of `head`'s statistics norms over `frames` (each frame once)."""
    probe = copy.deepcopy(head).eval()
    names = {id(m): n for n, m in probe.named_modules()}
    norms = statistics_norms(probe)
    moments: Dict[str, _Moments] = {}
    hooks = []
    for norm in norms:
        norm.train()      # normalise with the frame's own statistics while measuring
        name = names[id(norm)]
        moments[name] = _Moments(torch.zeros(norm.num_features, device=device),
                                 torch.zeros(norm.num_features, device=device))
        hooks.append(norm.register_forward_pre_hook(
            lambda module, inputs, name=name: moments[name].add(inputs[0])))
    try:
        for frame in frames:
            probe(model.features(frame_input(frame, spec, device)))
    finally:
        for hook in hooks:
            hook.remove()
    return NormStatistics({n: m.mean_var() for n, m in moments.items()}, len(frames))


def with_statistics(head: DiTTAHead, stats: NormStatistics, prior: float = 0.0) -> DiTTAHead:
    """A copy of `head` (in eval mode) whose statistics norms normalise with `stats` blended
    with `head`'s own running statistics at prior strength `prior` (frames)."""
    if prior < 0:
        raise ValueError(f'the prior strength must be >= 0 frames, got {prior}')
    adapted = copy.deepcopy(head).eval()
    modules = dict(adapted.named_modules())
    share = stats.frames / (prior + stats.frames) if stats.frames else 0.0
    with torch.no_grad():
        for name, (mean, var) in stats.moments.items():
            norm = modules[name]
            norm.running_mean.lerp_(mean.to(norm.running_mean), share)
            norm.running_var.lerp_(var.to(norm.running_var), share)
    return adapted
