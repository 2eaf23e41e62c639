"""ditta-bench: speed, memory and (optionally) quality of every method on the same frames.

Every method runs in its own fresh process on the same generated frames, model and machine, so
peak memory is its own: steady-state throughput (FPS) and per-frame latency p50/p95 after the
warm-up, the warm-up/adaptation time, peak CPU RSS (and peak CUDA memory on a GPU). Ratios are
computed within the run. Random weights are sharpened (classifier x30, as the reference
fixtures do) so that prompts, targets and fused inference happen as with a trained model.

Extra comparisons:
  --reference-comparison  our add-on and adaptation step against the reference's dense [hw, hw]
                          add-on (and its two backbone passes per frame) on the same model dims;
                          the adaptation steps run twice more with glibc returning freed memory
                          at once (MALLOC_MMAP_THRESHOLD_=131072), to measure peak memory in use
  --stage-b-comparison    stage B with SAM2 image features cached per warm-up frame against
                          recomputing them at every per-object call; targets must be identical
  --quality DIR           ditta-eval --offline of every method (and DiTTA with the ground-truth
                          'oracle' teacher) on generated target-domain sequences written to DIR
  --stage-costs           per-frame cost of each DiTTA stage (A, B, C per step, D) at --size
  --addon-cost            stage D against the ISS pass in one process, frames alternating
                          between the two (--frames of each), and the multiply-adds of each
  --node-latency          the node over DDS: per-frame latency, throughput, and the share spent
                          outside the model (decode, encode, publish), at --size
"""
import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import torch

from ditta_ros.methods import METHODS
from ditta_ros.model.build import FAMILIES
from ditta_ros.predictor import PRECISIONS
from ditta_ros.runtime import configure_process, job_memory

REPRODUCE = '''The README's tables, each from one command:
  CPU, SegFormer-B0:      ditta-bench --size 1024x512 --stage-costs
  CPU, add-on cost:       ditta-bench --methods none,ditta --size 1024x512 --addon-cost
                          ditta-bench --methods none,ditta --variant b5 --size 864x480
                            --addon-cost
  CPU, quality:           ditta-bench --methods none,ditta,tent,cotta,auxadapt --quality DIR
  CPU, SAM2 at its size:  ditta-bench --methods ditta,sam2_refine --frames 4
                            --sam2-config configs/sam2.1/sam2.1_hiera_l.yaml --sam2-image-size 1024
  CPU, 2048x1024 + node:  ditta-bench --methods none,ditta --size 2048x1024 --frames 3 --warmup 2
                            --passes 1 --node-latency
  CPU, reference add-on:  ditta-bench --methods none --reference-comparison --frames 2 --warmup 2
                            --passes 1
  GPU, Cityscapes size:   ditta-bench --device cuda --variant b5 --size 2048x1024 --frames 8
                            --warmup 4 --passes 2 --teacher sam2 --sam2-image-size 1024
                            --sam2-config configs/sam2.1/sam2.1_hiera_l.yaml
  GPU, VSPW-like size:    ditta-bench --device cuda --variant b5 --size 864x480 --frames 30
                            --warmup 6 --teacher sam2 --sam2-image-size 1024 --stage-costs
                            --sam2-config configs/sam2.1/sam2.1_hiera_l.yaml'''
