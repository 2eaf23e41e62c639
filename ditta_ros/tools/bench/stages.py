"""Costs of the method's stages, and the comparisons with the reference implementation's way."""
import time

import numpy as np
import torch

from ditta_ros.runtime import job_memory
from ditta_ros.tools.bench.harness import (bench_frames, bench_model, device_for, peak_memory,
                                           sam2_teacher_spec, synchronize, frame_size)


def reference_comparison(args, which):
    """Reference-style (dense add-on, two backbone passes) vs ours; one measurement per call."""
    from ditta_ros.adapt.ditta import AdaptConfig, DiTTAAdapter
    from ditta_ros.prediction import to_prediction
    from ditta_ros.predictor import FramePredictor, frame_input
    from ditta_ros.preprocess import InputSpec
    from ditta_ros.teacher.targets import Target
    device = device_for(args.device)
    tiny = dict(embed_dims=[16, 32, 64, 128], depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8],
                sr_ratios=[8, 4, 2, 1])
    model = bench_model(args, device, variant='custom', mit=tiny, embed_dim=256, window=5,
                   checkpoint='')
    head = model.decode_head
    head.attention = 'dense' if which.startswith('reference') else 'windowed'
    w, h = 864, 480
    spec = InputSpec(img_scale=(w, h))
    from ditta_ros.synth.sequence import SequenceSpec, generate
    frames = [f.image for f in generate(SequenceSpec(width=w, height=h, frames=4, seed=1))]
    timings = []
    if which.endswith('inference'):
        predictor = FramePredictor(model, spec, device)
        predictor.predict(head, frames[0], fused=True)
        for frame_a, frame_b in zip(frames[:-1], frames[1:]):
            tic = time.perf_counter()
            with torch.no_grad():
                if which.startswith('reference'):   # the reference: the clip through everything
                    clip = torch.cat([frame_input(frame_a, spec, device),
                                      frame_input(frame_b, spec, device)])
                    logits, _ = model.clip_logits(head, clip)
                    to_prediction(logits, clip.shape[-2:], frame_b.shape[:2], want_probs=True)
                else:
                    predictor.predict(head, frame_b, fused=True)
            synchronize(device)
            timings.append(time.perf_counter() - tic)
    else:
        adapter = DiTTAAdapter(model, head, AdaptConfig())
        obj_id = torch.zeros(h, w, dtype=torch.int64)
        obj_id[100:300, 100:400], obj_id[320:460, 500:800] = 1, 2
        score = torch.zeros(3, args.num_classes)
        score[1, 1], score[2, 2] = 0.9, 0.8
        label = torch.randint(0, args.num_classes, (h, w))
        clip = torch.cat([frame_input(frames[0], spec, device), frame_input(frames[1], spec,
                                                                             device)])
        for _ in range(3):
            tic = time.perf_counter()
            adapter.step(clip, (h, w), label, Target(obj_id, score))
            synchronize(device)
            timings.append(time.perf_counter() - tic)
    # steady state: the median of the repetitions after the first (allocations, caches)
    return {'measurement': which, 'seconds': float(np.median(timings[1:])),
            **peak_memory(device)}


def stage_b_comparison(args):
    """Stage B on the same warm-up with and without the per-frame image feature cache."""
    from ditta_ros.prediction import iss_prediction
    from ditta_ros.prediction import to_prediction
    from ditta_ros.predictor import frame_input
    from ditta_ros.preprocess import InputSpec
    from ditta_ros.teacher.sam2_teacher import SAM2Propagator, build_predictor
    from ditta_ros.teacher.targets import TargetConfig, build_targets
    device = device_for(args.device)
    model = bench_model(args, device)
    spec = InputSpec(img_scale=frame_size(args.size))
    frames = bench_frames(args, args.warmup)
    labels, rels = [], []
    with torch.no_grad():
        for frame in frames:
            x = frame_input(frame, spec, device)
            _, logits = model.decode_head(model.features(x))
            probs = to_prediction(logits, x.shape[-2:], frame.shape[:2], want_probs=True).probs
            label, rel = iss_prediction(probs)
            labels.append(label.cpu())
            rels.append(rel.cpu())
    teacher = sam2_teacher_spec(args)
    predictor = build_predictor(teacher.sam2_config, teacher.sam2_checkpoint, device,
                                teacher.sam2_overrides)
    results, targets = {}, {}
    for cached in (True, False):
        predictor.cache_features = cached
        tic = time.perf_counter()
        build = build_targets(SAM2Propagator(predictor), frames, labels, rels,
                              TargetConfig(num_classes=args.num_classes))
        results['cached' if cached else 'recomputed'] = time.perf_counter() - tic
        targets[cached] = build.targets
    identical = targets[True].keys() == targets[False].keys() and all(
        torch.equal(targets[True][k].obj_id, targets[False][k].obj_id)
        and torch.equal(targets[True][k].score, targets[False][k].score) for k in targets[True])
    objects = max((int(t.score.shape[0]) - 1 for t in targets[True].values()), default=0)
    return {'cached_s': results['cached'], 'recomputed_s': results['recomputed'],
            'speedup': results['recomputed'] / results['cached'], 'identical_targets': identical,
            'warmup_frames': len(frames), 'objects': objects}


