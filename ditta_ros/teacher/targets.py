"""Stage B: prompts from reliable ISS pixels, bidirectional propagation, class voting, rendering.

This is the reference's target construction, written against a small propagator interface
(`Propagator`) instead of SAM2's API so that other mask propagators share the exact same prompt,
merge, vote and render logic:

* forward pass (t = 0 .. W-1): classes of y_t sorted by peak reliability; every present class
  adds its pixel count to N_c; a class is prompted at its first peak-reliability pixel if fewer
  than `max_track` objects exist, its peak reaches the threshold and (t > 0) the point is not
  inside the tracked masks dilated by 5 pixels; the first new prompt of a frame t > 0 resets the
  propagator and re-adds every tracked object as a mask prompt (after the new points);
* backward pass: the same prompts replayed from the last prompted frame down to frame 0;
* merge: frames after the last prompted frame keep the forward masks; the others the forward
  masks plus the backward masks of objects not prompted on that frame;
* vote: score(o, c) = mean R over o's pixels of class c * (area share)^b * (1 - N_c/N)^d;
* render: objects painted in ascending order of their best score; score table [max_id+1, C].

Deviations, all on inputs where the reference fails: a warm-up whose first frames have no
reliable prompt (the reference crashes) starts tracking at the first prompted frame, and earlier
frames get the backward masks only; with no prompt at all there are no targets. Vote sums are
accumulated with bincount in float64 (the reference sums float32 tensors; scores agree to ~1e-7).
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from scipy.ndimage import binary_dilation

IGNORE_INDEX = 255


@dataclass(frozen=True)
class TargetConfig:
    """Stage-B hyper-parameters (reference defaults). The class count is the model's: the
    streams fill it in (0 until then)."""
    num_classes: int = 0
    max_track: int = 100
    frame0_threshold: float = 0.8
    later_threshold: float = 0.8
    area_weight: float = 0.3        # b
    frequency_weight: float = 0.8   # d
    dilation_iterations: int = 5


@dataclass
class Target:
    """Distillation target of one warm-up frame, in the reference format."""
    obj_id: torch.Tensor   # int64 [H, W], 0 = no object
    score: torch.Tensor    # float32 [max_id + 1, C]

    def label(self) -> torch.Tensor:
        """Per-pixel class: each object's best class; object 0 and all-zero rows -> 255."""
        return target_label(self.score, self.obj_id)


def target_label(score: torch.Tensor, obj_id: torch.Tensor) -> torch.Tensor:
    cls_of_obj = score.argmax(1)
    cls_of_obj[0] = IGNORE_INDEX
    cls_of_obj[score.max(1).values == 0] = IGNORE_INDEX
    return cls_of_obj[obj_id]


class Propagator:
    """What a teacher must do: SAM2-style interactive mask tracking over a fixed clip.

    Masks are bool [O, H, W] at the frame resolution, objects in the propagator's order.
    """

    def start(self, frames: Sequence[np.ndarray], labels: Sequence[torch.Tensor]) -> None:
        """Take the warm-up clip (RGB uint8 frames) and the ISS labels of its frames."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget every object and prompt."""
        raise NotImplementedError

    def add_point(self, frame: int, obj_id: int, xy: Tuple[int, int]
                  ) -> Tuple[List[int], torch.Tensor]:
        """Prompt object `obj_id` with one positive point on `frame`; all masks of `frame`."""
        raise NotImplementedError

    def add_mask(self, frame: int, obj_id: int, mask: torch.Tensor
                 ) -> Tuple[List[int], torch.Tensor]:
        """Prompt object `obj_id` with a mask on `frame`; all masks of `frame`."""
        raise NotImplementedError

    def step(self, frame: int, reverse: bool) -> Tuple[List[int], torch.Tensor]:
        """Track every object from `frame` to the next frame (previous if reverse)."""
        raise NotImplementedError

    def close(self) -> None:
        """Free what start() allocated."""


@dataclass
class _Tracks:
    obj_ids: List[int]
    masks: Optional[torch.Tensor]


def _empty_like(frame_hw: Tuple[int, int]) -> torch.Tensor:
    return torch.zeros((0,) + tuple(frame_hw), dtype=torch.bool)


