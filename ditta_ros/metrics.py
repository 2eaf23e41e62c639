"""Evaluation metrics with the reference's (VSPW) conventions.

* Confusion matrix over all evaluated frames; GT 255 is ignored.
* mIoU: mean IoU over the classes present in the ground truth (confusion row sum > 0); a class
  only predicted has IoU 0 but is not averaged in. `miou_cityscapes` averages as the official
  Cityscapes evaluator does instead (every class with any GT or predicted pixel).
* wIoU: frequency-weighted IoU, sum over classes of (GT pixel share) x IoU.
* mVC_n: for each window of n consecutive evaluated frames of a video, the share of the pixels
  whose GT stays constant over the window on which the prediction also stays constant; windows
  start at i = 0 .. len - n - 1 as in the reference (its last full window is never counted),
  windows with no constant GT pixel are skipped in the mean.
* TC: optical flow t -> t+1 (OpenCV DIS), prediction t+1 warped back to t with nearest
  sampling, mIoU of the two label maps over classes either contains; mean over frame pairs.
"""
from typing import Dict, Iterable, List, Sequence

import cv2
import numpy as np

IGNORE_INDEX = 255


class ConfusionMatrix:
    """Running [C, C] confusion matrix (rows: ground truth, columns: prediction)."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.float64)

    def add(self, pred: np.ndarray, label: np.ndarray) -> None:
        pred, label = np.asarray(pred), np.asarray(label)
        if pred.shape != label.shape:
            raise ValueError(f'prediction {pred.shape} and label {label.shape} differ in shape')
        valid = (label >= 0) & (label < self.num_classes)
        index = self.num_classes * label[valid].astype(np.int64) + pred[valid].astype(np.int64)
        self.matrix += np.bincount(index, minlength=self.num_classes ** 2).reshape(
            self.num_classes, self.num_classes)

    def iou(self) -> np.ndarray:
        inter = np.diag(self.matrix)
        union = self.matrix.sum(0) + self.matrix.sum(1) - inter
        with np.errstate(divide='ignore', invalid='ignore'):
            return inter / union

    def present(self) -> np.ndarray:
        return self.matrix.sum(1) > 0

    def miou(self) -> float:
        present = self.present()
        return float(np.nansum(self.iou() * present) / max(int(present.sum()), 1))

    def miou_cityscapes(self) -> float:
        """mIoU as the official Cityscapes evaluator averages it: over every class with any
        ground-truth or predicted pixel (a class only predicted counts with IoU 0)."""
        inter = np.diag(self.matrix)
        union = self.matrix.sum(0) + self.matrix.sum(1) - inter
        seen = union > 0
        return float((inter[seen] / union[seen]).mean()) if seen.any() else float('nan')

    def wiou(self) -> float:
        freq = self.matrix.sum(1) / max(self.matrix.sum(), 1)
        iou = self.iou()
        return float((freq[freq > 0] * iou[freq > 0]).sum())


def video_consistency_scores(preds: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                             n: int) -> List[float]:
    """Per-window VC_n scores of one video (NaN where no GT pixel is constant)."""
    scores = []
    for i in range(len(labels) - n):
        gt_const = np.ones(labels[i].shape, dtype=bool)
        pred_const = np.ones(labels[i].shape, dtype=bool)
        for j in range(1, n):
            gt_const &= labels[i] == labels[i + j]
            pred_const &= preds[i] == preds[i + j]
        denom = gt_const.sum()
        scores.append(float((pred_const & gt_const).sum() / denom) if denom else float('nan'))
    return scores


def mean_vc(per_video_scores: Iterable[Sequence[float]]) -> float:
    """mVC over all windows of all videos, NaN windows skipped (NaN if none is left)."""
    flat = np.array([s for video in per_video_scores for s in video], dtype=np.float64)
    if not flat.size or np.all(np.isnan(flat)):
        return float('nan')
    return float(np.nanmean(flat))


def dense_flow(frame_a: np.ndarray, frame_b: np.ndarray) -> np.ndarray:
    """Optical flow a -> b ([H, W, 2], pixels) with OpenCV's DIS on grey images."""
    grey_a = cv2.cvtColor(frame_a, cv2.COLOR_RGB2GRAY) if frame_a.ndim == 3 else frame_a
    grey_b = cv2.cvtColor(frame_b, cv2.COLOR_RGB2GRAY) if frame_b.ndim == 3 else frame_b
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(grey_a, grey_b, None)


def warp_nearest(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Sample `image` at p + flow(p) with nearest neighbour; out-of-frame samples give 255."""
    h, w = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(image.astype(np.uint8), grid_x + flow[..., 0], grid_y + flow[..., 1],
                     cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=IGNORE_INDEX)


def label_map_miou(a: np.ndarray, b: np.ndarray, num_classes: int) -> float:
    """mIoU between two label maps over classes either contains (255 ignored in both)."""
    valid = (a < num_classes) & (b < num_classes)
    cm = ConfusionMatrix(num_classes)
    cm.add(b[valid], a[valid])
    present = (cm.matrix.sum(0) + cm.matrix.sum(1)) > 0
    if not present.any():
        return float('nan')
    return float(np.nanmean(cm.iou()[present]))


def temporal_consistency(frames: Sequence[np.ndarray], preds: Sequence[np.ndarray],
                         num_classes: int) -> List[float]:
    """TC of one video: per consecutive pair, mIoU(pred_t, pred_{t+1} warped to t)."""
    scores = []
    for t in range(len(preds) - 1):
        flow = dense_flow(frames[t], frames[t + 1])
        warped = warp_nearest(preds[t + 1], flow)
        scores.append(label_map_miou(np.asarray(preds[t]), warped, num_classes))
    return scores


def summarize(confusion: ConfusionMatrix, vc: Dict[int, List[List[float]]],
              tc: List[List[float]], class_names: Sequence[str]) -> dict:
    """One dict of every metric (fractions in 0..1), per-class IoU keyed by class name."""
    iou = confusion.iou()
    present = confusion.present()
    tc_flat = [s for video in tc for s in video if not np.isnan(s)]
    result = {
        'mIoU': confusion.miou(),
        'mIoU_cityscapes': confusion.miou_cityscapes(),
        'wIoU': confusion.wiou(),
        'per_class_IoU': {name: (float(iou[i]) if present[i] else None)
                          for i, name in enumerate(class_names)},
        'TC': float(np.mean(tc_flat)) if tc_flat else float('nan'),
    }
    for n, scores in sorted(vc.items()):
        result[f'mVC{n}'] = mean_vc(scores)
    return result
