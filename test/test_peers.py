"""Peer methods: each one's update touches exactly what its paper adapts; streams behave."""
import pytest
import torch

from conftest import synthetic_clip, tiny_spec
from ditta_ros.adapt.peers import AuxAdapt, CoTTA, Sam2Refine, Tent
from ditta_ros.model.build import ModelSpec, build_model
from ditta_ros.preprocess import InputSpec
from ditta_ros.stream.config import StreamConfig, Phase, WarmupConfig
from ditta_ros.stream.methods import METHODS, make_stream
from ditta_ros.teacher.factory import TeacherSpec, make_teacher
from ditta_ros.teacher.targets import TargetConfig

SPEC = InputSpec(img_scale=(96, 64))


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before, module):
    return {k for k, v in module.state_dict().items() if not torch.equal(before[k], v)}


@pytest.mark.parametrize('spec', [tiny_spec(), ModelSpec(family='deeplabv3',
                                                         variant='mobilenet_v3_large',
                                                         num_classes=4, window=1)],
                         ids=['segformer', 'deeplabv3'])
def test_tent_updates_only_batchnorm_affine_parameters(spec):
    model = build_model(spec).eval()
    tent = Tent(model, model.decode_head, SPEC, 'cpu')
    backbone, source = snapshot(model.backbone), snapshot(model.decode_head)
    before = snapshot(tent.head)
    frame = synthetic_clip(frames=1)[0]
    prediction = tent.predict(frame, adapt=True)
    assert prediction.label.shape == frame.shape[:2]
    moved = changed(before, tent.head)
    affine = {f'{name}.{p}' for name, m in tent.head.named_modules()
              if isinstance(m, torch.nn.BatchNorm2d) and m.running_mean is None
              for p in ('weight', 'bias')}
    assert moved and moved <= affine
    assert not changed(backbone, model.backbone) and not changed(source, model.decode_head)
    frozen = snapshot(tent.head)
    tent.predict(frame, adapt=False)
    assert not changed(frozen, tent.head)


def test_cotta_student_teacher_and_stochastic_restore(tiny_model):
    cotta = CoTTA(tiny_model, tiny_model.decode_head, SPEC, 'cpu', lr=1e-2,
                  confidence_threshold=1.01)  # always the augmented teacher
    source = snapshot(tiny_model.decode_head)
    student, teacher = snapshot(cotta.student), snapshot(cotta.teacher)
    frame = synthetic_clip(frames=1)[0]
    cotta.predict(frame, adapt=True)
    params = {k for k, _ in cotta.student.named_parameters()}
    plain_path = {k for k in params if not k.startswith(('query_layer', 'key_layer', 'proj_feat'))}
    assert plain_path <= changed(student, cotta.student)  # the whole prediction path adapts
    assert changed(teacher, cotta.teacher) & params          # the EMA moved
    assert not changed(source, tiny_model.decode_head)
    cotta.restore_prob = 1.0                                  # restore everything
    cotta.predict(frame, adapt=True)
    for name, param in cotta.student.named_parameters():
        assert torch.equal(param, source[name]), name


def test_auxadapt_updates_only_the_auxiliary_network(tiny_model):
    aux = AuxAdapt(tiny_model, tiny_model.decode_head, SPEC, 'cpu', lr=1e-2)
    source = snapshot(tiny_model.decode_head)
    frames = synthetic_clip(frames=2)
    first = aux.predict(frames[0], adapt=True)
    plain = make_stream('x', tiny_model, SPEC, StreamConfig(method='none')).process(frames[0], 0)
    assert torch.equal(first.label, plain.label)   # zero-initialised: unchanged at first
    aux_state = snapshot(aux.aux)
    aux.predict(frames[1], adapt=True)
    assert changed(aux_state, aux.aux)
    assert not changed(source, tiny_model.decode_head)


def test_sam2_refine_paints_teacher_masks_over_the_iss_labels(tiny_model):
    teacher = make_teacher(TeacherSpec(name='flow'), 'cpu')
    refine = Sam2Refine(tiny_model, tiny_model.decode_head, SPEC, 'cpu', teacher,
                        TargetConfig(num_classes=19, frame0_threshold=0.3))
    frame = synthetic_clip(frames=1)[0]
    prediction = refine.predict(frame, adapt=False, want_reliability=True)
    assert prediction.label.shape == frame.shape[:2] and prediction.reliability is not None


@pytest.mark.parametrize('method', ['tent', 'cotta', 'auxadapt'])
def test_online_streams_adapt_every_frame_or_only_during_the_warmup(tiny_model, method):
    frames = synthetic_clip(frames=6)
    phases = []
    stream = make_stream('cam', tiny_model, SPEC, StreamConfig(
        method=method, continuous=False, warmup=WarmupConfig(frames=3),
        peer_lr=1e-2), on_phase_change=lambda s: phases.append(s.phase))
    for i, frame in enumerate(frames[:3]):
        assert stream.process(frame, 0.1 * i).label.shape == frame.shape[:2]
    assert phases == [Phase.WARMUP, Phase.ADAPTED]
    adapted = {k: v for k, v in vars(stream._method).items() if isinstance(v, torch.nn.Module)}
    before = {k: snapshot(v) for k, v in adapted.items()}
    stream.process(frames[3], 0.3)       # frozen after the warm-up
    for name, module in adapted.items():
        assert not changed(before[name], module), name
    stream.start_adaptation()
    assert stream.status().phase == Phase.WARMUP
    stream.reset()
    assert stream.status().phase == Phase.SOURCE
    continuous = make_stream('cam', tiny_model, SPEC, StreamConfig(method=method))
    assert continuous.status().phase == Phase.ADAPTING
    continuous.process(frames[0], 0.0)
    assert continuous.status().step == 1


def test_every_method_has_a_stream_and_unknown_ones_are_refused(tiny_model):
    teacher = make_teacher(TeacherSpec(name='flow'), 'cpu')
    frame = synthetic_clip(frames=1)[0]
    for method in METHODS:
        if method == 'ditta':
            continue
        stream = make_stream('cam', tiny_model, SPEC, StreamConfig(
            method=method, targets=TargetConfig(num_classes=19)), teacher=teacher)
        assert stream.process(frame, 0.0).label.shape == frame.shape[:2]
        with pytest.raises(RuntimeError):
            stream.save('/tmp/never.pt')
    with pytest.raises(ValueError, match='unknown method'):
        make_stream('cam', tiny_model, SPEC, StreamConfig(method='bn_adapt'))