def _occupied(masks: torch.Tensor, iterations: int) -> torch.Tensor:
    """Union of the masks, each dilated by a 3x3 cross `iterations` times."""
    union = np.zeros(masks.shape[1:], dtype=bool)
    for mask in masks.cpu().numpy():
        union |= binary_dilation(mask, iterations=iterations)
    return torch.from_numpy(union)


def forward_pass(prop: Propagator, preds, rels, cfg: TargetConfig):
    """Prompt search frame by frame. Returns (prompts, forward masks, N_c)."""
    num_frames = len(preds)
    frame_hw = tuple(preds[0].shape)
    next_obj = 1
    prompted_per_class = [0] * cfg.num_classes
    pixels_per_class = np.zeros(cfg.num_classes, dtype=np.int64)
    prompts: Dict[int, List[Tuple[int, Tuple[int, int]]]] = {}
    forward: Dict[int, _Tracks] = {}
    tracks = _Tracks([], None)
    for t in range(num_frames):
        pred, rel = preds[t], rels[t]
        occupied = None
        if t > 0 and tracks.obj_ids:
            occupied = _occupied(tracks.masks, cfg.dilation_iterations)
        threshold = cfg.frame0_threshold if t == 0 else cfg.later_threshold
        classes = torch.unique(pred).tolist()
        peaks = {c: rel[pred == c].max() for c in classes}
        reset_done, carried = False, None
        for c in sorted(classes, key=lambda k: peaks[k], reverse=True):
            pixels_per_class[c] += int((pred == c).sum())
            if sum(prompted_per_class) >= cfg.max_track or peaks[c] < threshold:
                continue
            y, x = ((pred == c) & (rel == peaks[c])).nonzero()[0].tolist()
            if occupied is not None and occupied[y, x]:
                continue
            if t > 0 and not reset_done and tracks.obj_ids:
                reset_done = True
                carried = _Tracks(list(tracks.obj_ids), tracks.masks.clone())
                prop.reset()
            ids, masks = prop.add_point(t, next_obj, (x, y))
            tracks = _Tracks(list(ids), masks)
            prompted_per_class[c] += 1
            prompts.setdefault(t, []).append((next_obj, (x, y)))
            next_obj += 1
        if reset_done:
            for i, obj in enumerate(carried.obj_ids):
                ids, masks = prop.add_mask(t, obj, carried.masks[i])
                tracks = _Tracks(list(ids), masks)
        forward[t] = _Tracks(list(tracks.obj_ids),
                             tracks.masks.clone() if tracks.obj_ids else _empty_like(frame_hw))
        if t < num_frames - 1 and tracks.obj_ids:
            ids, masks = prop.step(t, reverse=False)
            tracks = _Tracks(list(ids), masks)
    return prompts, forward, pixels_per_class


def backward_pass(prop: Propagator, prompts, frame_hw) -> Dict[int, _Tracks]:
    """Replay the same point prompts from the last prompted frame down to frame 0."""
    prop.reset()
    backward: Dict[int, _Tracks] = {}
    last = max(prompts)
    tracks = _Tracks([], None)
    for t in range(last, -1, -1):
        carried = None
        if t in prompts:
            if t != last and tracks.obj_ids:
                carried = _Tracks(list(tracks.obj_ids), tracks.masks.clone())
                prop.reset()
            for obj, xy in prompts[t]:
                ids, masks = prop.add_point(t, obj, xy)
                tracks = _Tracks(list(ids), masks)
        if carried is not None:
            for i, obj in enumerate(carried.obj_ids):
                ids, masks = prop.add_mask(t, obj, carried.masks[i])
                tracks = _Tracks(list(ids), masks)
        backward[t] = _Tracks(list(tracks.obj_ids),
                              tracks.masks.clone() if tracks.obj_ids else _empty_like(frame_hw))
        if t > 0 and tracks.obj_ids:
            ids, masks = prop.step(t, reverse=True)
            tracks = _Tracks(list(ids), masks)
    return backward


def merge(forward, backward, prompts) -> Dict[int, _Tracks]:
    """Forward masks plus backward masks of objects not prompted on that frame."""
    last = max(prompts)
    merged = {}
    for t in sorted(forward):
        fwd = forward[t]
        if t > last:
            merged[t] = fwd
            continue
        bwd = backward[t]
        prompted_here = {obj for obj, _ in prompts.get(t, [])}
        keep = [i for i, obj in enumerate(bwd.obj_ids) if obj not in prompted_here]
        merged[t] = _Tracks(fwd.obj_ids + [bwd.obj_ids[i] for i in keep],
                            torch.cat([fwd.masks, bwd.masks[keep]], dim=0))
    return merged


