"""ditta-demo: the whole loop on generated data, over real DDS, in a few minutes on a CPU.

1. generate short target-domain drives (fog and sensor noise) in the Cityscapes layout;
2. write them to rosbag2 (MCAP);
3. start the node (demo checkpoint; flow teacher, or SAM2 with --sam2-checkpoint) and replay the
   bags to it over DDS, for the source model, DiTTA and TENT (the standard peer);
4. print the report and save it (Markdown, JSON, plots) with an overlay video.
"""
import argparse
import sys
import time
from pathlib import Path

from ditta_ros.labels import config_dir
from ditta_ros.runtime import configure_process
from ditta_ros.tools import evaluate, make_bag, synth

DEMO_CHECKPOINT = 'models/demo_segformer_b0_synth.pt'


def find_checkpoint() -> Path:
    """The demo checkpoint beside config/ (source checkout or installed share folder)."""
    path = Path(config_dir()).parent / DEMO_CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f'demo checkpoint not found at {path}; make it with '
                                f'ditta-train-demo-model --out {DEMO_CHECKPOINT}')
    return path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='ditta-demo', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out', default='out/demo', help='folder for data, bags and the report')
    p.add_argument('--sequences', type=int, default=2)
    p.add_argument('--frames', type=int, default=50)
    p.add_argument('--size', default='512x256')
    p.add_argument('--domain', default='fog+noise', help='target domain of the drives')
    p.add_argument('--seed', type=int, default=100)
    p.add_argument('--warmup-ratio', type=float, default=10)
    p.add_argument('--sam2-checkpoint', default=None,
                   help='use SAM2 as the teacher (with --sam2-config)')
    p.add_argument('--sam2-config', default='configs/sam2.1/sam2.1_hiera_t.yaml')
    p.add_argument('--methods', default='none,ditta,tent',
                   help='methods to compare (ditta-eval --methods)')
    p.add_argument('--offline', action='store_true', help='run the camera streams here, without DDS')
    return p


def main(argv=None) -> int:
    configure_process()
    args = build_parser().parse_args(argv)
    started = time.monotonic()
    out = Path(args.out)
    data, bags = out / 'data', out / 'bags'
    checkpoint = find_checkpoint()
    if not data.exists():
        synth.main(['--out', str(data), '--sequences', str(args.sequences), '--frames',
                    str(args.frames), '--size', args.size, '--domain', args.domain,
                    '--seed', str(args.seed)])
    if not bags.exists():
        make_bag.main([str(data), '--out', str(bags)])
    eval_args = [str(bags), '--params', str(Path(config_dir()) / 'demo.yaml'),
                 '-p', f'model.checkpoint:={checkpoint}', '--warmup-ratio',
                 str(args.warmup_ratio), '--methods', args.methods, '--out',
                 str(out / 'report'), '--video',
                 '--json', str(out / 'report' / 'metrics.json')]
    if args.sam2_checkpoint:
        eval_args += ['-p', 'teacher.name:=sam2', '-p',
                      f'teacher.sam2_checkpoint:={args.sam2_checkpoint}',
                      '-p', f'teacher.sam2_config:={args.sam2_config}']
    if args.offline:
        eval_args.append('--offline')
    code = evaluate.main(eval_args)
    print(f'demo finished in {time.monotonic() - started:.0f} s; overlay video: '
          f'{out / "report" / "overlays.mp4"}')
    return code


if __name__ == '__main__':
    sys.exit(main())
