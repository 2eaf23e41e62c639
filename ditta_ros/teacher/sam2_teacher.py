"""SAM2 as the stage-B propagator (the paper's teacher), on frames held in memory.

sam2 1.1.0's `init_state` only reads a folder of JPEGs or an .mp4; here the inference state is
built from the warm-up frames directly, resized and normalised exactly as SAM2's loader does
(PIL resize to image_size x image_size with PIL's default filter, /255, ImageNet mean/std).

SAM2 keeps the image features of the most recently used frame only; the prompt search revisits
every warm-up frame several times, so `CachingVideoPredictor` keeps the features of every frame
of the clip: the image encoder runs once per warm-up frame. On CUDA all calls run under bf16
autocast, as in the reference.
"""
from collections import OrderedDict
from contextlib import ExitStack
from typing import List, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from sam2 import sam2_video_predictor
from sam2.build_sam import build_sam2_video_predictor
from sam2.sam2_video_predictor import SAM2VideoPredictor

from ditta_ros.teacher.targets import Propagator

# propagate_in_video wraps every call in a tqdm bar; stage B calls it once per frame step,
# which would flood a robot's log with bars. Iterate plainly instead.
sam2_video_predictor.tqdm = lambda iterable, **_: iterable

SAM2_MEAN = (0.485, 0.456, 0.406)
SAM2_STD = (0.229, 0.224, 0.225)


class CachingVideoPredictor(SAM2VideoPredictor):
    """SAM2's video predictor, keeping the image features of every frame of a state.

    With `cache_features = False` the image encoder runs at every call, for every object and
    frame (the straightforward implementation the benchmark compares against).
    """

    cache_features = True

    def _get_image_feature(self, inference_state, frame_idx, batch_size):
        if self.cache_features:
            store = inference_state.setdefault('all_frame_features', {})
            if frame_idx not in store:
                image = inference_state['images'][frame_idx].to(inference_state['device'])
                image = image.float().unsqueeze(0)
                store[frame_idx] = (image, self.forward_image(image))
            # hand upstream a one-frame cache that hits, so its expansion logic is reused
            inference_state['cached_features'] = {frame_idx: store[frame_idx]}
        else:
            inference_state['cached_features'] = {}
        return super()._get_image_feature(inference_state, frame_idx, batch_size)


def build_predictor(config: str, checkpoint: str, device: str,
                    overrides: Sequence[str] = ()) -> CachingVideoPredictor:
    """SAM2 video predictor of our subclass from a SAM2 config name and a checkpoint file."""
    target = f'++model._target_={CachingVideoPredictor.__module__}.CachingVideoPredictor'
    return build_sam2_video_predictor(config, ckpt_path=checkpoint, device=device,
                                      hydra_overrides_extra=[target] + list(overrides))


def frames_to_sam2_input(frames: Sequence[np.ndarray], image_size: int) -> torch.Tensor:
    """[N, 3, S, S] float32, as SAM2's frame loader prepares JPEG frames."""
    images = torch.zeros(len(frames), 3, image_size, image_size, dtype=torch.float32)
    for i, frame in enumerate(frames):
        resized = np.array(Image.fromarray(frame).convert('RGB').resize((image_size, image_size)))
        images[i] = torch.from_numpy(resized / 255.0).permute(2, 0, 1)
    images -= torch.tensor(SAM2_MEAN, dtype=torch.float32)[:, None, None]
    images /= torch.tensor(SAM2_STD, dtype=torch.float32)[:, None, None]
    return images


class SAM2Propagator(Propagator):
    """Propagator backed by a SAM2 video predictor."""

    def __init__(self, predictor: CachingVideoPredictor, offload_video_to_cpu: bool = False):
        self.predictor = predictor
        self.offload_video_to_cpu = offload_video_to_cpu
        self.state = None
        self.calls = []  # (method, frame, obj_id) in order: for tests and logs

    def _context(self) -> ExitStack:
        stack = ExitStack()
        stack.enter_context(torch.inference_mode())
        if torch.device(self.predictor.device).type == 'cuda':
            stack.enter_context(torch.autocast('cuda', dtype=torch.bfloat16))
        return stack

    def start(self, frames, labels) -> None:
        device = self.predictor.device
        images = frames_to_sam2_input(frames, self.predictor.image_size)
        if not self.offload_video_to_cpu:
            images = images.to(device)
        height, width = frames[0].shape[:2]
        self.state = {
            'images': images, 'num_frames': len(frames),
            'offload_video_to_cpu': self.offload_video_to_cpu, 'offload_state_to_cpu': False,
            'video_height': height, 'video_width': width,
            'device': device, 'storage_device': device,
            'point_inputs_per_obj': {}, 'mask_inputs_per_obj': {}, 'cached_features': {},
            'constants': {}, 'obj_id_to_idx': OrderedDict(), 'obj_idx_to_id': OrderedDict(),
            'obj_ids': [], 'output_dict_per_obj': {}, 'temp_output_dict_per_obj': {},
            'frames_tracked_per_obj': {},
        }
        self.calls = []

    @staticmethod
    def _masks(logits: torch.Tensor) -> torch.Tensor:
        return (logits[:, 0] > 0).cpu()

    def reset(self) -> None:
        self.calls.append(('reset_state', None, None))
        with self._context():
            self.predictor.reset_state(self.state)

    def add_point(self, frame, obj_id, xy) -> Tuple[List[int], torch.Tensor]:
        self.calls.append(('add_new_points_or_box', frame, obj_id))
        device = self.predictor.device
        with self._context():
            _, ids, logits = self.predictor.add_new_points_or_box(
                self.state, frame, obj_id,
                points=torch.tensor([list(xy)], dtype=torch.float32, device=device),
                labels=torch.tensor([1], dtype=torch.int32, device=device))
            masks = self._masks(logits)
        return list(ids), masks.clone()

    def add_mask(self, frame, obj_id, mask) -> Tuple[List[int], torch.Tensor]:
        self.calls.append(('add_new_mask', frame, obj_id))
        with self._context():
            _, ids, logits = self.predictor.add_new_mask(self.state, frame, obj_id,
                                                         mask.to(self.predictor.device))
            masks = self._masks(logits)
        return list(ids), masks.clone()

    def step(self, frame, reverse) -> Tuple[List[int], torch.Tensor]:
        self.calls.append(('propagate_in_video', frame, None))
        with self._context():
            frames = self.predictor.propagate_in_video(
                self.state, start_frame_idx=frame, max_frame_num_to_track=1, reverse=reverse)
            next(frames)                    # the start frame itself
            _, ids, logits = next(frames)   # the frame after it
            frames.close()
            masks = self._masks(logits)
        return list(ids), masks.clone()

    def close(self) -> None:
        if self.state is not None:
            with self._context():
                self.predictor.reset_state(self.state)
            self.state.clear()
            self.state = None
