"""DiTTA stage C: adapt a copy of the decode head on the warm-up frames (paper Eq. 5-8).

Per warm-up frame with a target, one AdamW step on

    L = CE(plain) + CE(add-on) + L_contra

* Distillation label: the ISS label, overwritten by the target's label where that is not 255.
* Reference quirks kept because the published numbers depend on them: the cross-entropy is
  given softmax *probabilities* as logits (softmax applied twice), and its mean runs over all
  pixels with ignored pixels counting as 0 (mmseg's reduction), for both losses.
* L_contra: projected features of the live and the momentum (EMA 0.99) head, L2-normalised,
  resized to the frame, normalised again; per object a prototype = mean of momentum feature x
  momentum reliability (entropy of the softmax of its probabilities, min-max normalised),
  normalised, blended with the object's stored prototype as normalise((new + old) / 2); cosine
  similarity of every live pixel to every prototype, cross-entropy over objects (T = 1).
* Both heads run in train mode (dropout, BatchNorm batch statistics over the 2-frame clip,
  stochastic depth in the backbone); the backbone itself is frozen and shared.

Streaming deviations, with equal results: the backbone is not duplicated (it is frozen, so the
live and momentum copies would hold the same weights; only decode-head parameters take the EMA)
and the momentum head skips its add-on branch (unused by the losses, no RNG or BatchNorm in it).
"""
import copy
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ditta_ros.adapt.guard import memory_in_use_mb
from ditta_ros.adapt.presets import PRESETS
from ditta_ros.adapt.upsampled_features import UpsampledNormalisedFeatures
from ditta_ros.model.addon import recomputed
from ditta_ros.model.heads import DiTTAHead
from ditta_ros.model.segmentor import Segmentor
from ditta_ros.prediction import resize_logits
from ditta_ros.preprocess import InputSpec, prepare_frame
from ditta_ros.runtime import release_freed_memory
from ditta_ros.teacher.targets import IGNORE_INDEX, Target


_OBJECT_CHUNK = 16  # objects whose prototype weights are scattered back at once


class AdaptationError(RuntimeError):
    """Adaptation cannot go on (non-finite loss, diverging model, ...)."""


class AdaptationCancelled(RuntimeError):
    """The caller asked the adaptation to stop (shutdown, reset, restart)."""


@dataclass(frozen=True)
class AdaptConfig:
    """Stage-C hyper-parameters; the defaults are the reference's (`AdaptConfig.preset` builds
    the named recipes of presets.py)."""
    target_decoder: str = 'decoder'   # decoder | cls_head | addon
    lr: float = 1e-3
    passes: int = 5
    max_steps: int = 0                # most steps in all (0: passes x frames, as the reference)
    momentum: float = 0.99
    temperature: float = 1.0
    soft_contra: bool = True
    weight_decay: float = 0.01        # torch's AdamW default, as the reference
    max_memory_mb: float = 0.0        # memory budget of the adaptation (0: none), see guard.py
    distill_loss: str = 'reference'   # reference | balanced (see DISTILL_LOSSES)
    label_rule: str = 'override'      # override | keep_confident (see LABEL_RULES)
    keep_reliability: float = 0.9     # keep_confident: source labels this reliable stay
    norm_stats: str = 'batch'         # batch (reference) | source | warmup (see NORM_STATS)
    norm_prior: float = 0.0           # warmup: prior strength of the source statistics (frames)
    holdout_frames: int = 0           # warm-up frames kept out of stage C for the choice
    choose: bool = False              # label-free choice among adapted / statistics / source
    serve: str = 'live'               # live | momentum: which adapted head serves
    addon_lr: float = 0.0             # add-on MLPs' learning rate (0: lr, as the reference)


    @classmethod
    def preset(cls, name: str, **changes) -> 'AdaptConfig':
        """The recipe `name` of presets.PRESETS, with `changes` on top."""
        if name not in PRESETS:
            raise ValueError(f'unknown adaptation preset {name!r}; choose one of '
                             f'{", ".join(PRESETS)}')
        recipe = {k: v for k, v in PRESETS[name].items()
                  if k not in ('fusion_tau', 'fusion_hold', 'harm_check')}
        return cls(**dict(recipe, **changes))


