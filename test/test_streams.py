"""The DiTTA camera stream: phases, background adaptation, swap, restart/reset, save/load, time."""
import threading
import time

import pytest
import torch

from conftest import synthetic_clip, tiny_spec
from ditta_ros.adapt.ditta import AdaptConfig
from ditta_ros.decoder_io import load_decoder, save_decoder
from ditta_ros.model.build import CheckpointError, build_model
from ditta_ros.preprocess import InputSpec
from ditta_ros.stream import methods
from ditta_ros.stream.config import StreamConfig, Phase, WarmupConfig
from ditta_ros.stream.worker import AdaptationWorker
from ditta_ros.teacher.factory import TeacherSpec, make_teacher
from ditta_ros.teacher.targets import TargetConfig

SPEC = InputSpec(img_scale=(96, 64))


def make_stream(model, worker, phases=None, **cfg):
    cfg.setdefault('warmup', WarmupConfig(frames=4))
    cfg.setdefault('adapt', AdaptConfig(passes=1))
    cfg.setdefault('targets', TargetConfig(num_classes=19, frame0_threshold=0.5,
                                           later_threshold=0.5))
    teacher = make_teacher(TeacherSpec(name='flow'), 'cpu')
    return methods.make_stream('cam', model, SPEC, StreamConfig(**cfg), teacher, worker,
                               on_phase_change=(lambda s: phases.append(s.phase)) if phases is not None
                        else None)


def wait_phase(stream, wanted, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stream.status().phase in wanted:
            return stream.status().phase
        time.sleep(0.02)
    raise AssertionError(f'phase stuck at {stream.status()}')


def feed(stream, frames, start=0.0, dt=0.1):
    return [stream.process(f, start + i * dt) for i, f in enumerate(frames)]


def test_phases_advance_to_adapted_and_predictions_never_stop(tiny_model, worker):
    phases = []
    stream = make_stream(tiny_model, worker, phases)
    clip = synthetic_clip(frames=10)
    preds = feed(stream, clip[:4])
    assert all(p is not None and p.label.shape == (48, 80) for p in preds)
    assert wait_phase(stream, {Phase.ADAPTED, Phase.FAILED}) == Phase.ADAPTED
    assert phases[:4] == [Phase.WARMUP, Phase.BUILDING_TARGETS, Phase.ADAPTING, Phase.ADAPTED]
    status = stream.status()
    assert status.decoder == 'adapted' and status.step == status.steps_total == 4
    assert set(status.losses) >= {'distill', 'contra', 'total'} and status.progress == 1.0
    later = feed(stream, clip[4:], start=0.4)
    assert all(p.fused for p in later[1:])


def test_warmup_by_stream_time_with_stride(tiny_model, worker):
    stream = make_stream(tiny_model, worker, warmup=WarmupConfig(frames=0, seconds=0.5, stride=2))
    clip = synthetic_clip(frames=12)
    for i, frame in enumerate(clip):
        stream.process(frame, 100.0 + 0.1 * i)
        if stream.status().phase != Phase.WARMUP:
            break
    # 0.5 s of stream time at 10 Hz is reached on the 6th frame; stride 2 keeps frames 0, 2, 4
    assert i == 5 and stream.status().frames_collected == 3


def test_stamp_jump_back_resets_temporal_state_and_does_not_count(tiny_model, worker):
    stream = make_stream(tiny_model, worker, warmup=WarmupConfig(frames=0, seconds=1.0))
    clip = synthetic_clip(frames=8)
    feed(stream, clip[:4], start=50.0)            # 0.3 s
    stream.process(clip[4], 10.0)                 # bag loop: back 40 s
    assert stream.status().warmup_elapsed_s == pytest.approx(0.3)
    assert stream.predictor._prev is not None     # the new frame starts a new temporal state
    feed(stream, clip[5:], start=10.1)            # +0.1, +0.2, +0.3
    assert stream.status().warmup_elapsed_s == pytest.approx(0.6)


def test_frame_size_change_restarts_the_warmup(tiny_model, worker):
    stream = make_stream(tiny_model, worker, warmup=WarmupConfig(frames=5))
    feed(stream, synthetic_clip(frames=3))
    assert stream.status().frames_collected == 3
    pred = stream.process(synthetic_clip(frames=1, height=64, width=96)[0], 1.0)
    assert pred.label.shape == (64, 96)
    assert stream.status().frames_collected == 1


def test_suppressed_warmup_output(tiny_model, worker):
    stream = make_stream(tiny_model, worker, publish_during_warmup=False)
    assert feed(stream, synthetic_clip(frames=2)) == [None, None]


def test_restart_and_reset_at_any_phase(tiny_model, worker):
    stream = make_stream(tiny_model, worker)
    clip = synthetic_clip(frames=8)
    feed(stream, clip[:4])
    stream.start_adaptation()                      # restart while targets are being built
    assert stream.status().phase == Phase.WARMUP and stream.status().frames_collected == 0
    feed(stream, clip[4:8], start=1.0)
    assert wait_phase(stream, {Phase.ADAPTED}) == Phase.ADAPTED
    adapted_head = stream._head
    assert stream.status().adaptations_completed == 1
    stream.start_adaptation()                      # while adapted: the adapted head keeps serving
    assert stream._head is adapted_head
    assert stream.process(clip[0], 5.0).fused
    stream.reset()
    assert stream.status().phase == Phase.SOURCE and not stream.adapted
    assert not stream.process(clip[1], 5.1).fused
    time.sleep(0.5)
    assert stream.status().phase == Phase.SOURCE  # a cancelled job does not come back


def test_wait_for_service_start(tiny_model, worker):
    stream = make_stream(tiny_model, worker, start_immediately=False)
    assert stream.status().phase == Phase.WAITING
    feed(stream, synthetic_clip(frames=5))
    assert stream.status().phase == Phase.WAITING and stream.status().frames_collected == 0
    stream.start_adaptation()
    assert stream.status().phase == Phase.WARMUP


def test_no_prompt_fails_with_reason_and_keeps_serving(tiny_model, worker):
    stream = make_stream(tiny_model, worker, targets=TargetConfig(num_classes=19,
                                                             frame0_threshold=1.01,
                                                             later_threshold=1.01))
    clip = synthetic_clip(frames=6)
    feed(stream, clip[:4])
    assert wait_phase(stream, {Phase.FAILED, Phase.ADAPTED}) == Phase.FAILED
    assert 'no prompt' in stream.status().reason
    assert stream.process(clip[4], 1.0) is not None and not stream.adapted


def test_save_and_load_adapted_decoder(tiny_model, worker, tmp_path):
    stream = make_stream(tiny_model, worker)
    with pytest.raises(RuntimeError, match='no adapted decoder'):
        stream.save(str(tmp_path / 'x.pt'))
    feed(stream, synthetic_clip(frames=4))
    wait_phase(stream, {Phase.ADAPTED})
    path = tmp_path / 'decoders' / 'cam.pt'
    stream.save(str(path))
    assert path.is_file() and not list(path.parent.glob('.ditta_decoder_*'))
    other = make_stream(tiny_model, worker, start_immediately=False)
    other.load(str(path))
    assert other.status().phase == Phase.ADAPTED and other.status().decoder == 'loaded'
    for a, b in zip(stream._head.state_dict().values(), other._head.state_dict().values()):
        assert torch.equal(a, b)


def test_loading_a_decoder_of_another_model_is_refused(tiny_model, tmp_path):
    model = tiny_model
    other = build_model(tiny_spec(init_seed=3))
    path = tmp_path / 'other.pt'
    save_decoder(str(path), other.decode_head, other.identity, {})
    with pytest.raises(CheckpointError, match='another model.*backbone_fingerprint'):
        load_decoder(str(path), model.decode_head, model.identity)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match='cannot read'):
        load_decoder(str(path), model.decode_head, model.identity)


