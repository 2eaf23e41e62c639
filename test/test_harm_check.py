"""The do-no-harm check: an adaptation that erases a class the source model is sure of is
refused (or repaired by a blend towards the source); a good one passes untouched."""
from collections import Counter

import numpy as np
import torch

from conftest import synthetic_clip
from ditta_ros.adapt.ditta import AdaptConfig
from ditta_ros.adapt.presets import PRESETS
from ditta_ros.adapt.guard import (HarmCheck, blend_heads, erased_classes, harmless_head,
                                  warmup_predictions)
from ditta_ros.predictor import FramePredictor
from ditta_ros.preprocess import InputSpec
from ditta_ros.adapt import warmup as warmup_adaptation
from ditta_ros.stream.config import StreamConfig, Phase, WarmupConfig
from ditta_ros.stream.methods import make_stream
from ditta_ros.teacher.factory import TeacherSpec, make_teacher
from ditta_ros.teacher.targets import TargetConfig

SPEC = InputSpec(img_scale=(96, 64))
CHECK = HarmCheck()


def source_outputs(model, frames):
    predictor = FramePredictor(model, SPEC, 'cpu')
    out = [predictor.predict(model.decode_head, f, fused=False, want_reliability=True)
           for f in frames]
    return [p.label for p in out], [p.reliability for p in out]


def victim_class(model, frames) -> int:
    """The second most frequent class among the source model's confident pixels."""
    labels, rels = source_outputs(model, frames)
    counts = Counter()
    for label, rel in zip(labels, rels):
        counts.update(label[rel >= CHECK.confident].tolist())
    return counts.most_common(2)[1][0]


def relabelling(build_targets, victim: int, into: int):
    """A harmful teacher: stage B as usual, then every vote for the victim class goes to class
    `into`, so the targets label the victim's tracks as `into`."""
    def build(*args, **kwargs):
        built = build_targets(*args, **kwargs)
        for target in built.targets.values():
            target.score[:, into] += 2 * target.score[:, victim]
            target.score[:, victim] = 0
        return built
    return build


def harmful_teacher(model, monkeypatch, **changes):
    """Stage B relabels the victim class (returned) into class 0; and a recipe that follows the
    teacher everywhere, fast, on the source statistics, with `changes` on top."""
    victim = victim_class(model, synthetic_clip(frames=6))
    monkeypatch.setattr(warmup_adaptation, 'build_targets',
                        relabelling(warmup_adaptation.build_targets, victim, 0))
    return victim, AdaptConfig.preset('robust', label_rule='override', lr=1e-2,
                                      norm_stats='source', **changes)


def adapt_stream(model, worker, teacher, adapt, check, tau=0.8):
    stream = make_stream('cam', model, SPEC, StreamConfig(
        warmup=WarmupConfig(frames=6), adapt=adapt, harm_check=check, seed=0, tau=tau,
        targets=TargetConfig(num_classes=19, frame0_threshold=0.5, later_threshold=0.5)),
        teacher, worker)
    for i, frame in enumerate(synthetic_clip(frames=6)):
        stream.process(frame, 0.1 * i)
    stream.wait_for_adaptation(timeout=120)
    return stream


def test_an_adaptation_that_erases_a_class_is_refused_and_the_source_keeps_serving(
        tiny_model, worker, monkeypatch):
    frames = synthetic_clip(frames=6)
    # the check alone decides (the label-free choice would serve another candidate instead)
    victim, harmful = harmful_teacher(tiny_model, monkeypatch, choose=False)
    flow = make_teacher(TeacherSpec(name='flow'), 'cpu')

    unchecked = adapt_stream(tiny_model, worker, flow, harmful, HarmCheck(enabled=False))
    assert unchecked.status().phase == Phase.ADAPTED
    labels, rels = source_outputs(tiny_model, frames)
    served = warmup_predictions(tiny_model, unchecked._head, frames, SPEC, 'cpu', 0.8)
    assert victim in [c for c, _ in erased_classes(served, labels, rels, CHECK)], \
        'the harmful teacher did not erase its victim class: the test proves nothing'

    checked = adapt_stream(tiny_model, worker, flow, harmful, HarmCheck(blends=()))
    status = checked.status()
    assert status.phase == Phase.FAILED and status.reason.startswith('AdaptationError: refused')
    assert checked._head is tiny_model.decode_head


def test_a_good_adaptation_passes_the_check_untouched(tiny_model, worker):
    stream = adapt_stream(tiny_model, worker, make_teacher(TeacherSpec(name='flow'), 'cpu'),
                          AdaptConfig.preset('robust', norm_stats='source', choose=False), CHECK,
                          PRESETS['robust']['fusion_tau'])
    status = stream.status()
    assert status.phase == Phase.ADAPTED and status.decoder == 'adapted' and not status.reason


def test_a_harmful_head_is_repaired_by_the_first_blend_that_keeps_every_class(tiny_model):
    frames = synthetic_clip(frames=4)
    labels, rels = source_outputs(tiny_model, frames)
    victim = victim_class(tiny_model, frames)
    source = tiny_model.decode_head
    # a class that only a blend of half or less of this change keeps
    found = None
    for drop in (2.0, 4.0, 8.0, 16.0, 32.0, 64.0):
        harmed = blend_heads(source, source, 1.0)
        with torch.no_grad():
            harmed.linear_pred.bias[victim] -= drop
        erased_full = erased_classes(warmup_predictions(tiny_model, harmed, frames, SPEC, 'cpu',
                                                        0.0), labels, rels, CHECK)
        half = blend_heads(source, harmed, 0.5)
        erased_half = erased_classes(warmup_predictions(tiny_model, half, frames, SPEC, 'cpu',
                                                        0.0), labels, rels, CHECK)
        if erased_full and not erased_half:
            found = harmed
            break
    assert found is not None
    head, verdict = harmless_head(tiny_model, source, found, frames, labels, rels, SPEC, 'cpu',
                                  0.0, CHECK, [f'c{i}' for i in range(19)])
    assert head is not None and head is not found
    assert verdict.startswith('repaired: weights blended 0.5') and f'c{victim}' in verdict
    assert torch.allclose(head.linear_pred.bias[victim],
                          source.linear_pred.bias[victim] - drop / 2)
    assert np.isclose(head.linear_pred.weight[0, 0].item(), source.linear_pred.weight[0, 0].item())


def test_with_the_choice_on_a_refused_decoder_leaves_the_other_candidates_to_serve(
        tiny_model, worker, monkeypatch):
    _, harmful = harmful_teacher(tiny_model, monkeypatch)
    stream = adapt_stream(tiny_model, worker, make_teacher(TeacherSpec(name='flow'), 'cpu'),
                          harmful, HarmCheck(blends=()))
    status = stream.status()
    assert status.phase == Phase.ADAPTED and status.decoder == 'source'
    assert status.reason.startswith('refused') and 'label-free choice: source' in status.reason
    assert stream._head is tiny_model.decode_head
