"""Stage-B teachers: flow and oracle propagators, SAM2 with random weights, edge cases."""
import numpy as np
import pytest
import torch

from conftest import synthetic_clip
from ditta_ros.teacher.factory import TeacherSpec, make_teacher, oracle_teacher
from ditta_ros.teacher.mask_propagators import FlowPropagator, OraclePropagator, frame_key
from ditta_ros.teacher.targets import TargetConfig, build_targets


def _shapes_labels(clip):
    """Labels for synthetic_clip: sky 0 / road 1 background, red box 2, green box 3."""
    labels, tracks = [], []
    for t, frame in enumerate(clip):
        h, w = frame.shape[:2]
        label = np.zeros((h, w), np.int64)
        label[h // 2:] = 1
        x = 5 + 3 * t
        label[20:36, x:x + 14] = 2
        label[8:18, w - 20 - 2 * t:w - 8 - 2 * t] = 3
        labels.append(torch.from_numpy(label))
        tracks.append(label.copy() + 10)
    return labels, tracks


def _reliability(labels, low_frames=()):
    rels = []
    for t, label in enumerate(labels):
        rel = torch.full(label.shape, 0.5)
        rel[label == 2] = 0.9
        rel[label == 3] = 0.95
        rel[label == 1] = 0.85
        if t in low_frames:
            rel = rel * 0.5
        rels.append(rel)
    return rels


def test_flow_propagator_follows_a_moving_box():
    clip = synthetic_clip(frames=4)
    labels, _ = _shapes_labels(clip)
    prop = FlowPropagator()
    prop.start(clip, labels)
    ids, masks = prop.add_point(0, 1, (10, 25))            # inside the red box
    assert ids == [1] and masks[0].sum() == (labels[0] == 2).sum()
    ids, masks = prop.step(0, reverse=False)
    moved = masks[0] & (labels[1] == 2)
    assert moved.sum() >= 0.7 * (labels[1] == 2).sum()     # the box moved 3 px; so did the mask
    ids, masks = prop.add_mask(1, 7, labels[1] == 3)
    assert ids == [1, 7]
    prop.reset()
    assert prop.step(1, reverse=True)[0] == []
    prop.close()


def test_flow_teacher_targets_in_reference_format():
    clip = synthetic_clip(frames=5)
    labels, _ = _shapes_labels(clip)
    build = build_targets(FlowPropagator(), clip, labels, _reliability(labels),
                          TargetConfig(num_classes=4))
    assert sorted(build.targets) == list(range(5))
    for t, target in build.targets.items():
        assert target.obj_id.dtype == torch.int64 and target.obj_id.shape == clip[0].shape[:2]
        assert target.score.dtype == torch.float32
        assert target.score.shape == (int(target.obj_id.max()) + 1, 4) or \
            target.score.shape[0] > int(target.obj_id.max())
        label = target.label()
        # object pixels take the class the ISS label gives them there (a clean scene)
        agree = (label == labels[t]) | (label == 255)
        assert agree.float().mean() > 0.95


def test_oracle_teacher_gives_ground_truth_tracks():
    clip = synthetic_clip(frames=4)
    labels, tracks = _shapes_labels(clip)
    oracle = OraclePropagator({frame_key(f): m for f, m in zip(clip, tracks)})
    build = build_targets(oracle, clip, labels, _reliability(labels),
                          TargetConfig(num_classes=4))
    for t, target in build.targets.items():
        label = target.label()
        prompted = labels[t] > 0  # sky (class 0) never reaches the 0.8 threshold
        assert torch.equal(label[prompted], labels[t][prompted])  # exact, every frame
        assert (label[~prompted] == 255).all()


def test_no_prompt_on_the_first_frame_is_handled():
    """The reference crashes when frame 0 has no reliable class; here tracking starts at the
    first prompted frame and earlier frames get the backward masks."""
    clip = synthetic_clip(frames=4)
    labels, tracks = _shapes_labels(clip)
    rels = _reliability(labels, low_frames=(0, 1))
    oracle = OraclePropagator({frame_key(f): m for f, m in zip(clip, tracks)})
    for prop in (FlowPropagator(), oracle):
        build = build_targets(prop, clip, labels, rels, TargetConfig(num_classes=4))
        assert min(build.prompts) == 2
        assert sorted(build.targets) == [0, 1, 2, 3]
        assert (build.targets[0].obj_id > 0).any()


def test_no_prompt_at_all_gives_no_targets():
    clip = synthetic_clip(frames=3)
    labels, _ = _shapes_labels(clip)
    build = build_targets(FlowPropagator(), clip, labels, _reliability(labels, (0, 1, 2)),
                          TargetConfig(num_classes=4))
    assert build.targets == {} and build.prompts == {}


def test_max_track_limits_prompts():
    clip = synthetic_clip(frames=3)
    labels, _ = _shapes_labels(clip)
    build = build_targets(FlowPropagator(), clip, labels, _reliability(labels),
                          TargetConfig(num_classes=4, max_track=2))
    assert sum(len(p) for p in build.prompts.values()) == 2


@pytest.fixture(scope='module')
def random_sam2_checkpoint(tmp_path_factory, reference_summary):
    pytest.importorskip('sam2')
    from sam2.build_sam import build_sam2_video_predictor
    torch.manual_seed(0)
    model = build_sam2_video_predictor(reference_summary['sam2']['config'], ckpt_path=None,
                                       device='cpu',
                                       hydra_overrides_extra=reference_summary['sam2']
                                       ['shrink_overrides'])
    path = tmp_path_factory.mktemp('sam2') / 'random_sam2.pt'
    torch.save({'model': model.state_dict()}, path)
    return path


def test_sam2_teacher_with_random_weights_builds_targets(random_sam2_checkpoint,
                                                         reference_summary):
    clip = synthetic_clip(frames=3, height=64, width=96)
    labels, _ = _shapes_labels(clip)
    factory = make_teacher(TeacherSpec(name='sam2',
                                       sam2_config=reference_summary['sam2']['config'],
                                       sam2_checkpoint=str(random_sam2_checkpoint),
                                       sam2_overrides=tuple(
                                           reference_summary['sam2']['shrink_overrides'])),
                           'cpu')
    build = build_targets(factory(), clip, labels, _reliability(labels),
                          TargetConfig(num_classes=4))
    assert build.prompts and sorted(build.targets) == [0, 1, 2]
    for target in build.targets.values():
        assert target.obj_id.shape == (64, 96) and target.score.shape[1] == 4


def test_sam2_teacher_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match='SAM2 checkpoint not found.*flow'):
        make_teacher(TeacherSpec(name='sam2', sam2_checkpoint=str(tmp_path / 'x.pt')), 'cpu')


def test_unknown_teacher_is_a_clear_error():
    with pytest.raises(ValueError, match='unknown teacher'):
        make_teacher(TeacherSpec(name='raft'), 'cpu')


def test_the_oracle_of_a_video_finds_warm_up_frames_by_content_and_refuses_others():
    clip = synthetic_clip(frames=4)
    labels, tracks = _shapes_labels(clip)
    factory = oracle_teacher(clip, dict(enumerate(tracks)))
    copies = [frame.copy() for frame in clip[1:3]]           # a stream keeps copies
    build = build_targets(factory(), copies, labels[1:3], _reliability(labels[1:3]),
                          TargetConfig(num_classes=4))
    assert sorted(build.targets) == [0, 1]
    other = synthetic_clip(frames=1, seed=5)
    with pytest.raises(ValueError, match='1 of 1 warm-up frames have no ground-truth track map'):
        build_targets(factory(), other, labels[:1], _reliability(labels[:1]),
                      TargetConfig(num_classes=4))