def test_two_streams_share_the_backbone_and_adapt_their_own_decoders(tiny_model, worker):
    a, b = make_stream(tiny_model, worker), make_stream(tiny_model, worker)
    clip = synthetic_clip(frames=4)
    feed(a, clip)
    feed(b, synthetic_clip(frames=4, seed=5)[::-1])
    wait_phase(a, {Phase.ADAPTED})
    wait_phase(b, {Phase.ADAPTED})
    assert a._head is not b._head and a.model.backbone is b.model.backbone
    differs = any(not torch.equal(x, y) for x, y in zip(a._head.parameters(),
                                                        b._head.parameters()))
    assert differs


def test_flow_teacher_adaptation_on_a_synthetic_drive_lowers_the_losses(tiny_model):
    """Stage A -> B (flow teacher) -> C on a short generated clip: the distillation and
    contrastive losses fall over the passes."""
    from ditta_ros.adapt.ditta import WarmupClip, adapt
    from ditta_ros.predictor import FramePredictor
    from ditta_ros.synth.sequence import SequenceSpec, generate
    from ditta_ros.teacher.mask_propagators import FlowPropagator
    from ditta_ros.teacher.targets import build_targets
    frames = [f.image for f in generate(SequenceSpec(width=128, height=64, frames=4, seed=2))]
    predictor = FramePredictor(tiny_model, SPEC)
    stage_a = [predictor.predict(tiny_model.decode_head, f, fused=False, want_reliability=True)
               for f in frames]
    clip = WarmupClip(frames, [p.label for p in stage_a], [p.reliability for p in stage_a])
    build = build_targets(FlowPropagator(), frames, clip.labels, clip.reliabilities,
                          TargetConfig(num_classes=19, frame0_threshold=0.5,
                                       later_threshold=0.5))
    assert len(build.targets) == 4
    torch.manual_seed(0)
    losses = []
    adapt(tiny_model, tiny_model.decode_head, clip, build.targets, SPEC, AdaptConfig(passes=6),
          on_step=lambda step, total, l: losses.append(l))
    first, last = losses[:4], losses[-4:]
    mean = lambda rows, key: sum(r[key] for r in rows) / len(rows)
    for key in ('distill', 'contra', 'total'):
        assert mean(last, key) < mean(first, key), key