def all_pixel_cross_entropy(scores: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over every pixel, ignored pixels contributing 0 (mmseg)."""
    return F.cross_entropy(scores, label, reduction='none', ignore_index=IGNORE_INDEX).mean()


def distillation_loss(logits: torch.Tensor, input_hw, frame_hw,
                      label: torch.Tensor) -> torch.Tensor:
    """L_distill of one branch: decoder-grid logits [1, C, h, w] resized to the frame, softmax,
    then the all-pixel cross-entropy with those probabilities as scores (the quirk above)."""
    probs = torch.softmax(resize_logits(logits, input_hw, frame_hw), dim=1)
    return all_pixel_cross_entropy(probs, label)


def balanced_distillation_loss(logits: torch.Tensor, input_hw, frame_hw, label: torch.Tensor,
                               class_weight: torch.Tensor) -> torch.Tensor:
    """L_distill of one branch without the reference's quirks: cross-entropy of the logits
    resized to the frame, a weighted mean over the labelled pixels only, each class weighted by
    `class_weight` (see class_balance)."""
    scores = resize_logits(logits, input_hw, frame_hw)
    return F.cross_entropy(scores, label, weight=class_weight, ignore_index=IGNORE_INDEX)


def class_balance(label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-class loss weights 1/sqrt(share of the frame's labelled pixels): with a plain pixel
    mean a pole (0.5 % of the pixels) weighs 60x less than the road (30 %) and a few adaptation
    steps trade it away for the large regions; with these weights 8x less."""
    counts = torch.bincount(label[label != IGNORE_INDEX].flatten(), minlength=num_classes)
    counts = counts[:num_classes].to(torch.float32)
    share = counts / counts.sum().clamp(min=1)
    return torch.where(counts > 0, share.clamp(min=1e-12).rsqrt(), torch.zeros_like(share))


def distillation_label(iss_label: torch.Tensor, target: Target,
                       reliability: Optional[torch.Tensor] = None,
                       keep_reliability: float = 1.0) -> torch.Tensor:
    """y_t overwritten by the target label wherever the target has a class (Eq. 5); with a
    stage-A `reliability` map, only where the source model is less reliable than
    `keep_reliability` (its confident pixels keep their label: rule keep_confident)."""
    label = iss_label.clone()
    target_label = target.label().to(label.device)
    keep = target_label != IGNORE_INDEX
    if reliability is not None:
        keep &= reliability.to(label.device) < keep_reliability
    label[keep] = target_label[keep]
    return label


def freeze_norm_statistics(head: torch.nn.Module) -> None:
    """Put the head's BatchNorms in eval mode (norm_stats source or warmup): they normalise with
    the head's running statistics (the source model's, or those norm_stats.py estimated from the
    whole warm-up) and keep them; their affine weights still adapt.
    In train mode a 2-frame clip re-estimates them, and the warm-up's few frames moved the
    results by -5 to +11 mIoU with no weight changed."""
    for module in head.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()


def parameter_groups(head: DiTTAHead, cfg: AdaptConfig) -> List[dict]:
    """The optimiser's parameter groups: the target decoder's parameters at `cfg.lr`, and the
    add-on's query/key MLPs at `cfg.addon_lr` when that is set (> 0). The source model has no
    add-on: its MLPs start from their random initialisation, and at a learning rate low enough
    to leave the trained decoder close to the source they stay near random, an attention that
    blurs the previous frame's logits over the window (thin classes first)."""
    params = head.target_parameters(cfg.target_decoder)
    addon = {id(p) for p in head.addon_parameters()}
    if cfg.addon_lr <= 0 or not any(id(p) in addon for p in params):
        return [{'params': params}]
    return [{'params': [p for p in params if id(p) not in addon]},
            {'params': [p for p in params if id(p) in addon], 'lr': cfg.addon_lr}]


class DiTTAAdapter:
    """Live head, momentum head, AdamW and the prototype store of one adaptation."""

    def __init__(self, model: Segmentor, source_head: DiTTAHead, cfg: AdaptConfig):
        self.model = model
        self.cfg = cfg
        self.head = copy.deepcopy(source_head)
        self.momentum_head = copy.deepcopy(source_head)
        for head in (self.head, self.momentum_head):
            for param in head.parameters():
                param.requires_grad_(True)
        self.momentum_head.requires_grad_(False)
        self.optimizer = torch.optim.AdamW(parameter_groups(self.head, cfg), lr=cfg.lr,
                                           betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
        self.prototypes: Dict[int, torch.Tensor] = {}

    @torch.no_grad()
    def _update_momentum(self) -> None:
        live = dict(self.head.named_parameters())
        for name, ema in self.momentum_head.named_parameters():
            ema.mul_(self.cfg.momentum).add_(live[name], alpha=1 - self.cfg.momentum)

    def served_head(self) -> DiTTAHead:
        """The head that serves after the adaptation (cfg.serve: the live or the EMA head)."""
        return self.momentum_head if self.cfg.serve == 'momentum' else self.head

    def _train_mode(self) -> None:
        for head in (self.head, self.momentum_head):
            head.train()
            if self.cfg.norm_stats != 'batch':   # the head's own statistics, kept
                freeze_norm_statistics(head)

    def _distillation(self, logits, input_hw, frame_hw, label) -> torch.Tensor:
        # the frame-resolution maps are recomputed in the backward from the decoder-grid logits
        # instead of kept: several times the memory of everything else per branch
        if self.cfg.distill_loss == 'balanced':
            weight = class_balance(label, logits.shape[1])
            return recomputed(balanced_distillation_loss, logits, input_hw, frame_hw, label,
                              weight)
        return recomputed(distillation_loss, logits, input_hw, frame_hw, label)

    def step(self, clip: torch.Tensor, frame_hw, iss_label: torch.Tensor, target: Target,
             reliability: Optional[torch.Tensor] = None) -> Dict[str, float]:
        """One optimisation step on one warm-up frame; returns its losses.

        clip: [1 or 2, 3, h, w] normalised input (previous warm-up frame, this frame).
        iss_label, reliability: stage-A label and reliability of this frame [H, W] (the
        reliability is used by label rule keep_confident); target: its stage-B target.
        """
        device = clip.device
        input_hw = clip.shape[-2:]
        keep_confident = self.cfg.label_rule == 'keep_confident' and reliability is not None
        label = distillation_label(iss_label.to(device), target,
                                   reliability if keep_confident else None,
                                   self.cfg.keep_reliability).unsqueeze(0)
        obj_id = target.obj_id.to(device)

        self._train_mode()
        logits, feat = self.model.clip_logits(self.head, clip, stochastic=True, return_feat=True)
        with torch.no_grad():
            logits_mo, feat_mo = self.model.clip_logits(
                self.momentum_head, clip, stochastic=True, return_feat=True, with_addon=False)

        losses = {'distill': self._distillation(logits[:1], input_hw, frame_hw, label)}
        if logits.shape[0] == 2:
            losses['distill_addon'] = self._distillation(logits[1:], input_hw, frame_hw, label)
        contra = self._contrastive(obj_id, feat, feat_mo, logits_mo, input_hw)
        del feat_mo, logits_mo        # not needed by the backward: free them before it runs
        if contra is not None:
            losses['contra'] = contra
        total = sum(losses.values())
        if not torch.isfinite(total):
            raise AdaptationError(f'non-finite adaptation loss ({float(total.detach())}); '
                                  'the decoder was not updated')
        self.optimizer.zero_grad()
        total.backward()
        self.optimizer.step()
        self._update_momentum()
        losses['total'] = total
        return {k: float(v.detach()) for k, v in losses.items()}

    def _momentum_reliability(self, logits_mo: torch.Tensor, input_hw, frame_hw) -> torch.Tensor:
        """1 - min-max-normalised entropy of softmax(probabilities) (the reference's quirk), the
        probabilities being the momentum head's at the frame resolution."""
        probs_mo = torch.softmax(resize_logits(logits_mo, input_hw, frame_hw), dim=1)
        ent = -(probs_mo.softmax(1) * probs_mo.log_softmax(1)).sum(1)
        rel = 1 - (ent - ent.min()) / (ent.max() - ent.min())
        return F.interpolate(rel.unsqueeze(0), frame_hw, mode='bilinear', align_corners=False)[0]

    def _contrastive(self, obj_id, feat, feat_mo, logits_mo, input_hw) -> Optional[torch.Tensor]:
        """Mask-based contrastive alignment (Eq. 6-7). Equal to the reference's computation on
        the frame-resolution features, done without materialising them (see
        upsampled_features.py): memory grows with objects x pixels, not channels x pixels."""
        objects = [o for o in obj_id.unique().tolist() if o != 0]
        if not objects:
            return None
        h, w = obj_id.shape
        with torch.no_grad():
            momentum = UpsampledNormalisedFeatures(F.normalize(feat_mo[-1], dim=0), (h, w))
            if self.cfg.soft_contra:
                weight = self._momentum_reliability(logits_mo, input_hw, (h, w))[0]
            else:
                weight = torch.ones(h, w, device=obj_id.device)
            assignment = obj_id.new_full((1, h, w), IGNORE_INDEX)
            regions = []
            for slot, oid in enumerate(objects):
                region = obj_id == oid
                assignment[0, region] = slot
                regions.append(region)
            fresh = []
            for start in range(0, len(objects), _OBJECT_CHUNK):
                masks = torch.stack(regions[start:start + _OBJECT_CHUNK]).to(weight.dtype)
                fresh.append(momentum.weighted_sums(masks * weight))
            fresh = F.normalize(torch.cat(fresh), dim=1)          # mean direction per object
            prototypes = []
            for oid, proto in zip(objects, fresh):
                if oid in self.prototypes:
                    proto = F.normalize((proto + self.prototypes[oid]) / 2, dim=0)
                self.prototypes[oid] = proto
                prototypes.append(proto)
            prototypes = torch.stack(prototypes)                  # [O, D]
        live = UpsampledNormalisedFeatures(F.normalize(feat[-1], dim=0), (h, w))
        similarity = live.dot(prototypes)[None]                   # [1, O, H, W]
        return all_pixel_cross_entropy(similarity / self.cfg.temperature, assignment)


@dataclass
class WarmupClip:
    """The warm-up frames and their stage-A outputs, in stream order."""
    frames: List[np.ndarray]          # RGB uint8 [H, W, 3]
    labels: List[torch.Tensor]        # stage-A label [H, W] int64
    reliabilities: List[torch.Tensor]  # stage-A reliability [H, W]


def clip_input(frames: Sequence[np.ndarray], index: int, spec: InputSpec,
               device) -> torch.Tensor:
    """Model input of warm-up frame `index`: [frame index-1, frame index] (or [frame 0])."""
    indices = [index - 1, index] if index > 0 else [index]
    return torch.stack([prepare_frame(frames[i], spec, device) for i in indices])


def step_plan(cfg: AdaptConfig, frames: Sequence[int]) -> List[int]:
    """The warm-up frame of each stage-C step: `cfg.passes` passes in order, cut after
    `cfg.max_steps` steps when set. A cap keeps how far the decoder moves from the source (and
    the adaptation's time) the same whatever the warm-up's length: a longer warm-up then gives
    more varied targets, not more steps."""
    plan = [index for _ in range(cfg.passes) for index in frames]
    return plan[:cfg.max_steps] if cfg.max_steps > 0 else plan


def adapt(model: Segmentor, source_head: DiTTAHead, clip: WarmupClip,
          targets: Dict[int, Target], spec: InputSpec, cfg: AdaptConfig, device='cpu',
          on_step: Optional[Callable[[int, int, Dict[str, float]], None]] = None,
          should_stop: Optional[Callable[[], bool]] = None) -> DiTTAAdapter:
    """Stage C: `cfg.passes` passes over the warm-up frames in order, one step per frame with a
    target, ending after `cfg.max_steps` steps when that is set. Returns the adapter (its
    `served_head()` is the adapted decode head)."""
    adapter = DiTTAAdapter(model, source_head, cfg)
    plan = step_plan(cfg, [i for i in range(len(clip.frames)) if i in targets])
    for step, index in enumerate(plan, start=1):
        if should_stop is not None and should_stop():
            raise AdaptationCancelled('adaptation cancelled')
        frame_hw = tuple(clip.frames[index].shape[:2])
        losses = adapter.step(clip_input(clip.frames, index, spec, device), frame_hw,
                              clip.labels[index], targets[index], clip.reliabilities[index])
        release_freed_memory()
        if cfg.max_memory_mb > 0 and memory_in_use_mb(device) > cfg.max_memory_mb:
            raise AdaptationError(
                f'memory budget exceeded: {memory_in_use_mb(device):.0f} MB in use, '
                f'adapt.max_memory_mb = {cfg.max_memory_mb:.0f}')
        if on_step is not None:
            on_step(step, len(plan), losses)
    adapter.head.eval()
    adapter.momentum_head.eval()
    return adapter