WEIGHT_SHARPENING = 30.0
# glibc: serve every block over 128 KiB by mmap and unmap it on free (no dynamic threshold)
LIVE_MEMORY_ENV = {'MALLOC_MMAP_THRESHOLD_': '131072'}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='ditta-bench', description=__doc__, epilog=REPRODUCE,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--family', default='segformer', choices=FAMILIES)
    p.add_argument('--variant', default='b0', help='model variant, e.g. b0..b5 for SegFormer')
    p.add_argument('--checkpoint', default='', help='model weights (default: random)')
    p.add_argument('--embed-dim', type=int, default=256, help='decoder width D')
    p.add_argument('--num-classes', type=int, default=19)
    p.add_argument('--window', type=int, default=5, help='add-on window radius r')
    p.add_argument('--size', default='1024x512', help='frame WIDTHxHEIGHT (network input too)')
    p.add_argument('--device', default='auto', help='auto, cpu or cuda')
    p.add_argument('--precision', choices=list(PRECISIONS), default='fp32',
                   help='autocast of none/ditta inference (the peers run in fp32)')
    p.add_argument('--methods', default=','.join(METHODS),
                   help='comma-separated, from: ' + ', '.join(METHODS))
    p.add_argument('--frames', type=int, default=12, help='timed frames after the warm-up')
    p.add_argument('--warmup', type=int, default=6, help='warm-up frames')
    p.add_argument('--passes', type=int, default=5, help='DiTTA adaptation passes')
    p.add_argument('--teacher', choices=['flow', 'sam2'], default='flow',
                   help='teacher of ditta (sam2_refine always uses SAM2)')
    p.add_argument('--sam2-config', default='configs/sam2.1/sam2.1_hiera_t.yaml',
                   help='SAM2 model config (hiera-large: configs/sam2.1/sam2.1_hiera_l.yaml)')
    p.add_argument('--sam2-checkpoint', default='', help='default: random SAM2 weights')
    p.add_argument('--sam2-image-size', type=int, default=512,
                   help='SAM2 input size when its weights are random')
    p.add_argument('--reference-comparison', action='store_true')
    p.add_argument('--stage-b-comparison', action='store_true')
    p.add_argument('--quality', default=None, metavar='DIR')
    p.add_argument('--stage-costs', action='store_true')
    p.add_argument('--addon-cost', action='store_true')
    p.add_argument('--node-latency', action='store_true')
    p.add_argument('--json', default=None, help='write all figures as JSON')
    p.add_argument('--markdown', default=None, help='write the tables as Markdown')
    return p


def _size(text):
    w, h = (int(v) for v in text.lower().split('x'))
    return w, h


def _device(choice):
    from ditta_ros.settings import resolve_device
    return resolve_device(choice)


def _model(args, device, **overrides):
    from ditta_ros.model.build import ModelSpec, build_model
    fields = dict(family=args.family, variant=args.variant, checkpoint=args.checkpoint,
                  num_classes=args.num_classes, embed_dim=args.embed_dim, window=args.window)
    fields.update(overrides)
    model = build_model(ModelSpec(**fields), device).eval()
    if not fields['checkpoint']:
        with torch.no_grad():
            for param in model.decode_head.classifier_parameters():
                param.mul_(WEIGHT_SHARPENING)
    return model


def _frames(args, count):
    from ditta_ros.synth.sequence import SequenceSpec, generate
    w, h = _size(args.size)
    return [f.image for f in generate(SequenceSpec(width=w, height=h, frames=count, seed=7,
                                                    domain='fog+noise'))]


def sam2_teacher_spec(args):
    """The SAM2 teacher: the given checkpoint, or random weights saved to a temporary file."""
    from ditta_ros.teacher.factory import TeacherSpec
    checkpoint, overrides = args.sam2_checkpoint, ()
    if not checkpoint:
        import tempfile
        from sam2.build_sam import build_sam2_video_predictor
        overrides = (f'++model.image_size={args.sam2_image_size}',)
        torch.manual_seed(0)
        model = build_sam2_video_predictor(args.sam2_config, ckpt_path=None, device='cpu',
                                           hydra_overrides_extra=list(overrides))
        checkpoint = tempfile.mkstemp(suffix='.pt')[1]
        torch.save({'model': model.state_dict()}, checkpoint)
    return TeacherSpec('sam2', args.sam2_config, checkpoint, overrides)


