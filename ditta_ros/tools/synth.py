"""ditta-synth: procedurally generated driving sequences in the Cityscapes folder layout.

Every frame is labelled (labelIds, instanceIds, color), and an object keeps its instance id for
as long as it is in view. `--domain` sets the appearance: `clear` (the source domain) or any
'+'-joined mix of night, fog, rain, cast, blur, noise, jpeg.
"""
import argparse
import sys

import numpy as np
from tqdm import tqdm

from ditta_ros.io import cityscapes
from ditta_ros.labels import load_label_set
from ditta_ros.synth.domains import EFFECTS, parse_domain
from ditta_ros.synth.sequence import SequenceSpec, generate


def parse_size(text: str):
    try:
        width, height = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(f'size must be WIDTHxHEIGHT, got {text!r}')
    if width < 32 or height < 32:
        raise argparse.ArgumentTypeError('size must be at least 32x32')
    return width, height


def domain_arg(text: str) -> str:
    try:
        parse_domain(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc))
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='ditta-synth', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out', required=True, help='output root (Cityscapes layout is created)')
    p.add_argument('--split', default='val')
    p.add_argument('--city', default='synth')
    p.add_argument('--sequences', type=int, default=2, help='number of sequences')
    p.add_argument('--frames', type=int, default=30, help='frames per sequence')
    p.add_argument('--size', type=parse_size, default=(512, 256), help='WIDTHxHEIGHT')
    p.add_argument('--seed', type=int, default=0, help='sequence k uses seed + k')
    p.add_argument('--domain', type=domain_arg, default='clear',
                   help=f'appearance: {", ".join(EFFECTS)}, joined by +')
    p.add_argument('--fps', type=float, default=cityscapes.CITYSCAPES_FPS)
    p.add_argument('--speed', type=float, default=9.0, help='camera speed in m/s')
    return p


def palette_by_label_id(label_set) -> np.ndarray:
    lut = np.zeros((256, 3), np.uint8)
    for lab in label_set.dataset_labels:
        if 0 <= lab.id < 256:
            lut[lab.id] = lab.color
    return lut


def write_sequences(args) -> int:
    palette = palette_by_label_id(load_label_set('cityscapes'))
    width, height = args.size
    total = args.sequences * args.frames
    with tqdm(total=total, desc='ditta-synth', unit='frame') as bar:
        for k in range(args.sequences):
            spec = SequenceSpec(width=width, height=height, frames=args.frames, fps=args.fps,
                                seed=args.seed + k, domain=args.domain, speed=args.speed)
            for index, frame in enumerate(generate(spec)):
                cityscapes.write_frame(args.out, args.split, args.city, k, index, frame.image,
                                       frame.label_ids, frame.instance_ids, palette)
                bar.update(1)
    return total


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    count = write_sequences(args)
    print(f'wrote {count} frames in {args.sequences} sequence(s) to {args.out} '
          f'({args.domain}, {args.size[0]}x{args.size[1]})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