def test_each_adaptation_job_runs_on_a_thread_that_ends_with_it():
    """No thread that ran a job's PyTorch work stays behind (its OpenMP team would slow the
    inference threads); a failing job neither stops the worker nor stays behind either."""
    worker = AdaptationWorker()
    runners, done = [], threading.Event()

    def job():
        runners.append(threading.current_thread())
        torch.ones(1 << 16).sum()

    def failing():
        runners.append(threading.current_thread())
        raise RuntimeError('job failure')

    for each in (job, failing, job):
        worker.submit(each)
    worker.submit(done.set)
    assert done.wait(10)
    assert worker.stop()
    assert len(set(runners)) == 3 and threading.main_thread() not in runners
    assert not any(runner.is_alive() for runner in runners)


@pytest.mark.parametrize('precision', ['bf16', 'fp16'])
def test_reduced_precision_inference_covers_the_addon(tiny_model, precision):
    """The `precision` autocast runs the backbone, decoder and add-on at reduced precision and
    hands float32 outputs on; the add-on's logits stay close to its float32 logits."""
    from ditta_ros.predictor import PRECISIONS, FramePredictor
    head, dtype = tiny_model.decode_head, PRECISIONS[precision]
    reduced = FramePredictor(tiny_model, SPEC, precision=precision)
    for frame in synthetic_clip(frames=3, height=64, width=96, seed=4):
        got = reduced.predict(head, frame, fused=True, want_reliability=True)
    assert got.fused and got.reliability.dtype == torch.float32
    assert reduced._prev.key.dtype == dtype
    torch.manual_seed(0)
    embedding, value = torch.randn(2, 32, 12, 20), torch.randn(19, 12, 20) * 5
    with torch.no_grad():
        exact = head.attend(head.query(embedding[1]), head.key(embedding[0]), value)
        with torch.autocast('cpu', dtype=dtype):
            approx = head.attend(head.query(embedding[1]), head.key(embedding[0]), value)
    assert approx.dtype == dtype
    torch.testing.assert_close(approx.float(), exact, atol=0.3, rtol=0.05)
    with pytest.raises(ValueError, match='unknown precision'):
        FramePredictor(tiny_model, SPEC, precision='int8')


def test_a_head_swap_gives_the_new_heads_fused_predictions(tiny_model):
    """The kept key, logits and folded add-on belong to the head that made them: a predictor
    that served head A and then serves head B predicts what one that served B throughout
    does (the frame before the swap seen through B, B's own fold)."""
    import copy
    from ditta_ros.predictor import FramePredictor
    head_a = tiny_model.decode_head
    head_b = copy.deepcopy(head_a)
    with torch.no_grad():
        for param in head_b.addon_parameters():
            param.add_(torch.randn_like(param))
    frames = synthetic_clip(frames=3, height=64, width=96, seed=6)
    swapped, with_b, with_a = (FramePredictor(tiny_model, SPEC) for _ in range(3))
    for frame in frames[:2]:
        swapped.predict(head_a, frame, fused=True)
        with_b.predict(head_b, frame, fused=True)
        with_a.predict(head_a, frame, fused=True)
    got = swapped.predict(head_b, frames[2], fused=True, want_probs=True)
    want = with_b.predict(head_b, frames[2], fused=True, want_probs=True)
    kept_a = with_a.predict(head_a, frames[2], fused=True, want_probs=True)
    assert got.fused and torch.equal(got.probs, want.probs)
    assert not torch.equal(got.probs, kept_a.probs)      # B's add-on changes the fused output