def _peak_memory(device):
    figures = {'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.device(device).type == 'cuda':
        figures['peak_cuda_mb'] = torch.cuda.max_memory_allocated() / 2 ** 20
    return figures


def _synchronize(device):
    """Wait for the GPU's queued work, so that a timer read next covers it."""
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize()


def measure_method(args, method):
    """One method: warm-up, then timed frames (runs in its own process)."""
    from ditta_ros.adapt.ditta import AdaptConfig
    from ditta_ros.engine import AdaptationWorker, EngineConfig, Phase, WarmupConfig
    from ditta_ros.methods import NEEDS_TEACHER, make_stream
    from ditta_ros.preprocess import InputSpec
    from ditta_ros.teacher.factory import TeacherSpec, make_teacher
    from ditta_ros.teacher.targets import TargetConfig
    torch.set_num_threads(torch.get_num_threads())
    device = _device(args.device)
    model = _model(args, device)
    spec = InputSpec(img_scale=_size(args.size))
    frames = _frames(args, args.warmup + args.frames + 1)
    teacher = None
    if method in NEEDS_TEACHER:
        use_sam2 = method == 'sam2_refine' or args.teacher == 'sam2'
        teacher = make_teacher(sam2_teacher_spec(args) if use_sam2 else TeacherSpec('flow'),
                               device)
    worker = AdaptationWorker() if method == 'ditta' else None
    cfg = EngineConfig(method=method, warmup=WarmupConfig(frames=args.warmup),
                       targets=TargetConfig(num_classes=args.num_classes),
                       adapt=AdaptConfig(passes=args.passes), seed=0,
                       precision=args.precision)
    stream = make_stream('bench', model, spec, cfg, worker, teacher, device)
    started = time.perf_counter()
    for i in range(args.warmup):
        stream.process(frames[i], 0.1 * i)
    while method == 'ditta' and stream.status().phase not in (Phase.ADAPTED, Phase.FAILED):
        time.sleep(0.01)
    warmup_s = time.perf_counter() - started
    stream.process(frames[args.warmup], 0.1 * args.warmup)   # first post-warm-up frame
    latencies = []
    for i in range(args.warmup + 1, len(frames)):
        tic = time.perf_counter()
        stream.process(frames[i], 0.1 * i)
        _synchronize(device)
        latencies.append(time.perf_counter() - tic)
    if worker is not None:
        worker.stop()
    status = stream.status()
    lat = np.asarray(latencies) * 1000
    return {'method': method, 'fps': 1000.0 / lat.mean(), 'latency_p50_ms': float(np.median(lat)),
            'latency_p95_ms': float(np.percentile(lat, 95)), 'warmup_s': warmup_s,
            'phase': status.phase.name.lower(), 'reason': status.reason,
            **_peak_memory(device)}


def reference_comparison(args, which):
    """Reference-style (dense add-on, two backbone passes) vs ours; one measurement per call."""
    from ditta_ros.adapt.ditta import AdaptConfig, DiTTAAdapter
    from ditta_ros.predictor import FramePredictor, frame_input, to_prediction
    from ditta_ros.preprocess import InputSpec
    from ditta_ros.teacher.targets import Target
    device = _device(args.device)
    tiny = dict(embed_dims=[16, 32, 64, 128], depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8],
                sr_ratios=[8, 4, 2, 1])
    model = _model(args, device, variant='custom', mit=tiny, embed_dim=256, window=5,
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
            _synchronize(device)
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
            _synchronize(device)
            timings.append(time.perf_counter() - tic)
    # steady state: the median of the repetitions after the first (allocations, caches)
    return {'measurement': which, 'seconds': float(np.median(timings[1:])),
            **_peak_memory(device)}


def stage_b_comparison(args):
    """Stage B on the same warm-up with and without the per-frame image feature cache."""
    from ditta_ros.inference import iss_prediction
    from ditta_ros.predictor import frame_input, to_prediction
    from ditta_ros.preprocess import InputSpec
    from ditta_ros.teacher.sam2_teacher import SAM2Propagator, build_predictor
    from ditta_ros.teacher.targets import TargetConfig, build_targets
    device = _device(args.device)
    model = _model(args, device)
    spec = InputSpec(img_scale=_size(args.size))
    frames = _frames(args, args.warmup)
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
    device = _device(args.device)
    model = _model(args, device)
    spec = InputSpec(img_scale=_size(args.size))
    frames = _frames(args, args.warmup + 3)
    warm = frames[:args.warmup]
    predictor = FramePredictor(model, spec, device)
    tic = time.perf_counter()
    stage_a = [predictor.predict(model.decode_head, f, fused=False, want_confidence=True)
               for f in warm]
    costs = {'A (ISS prediction + reliability) per frame': (time.perf_counter() - tic) / len(warm)}
    clip = WarmupClip(warm, [p.label.cpu() for p in stage_a],
                      [p.confidence.cpu() for p in stage_a])
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
            build = build_targets(factory(None), warm, clip.labels, clip.reliabilities, cfg)
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
    _synchronize(device)
    costs['D (fused inference) per frame'] = (time.perf_counter() - tic) / 2
    return costs


def addon_cost(args):
    """Stage D against the ISS pass of the same model on the same frames, in one process: each
    frame is predicted plain, then fused (the untrained add-on costs what an adapted one does),
    so a drift of the machine's speed hits both alike; and the multiply-adds of one frame of each
    (matrix products and convolutions, as PyTorch's flop counter counts them; elementwise work
    such as the softmax is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode
    from ditta_ros.predictor import FramePredictor
    from ditta_ros.preprocess import InputSpec
    device = _device(args.device)
    model = _model(args, device)
    spec = InputSpec(img_scale=_size(args.size))
    frames = _frames(args, args.frames + 1)
    predictors = {kind: FramePredictor(model, spec, device, precision=args.precision)
                  for kind in ('ISS', 'fused')}
    seconds = {kind: [] for kind in predictors}
    for i, frame in enumerate(frames):
        for kind, predictor in predictors.items():
            _synchronize(device)
            tic = time.perf_counter()
            predictor.predict(model.decode_head, frame, fused=kind == 'fused')
            _synchronize(device)
            if i:                      # the first frame has no previous one to attend to
                seconds[kind].append(time.perf_counter() - tic)
    figures = {}
    for kind, predictor in predictors.items():
        with FlopCounterMode(display=False) as counter:
            predictor.predict(model.decode_head, frames[0], fused=kind == 'fused')
        figures[kind] = {'latency_p50_ms': 1000 * float(np.median(seconds[kind])),
                         'gmacs': counter.get_total_flops() / 2e9}
    return figures


def node_latency(args):
    """The installed node over DDS: lockstep replay of generated frames, methods none, ditta."""
    import os
    import tempfile
    from ditta_ros.io.video import Video
    from ditta_ros.ros.replay import (Client, NodeProcess, dds_environment, replay_video,
                                      wait_until)
    os.environ.update(dds_environment())
    device = _device(args.device)
    model = _model(args, device)
    workdir = Path(tempfile.mkdtemp(prefix='ditta_bench_'))
    checkpoint = workdir / 'model.pt'
    state = {f'backbone.{k}': v for k, v in model.backbone.state_dict().items()}
    state.update({f'decode_head.{k}': v for k, v in model.decode_head.state_dict().items()})
    torch.save({'state_dict': state}, checkpoint)
    w, h = _size(args.size)
    frames = _frames(args, args.warmup + args.frames)
    video = Video('bench', frames, [0.1 * i for i in range(len(frames))])
    results = {}
    client = Client('ditta_bench')
    from diagnostic_msgs.msg import DiagnosticArray
    diagnostics = client.collect(DiagnosticArray, '/diagnostics')
    try:
        for method in ('none', 'ditta'):
            params = {'camera_topics': ['/camera/image_raw'], 'method': method,
                      'model.family': args.family, 'model.variant': args.variant,
                      'model.checkpoint': str(checkpoint), 'model.embed_dim': args.embed_dim,
                      'model.window': args.window, 'model.input_scale': [w, h],
                      'teacher.name': 'flow', 'warmup.frames': args.warmup,
                      'adapt.passes': args.passes, 'input.qos': 'reliable',
                      'output.color_mask': True, 'output.status_rate_hz': 2.0,
                      'device': args.device}
            node = NodeProcess(workdir, params, name='ditta')
            try:
                node.wait_for_log('ready:', 120)
                result = replay_video(client, video, '/camera/image_raw', 'ditta', args.warmup,
                                      wait_for_adaptation=method == 'ditta')
                diagnostics.clear()
                wait_until(lambda: diagnostics, 10, 'diagnostics')
            finally:
                node.stop()
            values = {kv.key: kv.value for kv in diagnostics[-1].status[0].values}
            decode, model_ms, publish = (float(values[k]) for k in
                                         ('decode_ms', 'model_ms', 'encode_publish_ms'))
            node_ms = decode + model_ms + publish
            results[method] = {
                'round_trip_ms': 1000 * result['eval_seconds'] / max(1, args.frames),
                'throughput_fps': args.frames / max(result['eval_seconds'], 1e-9),
                'decode_ms': decode, 'model_ms': model_ms, 'encode_publish_ms': publish,
                'outside_model_share': (decode + publish) / node_ms if node_ms else float('nan'),
                'received': result['received'], 'sent': result['sent']}
    finally:
        client.close()
    return results


def _configured(function, *args):
    configure_process()
    return function(*args)


def _in_fresh_process(function, *args, env=None):
    """function(*args) in a new interpreter (its own peak memory), configured as the tools are,
    with `env` added to its environment."""
    env = env or {}
    previous = {name: os.environ.get(name) for name in env}
    os.environ.update(env)        # a spawned interpreter starts with this process's environment
    try:
        with ProcessPoolExecutor(1, mp_context=mp.get_context('spawn')) as pool:
            return pool.submit(_configured, function, *args).result()
    except BrokenProcessPool:     # a killed child (out of memory) must not hang the benchmark
        raise RuntimeError(f'{function.__name__}: its process died before it reported '
                           '(killed for lack of memory?)') from None
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def quality(args, folder):
    """ditta-eval --offline of every method on generated target-domain drives."""
    from ditta_ros.tools import evaluate, synth
    data = Path(folder) / 'data'
    if not data.exists():
        synth.main(['--out', str(data), '--sequences', '2', '--frames', '50', '--size',
                    '512x256', '--domain', 'fog+noise', '--seed', '100'])
    from ditta_ros.labels import config_dir
    from ditta_ros.tools.demo import find_checkpoint
    common = [str(data), '--offline', '--params', str(Path(config_dir()) / 'demo.yaml'),
              '-p', f'model.checkpoint:={find_checkpoint()}', '-p', 'adapt.seed:=0',
              '--warmup-ratio', '10']
    methods = [m for m in args.methods.split(',') if m != 'sam2_refine']
    evaluate.main(common + ['--methods', ','.join(methods), '--json',
                            str(Path(folder) / 'quality.json')])
    evaluate.main(common + ['--methods', 'ditta', '--oracle', '--json',
                            str(Path(folder) / 'quality_oracle.json')])
    table = json.loads((Path(folder) / 'quality.json').read_text())['methods']
    table['ditta (oracle teacher)'] = json.loads(
        (Path(folder) / 'quality_oracle.json').read_text())['methods']['ditta']
    return table


def _pct(v):
    return '–' if v is None else f'{100 * v:.1f}'


def markdown(report) -> str:
    lines = [f'Machine: {report["machine"]}. Model: {report["model"]}, frames {report["size"]}, '
             f'{report["warmup"]} warm-up frames, {report["frames"]} timed frames.', '',
             '| method | FPS | latency p50 / p95 (ms) | warm-up + adaptation (s) | peak RSS (MB) '
             '| peak CUDA allocated (MB) | x ISS time | phase |',
             '|---|---|---|---|---|---|---|---|']
    base = report['methods'].get('none', {}).get('latency_p50_ms')
    for name, m in report['methods'].items():
        ratio = f'{m["latency_p50_ms"] / base:.2f}' if base else '–'
        cuda = f'{m["peak_cuda_mb"]:.0f}' if 'peak_cuda_mb' in m else '–'
        lines.append(f'| {name} | {m["fps"]:.2f} | {m["latency_p50_ms"]:.1f} / '
                     f'{m["latency_p95_ms"]:.1f} | {m["warmup_s"]:.1f} | {m["peak_rss_mb"]:.0f} '
                     f'| {cuda} | {ratio} | {m["phase"]} |')
    for key, title in (('ratios', 'Ratios (this run)'),):
        if report.get(key):
            lines += ['', f'**{title}**: ' + '; '.join(f'{k} = {v:.3g}'
                                                       for k, v in report[key].items())]
    if report.get('reference'):
        lines += ['', '| reference comparison (480x864, D=256, r=5) | seconds | peak RSS (MB) '
                      '| peak in use (MB) |', '|---|---|---|---|']
        for name, r in report['reference'].items():
            in_use = f'{r["peak_in_use_mb"]:.0f}' if 'peak_in_use_mb' in r else '–'
            lines.append(f'| {name} | {r["seconds"]:.2f} | {r["peak_rss_mb"]:.0f} | {in_use} |')
    if report.get('stage_b'):
        b = report['stage_b']
        lines += ['', f'Stage B (SAM2, {b["warmup_frames"]} warm-up frames, {b["objects"]} '
                      f'objects): features cached {b["cached_s"]:.1f} s, recomputed '
                      f'{b["recomputed_s"]:.1f} s: {b["speedup"]:.1f}x, identical targets: '
                      f'{b["identical_targets"]}.']
    if report.get('stage_costs'):
        lines += ['', f'| stage (at {report["size"]}) | seconds |', '|---|---|']
        lines += [f'| {k} | {v:.3f} |' for k, v in report['stage_costs'].items()]
    if report.get('addon_cost'):
        lines += ['', f'| frames alternating, one process ({report["size"]}) | latency p50 (ms) '
                      '| multiply-adds (G) |', '|---|---|---|']
        lines += [f'| {kind} | {c["latency_p50_ms"]:.1f} | {c["gmacs"]:.2f} |'
                  for kind, c in report['addon_cost'].items()]
    if report.get('node'):
        lines += ['', f'| node over DDS ({report["size"]}) | round trip (ms) | throughput (FPS) '
                      '| decode / model / encode+publish (ms) | outside the model |',
                  '|---|---|---|---|---|']
        for name, n in report['node'].items():
            lines.append(f'| {name} | {n["round_trip_ms"]:.0f} | {n["throughput_fps"]:.2f} | '
                         f'{n["decode_ms"]:.1f} / {n["model_ms"]:.1f} / '
                         f'{n["encode_publish_ms"]:.1f} | {100 * n["outside_model_share"]:.0f} % |')
    if report.get('quality'):
        lines += ['', '| method | mIoU | wIoU | mVC8 | mVC16 | TC |', '|---|---|---|---|---|---|']
        for name, q in report['quality'].items():
            lines.append(f'| {name} | ' + ' | '.join(_pct(q.get(k)) for k in
                                                   ('mIoU', 'wIoU', 'mVC8', 'mVC16', 'TC')) + ' |')
    return '\n'.join(lines) + '\n'


def main(argv=None) -> int:
    configure_process()
    args = build_parser().parse_args(argv)
    methods = [m.strip() for m in args.methods.split(',') if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        print(f'error: unknown method(s) {unknown}; choose from {", ".join(METHODS)}',
              file=sys.stderr)
        return 1
    import platform
    device = _device(args.device)
    machine = (torch.cuda.get_device_name() if device == 'cuda'
               else f'{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores')
    report = {'machine': machine, 'device': device, 'size': args.size, 'warmup': args.warmup,
              'frames': args.frames,
              'model': f'{args.family}/{args.variant} ({args.checkpoint or "random weights"})',
              'methods': {}}
    for method in methods:
        print(f'[bench] {method} ...', flush=True)
        report['methods'][method] = _in_fresh_process(measure_method, args, method)
    m = report['methods']
    report['ratios'] = {}
    if 'none' in m and 'ditta' in m:
        report['ratios']['DiTTA / ISS steady-state time'] = \
            m['ditta']['latency_p50_ms'] / m['none']['latency_p50_ms']
    if 'sam2_refine' in m and 'ditta' in m:
        report['ratios']['sam2_refine / DiTTA time'] = \
            m['sam2_refine']['latency_p50_ms'] / m['ditta']['latency_p50_ms']
    if args.reference_comparison:
        report['reference'] = {}
        for which in ('reference inference', 'ours inference', 'reference adaptation step',
                      'ours adaptation step'):
            print(f'[bench] {which} ...', flush=True)
            report['reference'][which] = _in_fresh_process(reference_comparison, args, which)
        r = report['reference']
        report['ratios']['reference / ours fused inference time'] = \
            r['reference inference']['seconds'] / r['ours inference']['seconds']
        report['ratios']['reference / ours adaptation step time'] = \
            r['reference adaptation step']['seconds'] / r['ours adaptation step']['seconds']
        report['ratios']['ours / reference adaptation peak RSS'] = \
            r['ours adaptation step']['peak_rss_mb'] / r['reference adaptation step']['peak_rss_mb']
        # the same steps with glibc returning every freed block at once: peak RSS is then the
        # peak of memory in use, without what the allocator keeps for reuse
        for which in ('reference adaptation step', 'ours adaptation step'):
            print(f'[bench] {which}, freed memory returned at once ...', flush=True)
            r[which]['peak_in_use_mb'] = _in_fresh_process(
                reference_comparison, args, which, env=LIVE_MEMORY_ENV)['peak_rss_mb']
        report['ratios']['ours / reference adaptation peak memory in use'] = \
            r['ours adaptation step']['peak_in_use_mb'] / \
            r['reference adaptation step']['peak_in_use_mb']
    if args.stage_b_comparison:
        print('[bench] stage B ...', flush=True)
        report['stage_b'] = _in_fresh_process(stage_b_comparison, args)
    if args.stage_costs:
        print('[bench] stage costs ...', flush=True)
        report['stage_costs'] = _in_fresh_process(stage_costs, args)
    if args.addon_cost:
        print('[bench] add-on cost ...', flush=True)
        cost = report['addon_cost'] = _in_fresh_process(addon_cost, args)
        report['ratios']['fused / ISS frame time, alternating'] = \
            cost['fused']['latency_p50_ms'] / cost['ISS']['latency_p50_ms']
        report['ratios']['fused / ISS multiply-adds'] = \
            cost['fused']['gmacs'] / cost['ISS']['gmacs']
    if args.node_latency:
        print('[bench] node over DDS ...', flush=True)
        report['node'] = _in_fresh_process(node_latency, args)
    if args.quality:
        report['quality'] = quality(args, args.quality)
    text = markdown(report)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == '__main__':
    sys.exit(main())
