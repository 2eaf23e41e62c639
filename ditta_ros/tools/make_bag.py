"""ditta-make-bag: videos of a dataset folder to rosbag2: Cityscapes-style sequences (the real
layout, one bag per snippet, or ditta-synth's) or VSPW videos.

One bag per video (MCAP by default, sqlite3 on request): frames as sensor_msgs/Image rgb8 on
/camera/image_raw (or CompressedImage on /camera/image_raw/compressed) at the data set's rate
(Cityscapes 17 Hz, VSPW 15 Hz, or --fps), header stamps start + frame number / fps and frame_id
as given; ground truth, where present, on
/ground_truth/label_ids (mono8 label ids) and /ground_truth/instance_ids (mono16), stamped like
the frame it belongs to.
"""
import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from ditta_ros.io import cityscapes
from ditta_ros.io.bag import STORAGES, write_sequence_bag
from ditta_ros.io.video import find_video_files


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='ditta-make-bag', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('source', help='dataset root: Cityscapes-style (leftImg8bit_sequence/...) or '
                                  'VSPW (data/<video>/origin, mask; split lists)')
    p.add_argument('--out', required=True, help='output folder (one bag per sequence inside)')
    p.add_argument('--split', default=None, help='only this split (default: all)')
    p.add_argument('--storage', choices=sorted(STORAGES), default='mcap')
    p.add_argument('--compressed', choices=['jpeg', 'png'], default=None,
                   help='write CompressedImage instead of raw rgb8')
    p.add_argument('--fps', type=float, default=None,
                   help='frame rate (default: the data set\'s, Cityscapes 17, VSPW 15)')
    p.add_argument('--start', type=float, default=1_700_000_000.0,
                   help='stamp of the first frame (seconds)')
    p.add_argument('--frame-id', default='camera')
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    sequences, fps = find_video_files(args.source, args.split)
    fps = args.fps or fps
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for seq in tqdm(sequences, desc='ditta-make-bag', unit='sequence'):
        target = out / seq.name
        if target.exists():
            print(f'error: {target} exists; remove it or choose another --out', file=sys.stderr)
            return 1

        def frames(seq=seq):
            for index, (frame, path) in enumerate(zip(seq.frames, seq.images)):
                stamp_ns = int(round((args.start + (frame - seq.frames[0]) / fps) * 1e9))
                labels = seq.read_labels(index) if index in seq.label_ids else None
                instances = seq.read_instances(index) if index in seq.instance_ids else None
                yield stamp_ns, cityscapes.read_rgb(path), labels, instances

        count = write_sequence_bag(target, frames(), args.storage, args.compressed, args.frame_id)
        tqdm.write(f'{target}: {count} frames, {len(seq.label_ids)} labelled ({args.storage})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
