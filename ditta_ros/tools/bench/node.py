"""The installed node over DDS: per-frame latency and where the time goes."""
from pathlib import Path

import torch

from ditta_ros.stream.methods import METHODS
from ditta_ros.tools.bench.harness import bench_frames, bench_model, device_for, frame_size


def node_latency(args):
    """The installed node over DDS: lockstep replay of generated frames, methods none, ditta."""
    import os
    import tempfile
    from ditta_ros.io.video import Video
    from ditta_ros.tools.replay import (Client, NodeProcess, dds_environment, replay_video,
                                      wait_until)
    os.environ.update(dds_environment())
    device = device_for(args.device)
    model = bench_model(args, device)
    workdir = Path(tempfile.mkdtemp(prefix='ditta_bench_'))
    checkpoint = workdir / 'model.pt'
    state = {f'backbone.{k}': v for k, v in model.backbone.state_dict().items()}
    state.update({f'decode_head.{k}': v for k, v in model.decode_head.state_dict().items()})
    torch.save({'state_dict': state}, checkpoint)
    w, h = frame_size(args.size)
    frames = bench_frames(args, args.warmup + args.frames)
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
                                      wait_for_adaptation=METHODS[method].in_background)
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
