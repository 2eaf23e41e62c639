"""ditta-bench: speed and memory of every method on the same frames (quality: ditta-quality).

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
  --stage-costs           per-frame cost of each DiTTA stage (A, B, C per step, D) at --size
  --addon-cost            stage D (the defaults' temporal hold; the add-on's fusion) against
                          the ISS pass in one process, frames alternating between them
                          (--frames of each), and the multiply-adds of each
  --node-latency          the node over DDS: per-frame latency, throughput, and the share spent
                          outside the model (decode, encode, publish), at --size
"""
import argparse
import json
import os
import sys
from pathlib import Path

import torch

from ditta_ros.model.build import FAMILIES
from ditta_ros.predictor import PRECISIONS
from ditta_ros.runtime import configure_process
from ditta_ros.stream.methods import METHOD_NAMES, parse_methods
from ditta_ros.tools.bench.harness import device_for, in_fresh_process
from ditta_ros.tools.bench.methods import measure_method
from ditta_ros.tools.bench.node import node_latency
from ditta_ros.tools.bench.report import markdown
from ditta_ros.tools.bench.stages import (addon_cost, reference_comparison, stage_b_comparison,
                                          stage_costs)

REPRODUCE = '''The README's tables, each from one command:
  CPU, SegFormer-B0:      ditta-bench --size 1024x512 --stage-costs
  CPU, add-on cost:       ditta-bench --methods none,ditta --size 1024x512 --addon-cost
                          ditta-bench --methods none,ditta --variant b5 --size 864x480
                            --addon-cost
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
    p.add_argument('--methods', default=','.join(METHOD_NAMES),
                   help='comma-separated, from: ' + ', '.join(METHOD_NAMES))
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
    p.add_argument('--stage-costs', action='store_true')
    p.add_argument('--addon-cost', action='store_true')
    p.add_argument('--node-latency', action='store_true')
    p.add_argument('--json', default=None, help='write all figures as JSON')
    p.add_argument('--markdown', default=None, help='write the tables as Markdown')
    return p


def main(argv=None) -> int:
    configure_process()
    args = build_parser().parse_args(argv)
    try:
        methods = parse_methods(args.methods)
    except ValueError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    import platform
    device = device_for(args.device)
    machine = (torch.cuda.get_device_name() if device == 'cuda'
               else f'{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores')
    report = {'machine': machine, 'device': device, 'size': args.size, 'warmup': args.warmup,
              'frames': args.frames,
              'model': f'{args.family}/{args.variant} ({args.checkpoint or "random weights"})',
              'methods': {}}
    for method in methods:
        print(f'[bench] {method} ...', flush=True)
        report['methods'][method] = in_fresh_process(measure_method, args, method)
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
            report['reference'][which] = in_fresh_process(reference_comparison, args, which)
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
            r[which]['peak_in_use_mb'] = in_fresh_process(
                reference_comparison, args, which, env=LIVE_MEMORY_ENV)['peak_rss_mb']
        report['ratios']['ours / reference adaptation peak memory in use'] = \
            r['ours adaptation step']['peak_in_use_mb'] / \
            r['reference adaptation step']['peak_in_use_mb']
    if args.stage_b_comparison:
        print('[bench] stage B ...', flush=True)
        report['stage_b'] = in_fresh_process(stage_b_comparison, args)
    if args.stage_costs:
        print('[bench] stage costs ...', flush=True)
        report['stage_costs'] = in_fresh_process(stage_costs, args)
    if args.addon_cost:
        print('[bench] add-on cost ...', flush=True)
        cost = report['addon_cost'] = in_fresh_process(addon_cost, args)
        report['ratios']['held (the defaults) / ISS frame time, alternating'] = \
            cost['held']['latency_p50_ms'] / cost['ISS']['latency_p50_ms']
        report['ratios']['fused / ISS frame time, alternating'] = \
            cost['fused']['latency_p50_ms'] / cost['ISS']['latency_p50_ms']
        report['ratios']['fused / ISS multiply-adds'] = \
            cost['fused']['gmacs'] / cost['ISS']['gmacs']
    if args.node_latency:
        print('[bench] node over DDS ...', flush=True)
        report['node'] = in_fresh_process(node_latency, args)
    text = markdown(report)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == '__main__':
    sys.exit(main())
