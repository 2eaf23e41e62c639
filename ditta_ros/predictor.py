"""Per-frame inference of one camera stream: stage A (plain ISS) and stage D (fused).

The reference runs the backbone on the 2-frame clip [t-1, t] at every frame. In eval mode every
frame's backbone features, embedding and logits depend on that frame alone, so a stream keeps the
previous frame's backbone features, add-on key and logits instead: each frame runs the backbone
once, with the same predictions. The kept key/logits belong to the decode head that made them;
after a head swap they are recomputed from the kept backbone features, so the first frame after
the swap also sees frame t-1 through the new head, as the reference does. The add-on runs in
its folded form (`FoldedAddon`, folded once per head: the kept key is the key MLP's hidden
layer), one token product fewer per frame for the same add-on logits. Like the kept key, the fold
assumes a head's weights do not change while it serves: adaptation trains a copy, and adapted or
loaded decoders are handed over as new heads.

Temporal hold (`hold` > 0, stage D of the robust preset): on the decoder grid, the class each
cell showed on the previous frame gets `hold` added to its logit before the frame's class is
taken, so a cell changes class only where another class is at least e^hold times as probable as
the one it holds. Flicker between near-equal classes stops; a confident change goes through at
once. It costs one addition per grid cell and keeps no more than one label map; the add-on (when
fused) still reads the previous frame's own logits.
"""
from contextlib import nullcontext
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
import torch

from ditta_ros.model.addon import FoldedAddon
from ditta_ros.model.heads import DiTTAHead
from ditta_ros.model.segmentor import Segmentor
from ditta_ros.prediction import PAPER_TAU, Prediction, to_prediction
from ditta_ros.preprocess import InputSpec, prepare_frame

PRECISIONS = {'fp32': None, 'fp16': torch.float16, 'bf16': torch.bfloat16}


def frame_input(frame_rgb: np.ndarray, spec: InputSpec, device) -> torch.Tensor:
    """[1, 3, h, w] network input of one frame on `device`."""
    return prepare_frame(frame_rgb, spec, device).unsqueeze(0)


@dataclass
class _Previous:
    features: List[torch.Tensor]
    grid: tuple
    head: Optional[DiTTAHead] = None
    key: Optional[torch.Tensor] = None
    logits: Optional[torch.Tensor] = None
    held: Optional[torch.Tensor] = None   # class per grid cell shown on this frame (hold > 0)


def held_logits(logits: torch.Tensor, held: Optional[torch.Tensor], hold: float) -> torch.Tensor:
    """Plain logits [1, C, h, w] with `hold` added to the class each cell held on the previous
    frame (`held` [h, w]); unchanged without a previous frame or a hold."""
    if hold <= 0 or held is None:
        return logits
    return logits.scatter_add(1, held[None, None], logits.new_full((1, 1) + held.shape, hold))


class FramePredictor:
    """Stateful per-stream inference: call `predict` on consecutive frames of one stream."""

    def __init__(self, model: Segmentor, spec: InputSpec, device='cpu', tau: float = PAPER_TAU,
                 precision: str = 'fp32', hold: float = 0.0):
        if precision not in PRECISIONS:
            raise ValueError(f'unknown precision {precision!r}; choose one of {list(PRECISIONS)}')
        self.model = model
        self.spec = spec
        self.device = torch.device(device)
        self.tau = tau
        self.hold = hold
        self.precision = precision
        self._prev: Optional[_Previous] = None
        self._folded: Optional[Tuple[DiTTAHead, FoldedAddon]] = None

    def reset(self) -> None:
        """Forget the previous frame (new stream, size change, stamp jump)."""
        self._prev = None

    def _autocast(self):
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def _head_outputs(self, head: DiTTAHead, features):
        """(embedding, logits) in fp32; the logits channels-first whatever layout the head gives
        (from the channels-last backbone features): softmax and argmax over the class axis of the
        resized full-resolution maps are several times slower on channels-last memory."""
        with self._autocast():
            embedding, logits = head(features)
        return embedding.float(), logits.float().contiguous()

    def _folded_addon(self, head: DiTTAHead) -> FoldedAddon:
        """`head`'s folded add-on, folded when the head first serves."""
        if self._folded is None or self._folded[0] is not head:
            self._folded = (head, head.folded_addon())
        return self._folded[1]

    def _key(self, addon: FoldedAddon, embedding: torch.Tensor) -> torch.Tensor:
        """The add-on key of a frame's embedding [1, D, h, w], at the inference precision."""
        with self._autocast():
            return addon.key(embedding[0])

    @torch.no_grad()
    def predict(self, head: DiTTAHead, frame_rgb: np.ndarray, fused: bool,
                want_reliability: bool = False, want_probs: bool = False,
                hold: Optional[float] = None) -> Prediction:
        """Predict one frame with `head` (eval mode); `fused` uses the add-on (stage D); `hold`
        overrides the predictor's temporal hold for this frame (0: none)."""
        hold = self.hold if hold is None else hold
        frame_hw = frame_rgb.shape[:2]
        x = frame_input(frame_rgb, self.spec, self.device)
        with self._autocast():
            features = self.model.features(x)
        embedding, logits = self._head_outputs(head, features)
        grid = tuple(logits.shape[-2:])
        prev = self._prev if self._prev is not None and self._prev.grid == grid else None
        out = held_logits(logits, prev.held if prev is not None else None, hold)
        addon_maps = self._folded_addon(head) if fused else None
        if fused and prev is not None:
            if prev.head is not head or prev.key is None:
                prev_embedding, prev.logits = self._head_outputs(head, prev.features)
                prev.key, prev.head = self._key(addon_maps, prev_embedding), head
            with self._autocast():
                addon = head.attend(addon_maps.query(embedding[0]), prev.key, prev.logits[0])
            out = torch.stack([out[0], addon.float()])
        self._prev = _Previous(features, grid)
        if hold > 0:
            self._prev.held = out[0].max(0).indices
        if fused:
            self._prev.head, self._prev.logits = head, logits
            self._prev.key = self._key(addon_maps, embedding)
        return to_prediction(out, x.shape[-2:], frame_hw, self.tau, want_reliability, want_probs)