def vote(merged, preds, rels, pixels_per_class, cfg: TargetConfig) -> Dict[int, Dict[int, float]]:
    """score[obj][class] over all frames and all masks of each object (paper Eq. 4)."""
    counts: Dict[int, np.ndarray] = {}
    rel_sums: Dict[int, np.ndarray] = {}
    c = cfg.num_classes
    for t, tracks in merged.items():
        pred = preds[t].reshape(-1).cpu().numpy()
        rel = rels[t].reshape(-1).cpu().numpy().astype(np.float64)
        for i, obj in enumerate(tracks.obj_ids):
            inside = tracks.masks[i].reshape(-1).cpu().numpy()
            classes = pred[inside]
            counts[obj] = counts.get(obj, np.zeros(c)) + np.bincount(classes, minlength=c)
            rel_sums[obj] = rel_sums.get(obj, np.zeros(c)) + \
                np.bincount(classes, weights=rel[inside], minlength=c)
    total_pixels = pixels_per_class.sum()
    scores = {}
    for obj, n in counts.items():
        obj_pixels = n.sum()
        scores[obj] = {}
        for cls in np.nonzero(n)[0].tolist():
            mean_rel = rel_sums[obj][cls] / n[cls]
            area = (n[cls] / obj_pixels) ** cfg.area_weight
            rarity = (1 - pixels_per_class[cls] / total_pixels) ** cfg.frequency_weight
            scores[obj][cls] = float(np.float32(mean_rel) * np.float32(area) * np.float32(rarity))
    return scores


def render(merged, scores, frame_hw, num_classes) -> Dict[int, Target]:
    """Object-id map and score table per frame; the best-scoring object wins overlaps."""
    targets = {}
    for t, tracks in merged.items():
        obj_map = torch.zeros(frame_hw, dtype=torch.int64)
        table = torch.zeros((max(tracks.obj_ids, default=0) + 1, num_classes),
                            dtype=torch.float32)
        order = sorted(tracks.obj_ids, key=lambda o: max(scores.get(o, {}).values(), default=0.0))
        for obj in order:
            obj_map[tracks.masks[tracks.obj_ids.index(obj)]] = obj
            for cls, value in scores.get(obj, {}).items():
                table[obj, cls] = value
        targets[t] = Target(obj_map, table)
    return targets


@dataclass
class TargetBuild:
    """Stage-B result with its intermediates (for tests, logs and the benchmark)."""
    targets: Dict[int, Target]
    prompts: Dict[int, List[Tuple[int, Tuple[int, int]]]]
    pixels_per_class: np.ndarray
    forward: Dict[int, _Tracks]
    backward: Dict[int, _Tracks]
    merged: Dict[int, _Tracks]
    scores: Dict[int, Dict[int, float]]


def build_targets(prop: Propagator, frames: Sequence[np.ndarray], preds: Sequence[torch.Tensor],
                  rels: Sequence[torch.Tensor], cfg: TargetConfig) -> TargetBuild:
    """Run stage B on a warm-up clip. `preds`/`rels`: stage-A label and reliability per frame
    (CPU tensors at frame resolution). No reliable prompt anywhere -> no targets."""
    if cfg.num_classes <= 0:
        raise ValueError('TargetConfig.num_classes is not set (take it from the model)')
    preds = [p.cpu() for p in preds]
    rels = [r.cpu() for r in rels]
    frame_hw = tuple(preds[0].shape)
    prop.start(frames, preds)
    try:
        prompts, forward, pixels = forward_pass(prop, preds, rels, cfg)
        if not prompts:
            return TargetBuild({}, {}, pixels, forward, {}, {}, {})
        backward = backward_pass(prop, prompts, frame_hw)
        merged = merge(forward, backward, prompts)
        scores = vote(merged, preds, rels, pixels, cfg)
        targets = render(merged, scores, frame_hw, cfg.num_classes)
    finally:
        prop.close()
    return TargetBuild(targets, prompts, pixels, forward, backward, merged, scores)
