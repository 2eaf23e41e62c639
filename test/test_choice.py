"""The label-free choice of what serves: the candidate that agrees best with the teacher's
targets on held-out warm-up frames; the source when every other candidate harms, an adapted
decoder when it clearly helps."""
import math

import torch

from conftest import synthetic_clip
from ditta_ros.adapt.choice import choose_decoder, held_out_frames, target_agreement
from ditta_ros.adapt.guard import blend_heads
from ditta_ros.predictor import FramePredictor
from ditta_ros.preprocess import InputSpec
from ditta_ros.teacher.targets import IGNORE_INDEX, Target

SPEC = InputSpec(img_scale=(96, 64))
CLASSES = 19


def targets_from(model, head, frames, indices):
    """Targets whose labels are `head`'s predictions: one object per class present."""
    predictor = FramePredictor(model, SPEC, 'cpu')
    targets = {}
    for i in indices:
        label = predictor.predict(head, frames[i], fused=False).label.cpu()
        score = torch.zeros(CLASSES + 1, CLASSES)
        score[torch.arange(1, CLASSES + 1), torch.arange(CLASSES)] = 1.0
        targets[i] = Target(label + 1, score)
    return targets


def harmed(source, classes):
    """The source head with `classes` pushed out of every prediction."""
    head = blend_heads(source, source, 1.0)
    with torch.no_grad():
        head.linear_pred.bias[classes] -= 100.0
    return head.eval()


def present_classes(model, frames):
    predictor = FramePredictor(model, SPEC, 'cpu')
    labels = torch.cat([predictor.predict(model.decode_head, f, fused=False).label.flatten()
                        for f in frames])
    return torch.bincount(labels, minlength=CLASSES).argsort(descending=True)[:2].tolist()


def test_held_out_frames_are_the_last_with_a_target_and_never_all_of_them():
    assert held_out_frames([0, 1, 2, 3, 5], 1) == [5]
    assert held_out_frames([3, 0, 5, 1], 2) == [3, 5]
    assert held_out_frames([0, 1], 2) == []
    assert held_out_frames([4], 1) == []
    assert held_out_frames([0, 1, 2], 0) == []


def test_the_source_is_chosen_when_every_other_candidate_harms(tiny_model):
    frames = synthetic_clip(frames=4)
    source = tiny_model.decode_head
    top = present_classes(tiny_model, frames)
    candidates = {'adapted': harmed(source, top[:1]), 'statistics': harmed(source, top[1:2]),
                  'source': source}
    held = targets_from(tiny_model, source, frames, [3])
    head, choice = choose_decoder(tiny_model, candidates, frames, held, SPEC, 'cpu')
    assert choice.name == 'source' and head is source
    assert choice.agreement['source'] == 1.0
    assert choice.agreement['adapted'] < 1.0 and choice.agreement['statistics'] < 1.0
    assert 'label-free choice: source' in choice.summary()


def test_an_adapted_decoder_is_chosen_when_it_clearly_helps(tiny_model):
    frames = synthetic_clip(frames=4)
    source = tiny_model.decode_head
    better = harmed(source, present_classes(tiny_model, frames)[:1])
    # the teacher agrees with the adapted decoder: it corrected the source's dominant class
    held = targets_from(tiny_model, better, frames, [2, 3])
    head, choice = choose_decoder(tiny_model, {'adapted': better, 'source': source}, frames,
                                  held, SPEC, 'cpu')
    assert choice.name == 'adapted' and head is better
    assert choice.agreement['adapted'] == 1.0 > choice.agreement['source']


def test_ties_go_to_the_first_candidate_and_no_labelled_pixel_scores_nan(tiny_model):
    frames = synthetic_clip(frames=3)
    source = tiny_model.decode_head
    same = blend_heads(source, source, 1.0).eval()
    held = targets_from(tiny_model, source, frames, [2])
    _, choice = choose_decoder(tiny_model, {'adapted': same, 'source': source}, frames, held,
                               SPEC, 'cpu')
    assert choice.name == 'adapted'
    empty = {2: Target(torch.zeros_like(held[2].obj_id), held[2].score)}
    assert (held[2].obj_id > 0).all() and (empty[2].label() == IGNORE_INDEX).all()
    assert math.isnan(target_agreement(tiny_model, source, frames, empty, SPEC, 'cpu'))
    _, choice = choose_decoder(tiny_model, {'adapted': same, 'source': source}, frames, empty,
                               SPEC, 'cpu')
    assert choice.name == 'adapted'