def test_a_slow_phase_handler_does_not_delay_frames(tiny_model, worker):
    """Phase events fire outside the stream lock: a handler that takes its time (the node saves
    the decoder to disk on ADAPTED) must not hold up the camera thread in process()."""
    entered, release = threading.Event(), threading.Event()

    def slow_handler(status):
        if status.phase == Phase.ADAPTED:
            entered.set()
            release.wait(20)

    teacher = make_teacher(TeacherSpec(name='flow'), 'cpu')
    stream = methods.make_stream('cam', tiny_model, SPEC, StreamConfig(
        warmup=WarmupConfig(frames=4), adapt=AdaptConfig(passes=1),
        targets=TargetConfig(num_classes=19, frame0_threshold=0.5, later_threshold=0.5)),
        teacher, worker, on_phase_change=slow_handler)
    clip = synthetic_clip(frames=6)
    feed(stream, clip[:4])
    try:
        assert entered.wait(180), stream.status()
        started = time.monotonic()
        prediction = stream.process(clip[4], 0.4)
        assert time.monotonic() - started < 5, 'process() waited for the phase handler'
        assert prediction.fused and stream.status().phase == Phase.ADAPTED
    finally:
        release.set()


def test_save_records_the_target_decoder_of_the_adaptation_that_made_the_head(tiny_model, worker,
                                                                              tmp_path):
    stream = make_stream(tiny_model, worker, adapt=AdaptConfig(passes=1, target_decoder='cls_head'))
    feed(stream, synthetic_clip(frames=4))
    assert wait_phase(stream, {Phase.ADAPTED, Phase.FAILED}) == Phase.ADAPTED
    stream.update_config(StreamConfig(warmup=WarmupConfig(frames=4), adapt=AdaptConfig(
        passes=1, target_decoder='addon')))
    stream.save(str(tmp_path / 'd.pt'))
    assert torch.load(tmp_path / 'd.pt', weights_only=False)['info']['target_decoder'] == 'cls_head'


def test_a_stream_without_a_shared_worker_runs_and_ends_its_own(tiny_model):
    """What a method needs is the stream's business: given no worker, a DiTTA stream adapts on
    a thread of its own, wait_for_adaptation returns once the head serves, shutdown ends it."""
    before = {t.name for t in threading.enumerate()}
    stream = make_stream(tiny_model, None)
    feed(stream, synthetic_clip(frames=4))
    status = stream.wait_for_adaptation(timeout=120)
    assert status.phase == Phase.ADAPTED and stream.process(synthetic_clip(frames=1)[0], 1.0).fused
    stream.shutdown()
    deadline = time.monotonic() + 10
    while {t.name for t in threading.enumerate()} - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not {t.name for t in threading.enumerate()} - before


def test_waiting_for_an_adaptation_that_does_not_end_in_time_is_an_error(tiny_model, worker):
    blocker = threading.Event()
    worker.submit(lambda: blocker.wait(30))      # the shared worker is busy with another job
    stream = make_stream(tiny_model, worker)
    feed(stream, synthetic_clip(frames=4))
    try:
        with pytest.raises(TimeoutError, match='still running'):
            stream.wait_for_adaptation(timeout=0.2)
    finally:
        blocker.set()
    assert stream.wait_for_adaptation(timeout=120).phase == Phase.ADAPTED


def test_a_method_that_needs_a_teacher_is_refused_without_one(tiny_model):
    for method in ('ditta', 'sam2_refine'):
        with pytest.raises(ValueError, match='needs a stage-B teacher'):
            methods.make_stream('cam', tiny_model, SPEC, StreamConfig(method=method))


def test_a_step_cap_bounds_the_adaptation_whatever_the_warm_up_length(tiny_model, worker):
    """adapt.max_steps: 4 warm-up frames x 5 passes would be 20 steps; the cap makes it 3."""
    stream = make_stream(tiny_model, worker, adapt=AdaptConfig(passes=5, max_steps=3))
    feed(stream, synthetic_clip(frames=4))
    status = stream.wait_for_adaptation(timeout=120)
    assert status.phase == Phase.ADAPTED and status.step == status.steps_total == 3


def test_the_statistics_baseline_needs_no_teacher_and_serves_renormalised_statistics(
        tiny_model):
    stream = methods.make_stream('cam', tiny_model, SPEC, StreamConfig(
        method='stats', warmup=WarmupConfig(frames=3)))
    try:
        feed(stream, synthetic_clip(frames=3))
        status = stream.wait_for_adaptation(timeout=60)
        assert status.phase == Phase.ADAPTED and status.decoder == 'statistics'
        head = stream._head
        assert head is not tiny_model.decode_head
        source_norm, norm = tiny_model.decode_head.linear_fuse.bn, head.linear_fuse.bn
        assert not torch.allclose(source_norm.running_mean, norm.running_mean)
        for (name, a), (_, b) in zip(tiny_model.decode_head.named_parameters(),
                                     head.named_parameters()):
            assert torch.equal(a, b), f'{name} was trained'
    finally:
        stream.shutdown()
