"""Each method's steady-state speed and memory after its warm-up (one process per method)."""
import time

import numpy as np
import torch

from ditta_ros.tools.bench.harness import (bench_frames, bench_model, device_for, peak_memory,
                                           sam2_teacher_spec, synchronize, frame_size)


def measure_method(args, method):
    """One method: warm-up, then timed frames (runs in its own process)."""
    from ditta_ros.adapt.ditta import AdaptConfig
    from ditta_ros.preprocess import InputSpec
    from ditta_ros.stream.config import StreamConfig, WarmupConfig
    from ditta_ros.stream.methods import METHODS, make_stream
    from ditta_ros.teacher.factory import TeacherSpec, make_teacher
    torch.set_num_threads(torch.get_num_threads())
    device = device_for(args.device)
    model = bench_model(args, device)
    spec = InputSpec(img_scale=frame_size(args.size))
    frames = bench_frames(args, args.warmup + args.frames + 1)
    teacher = None
    if METHODS[method].needs_teacher:
        use_sam2 = method == 'sam2_refine' or args.teacher == 'sam2'
        teacher = make_teacher(sam2_teacher_spec(args) if use_sam2 else TeacherSpec('flow'),
                               device)
    cfg = StreamConfig(method=method, warmup=WarmupConfig(frames=args.warmup),
                       adapt=AdaptConfig(passes=args.passes), seed=0,
                       precision=args.precision)
    stream = make_stream('bench', model, spec, cfg, teacher, device=device)
    started = time.perf_counter()
    for i in range(args.warmup):
        stream.process(frames[i], 0.1 * i)
    stream.wait_for_adaptation()
    warmup_s = time.perf_counter() - started
    stream.process(frames[args.warmup], 0.1 * args.warmup)   # first post-warm-up frame
    latencies = []
    for i in range(args.warmup + 1, len(frames)):
        tic = time.perf_counter()
        stream.process(frames[i], 0.1 * i)
        synchronize(device)
        latencies.append(time.perf_counter() - tic)
    stream.shutdown()
    status = stream.status()
    lat = np.asarray(latencies) * 1000
    return {'method': method, 'fps': 1000.0 / lat.mean(), 'latency_p50_ms': float(np.median(lat)),
            'latency_p95_ms': float(np.percentile(lat, 95)), 'warmup_s': warmup_s,
            'phase': status.phase.name.lower(), 'reason': status.reason,
            **peak_memory(device)}