def stage_costs(args):
    """Seconds per frame (stage A, B, D) or per step (stage C) at the bench frame size."""
    from ditta_ros.adapt.ditta import AdaptConfig, WarmupClip, adapt
    from ditta_ros.predictor import FramePredictor
    from ditta_ros.preprocess import InputSpec
    from ditta_ros.teacher.factory import TeacherSpec, make_teacher
    from ditta_ros.teacher.targets import TargetConfig, build_targets
    device = device_for(args.device)
    model = bench_model(args, device)
    spec = InputSpec(img_scale=frame_size(args.size))
    frames = bench_frames(args, args.warmup + 3)
    warm = frames[:args.warmup]
    predictor = FramePredictor(model, spec, device)
    tic = time.perf_counter()
    stage_a = [predictor.predict(model.decode_head, f, fused=False, want_reliability=True)
               for f in warm]
    costs = {'A (ISS prediction + reliability) per frame': (time.perf_counter() - tic) / len(warm)}
    clip = WarmupClip(warm, [p.label.cpu() for p in stage_a],
                      [p.reliability.cpu() for p in stage_a])
    cfg = TargetConfig(num_classes=args.num_classes)
    teachers = {'flow': TeacherSpec('flow')}
    if args.teacher == 'sam2':
        teachers['sam2'] = sam2_teacher_spec(args)
    head = model.decode_head
    with job_memory():    # as the node's adaptation job, so that stage D runs as in the node
        targets = None
        for name, teacher_spec in teachers.items():
            factory = make_teacher(teacher_spec, device)
            tic = time.perf_counter()
            build = build_targets(factory(), warm, clip.labels, clip.reliabilities, cfg)
            costs[f'B ({name} teacher) per warm-up frame'] = (time.perf_counter() - tic) / len(warm)
            targets = targets or build.targets
        if targets:
            steps = []
            adapter = adapt(model, model.decode_head, clip, targets, spec,
                            AdaptConfig(passes=1), device,
                            on_step=lambda *a: steps.append(time.perf_counter()))
            tic = steps[0] if len(steps) > 1 else None
            if tic is not None:
                costs['C (adaptation) per step'] = (steps[-1] - tic) / (len(steps) - 1)
            head = adapter.head
    predictor.reset()
    predictor.predict(head, frames[args.warmup], fused=True)
    tic = time.perf_counter()
    for frame in frames[args.warmup + 1:]:
        predictor.predict(head, frame, fused=True)
    synchronize(device)
    costs['D (fused inference) per frame'] = (time.perf_counter() - tic) / 2
    return costs


def addon_cost(args):
    """Stage D against the ISS pass of the same model on the same frames, in one process: each
    frame is predicted plain, plain with the robust preset's temporal hold (what the defaults
    serve), then fused with the add-on (the reference's stage D; the untrained add-on costs what
    an adapted one does), so a drift of the machine's speed hits all alike; and the multiply-adds
    of one frame of each (matrix products and convolutions, as PyTorch's flop counter counts
    them; elementwise work such as the softmax and the hold's addition is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode
    from ditta_ros.adapt.presets import PRESETS
    from ditta_ros.predictor import FramePredictor
    from ditta_ros.preprocess import InputSpec
    device = device_for(args.device)
    model = bench_model(args, device)
    spec = InputSpec(img_scale=frame_size(args.size))
    frames = bench_frames(args, args.frames + 1)
    holds = {'ISS': 0.0, 'held': PRESETS['robust']['fusion_hold'], 'fused': 0.0}
    predictors = {kind: FramePredictor(model, spec, device, precision=args.precision, hold=hold)
                  for kind, hold in holds.items()}
    seconds = {kind: [] for kind in predictors}
    for i, frame in enumerate(frames):
        for kind, predictor in predictors.items():
            synchronize(device)
            tic = time.perf_counter()
            predictor.predict(model.decode_head, frame, fused=kind == 'fused')
            synchronize(device)
            if i:                      # the first frame has no previous one to attend to
                seconds[kind].append(time.perf_counter() - tic)
    figures = {}
    for kind, predictor in predictors.items():
        with FlopCounterMode(display=False) as counter:
            predictor.predict(model.decode_head, frames[0], fused=kind == 'fused')
        figures[kind] = {'latency_p50_ms': 1000 * float(np.median(seconds[kind])),
                         'gmacs': counter.get_total_flops() / 2e9}
    return figures
