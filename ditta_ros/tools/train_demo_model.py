"""ditta-train-demo-model: train the small ISS model the demo adapts.

A SegFormer MiT-B0 (Cityscapes' 19 classes) trained from scratch, frame by frame, on
ditta-synth sequences of the *source* domain (clear weather); the demo then meets it with a
target domain (e.g. fog and sensor noise), which is where test-time adaptation has work to do.
Everything is seeded: the same arguments give the same checkpoint on the same machine. The
checkpoint is written in the mmseg/DiTTA layout, in float16 to stay small.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ditta_ros.labels import load_label_set
from ditta_ros.model.build import ModelSpec, build_model
from ditta_ros.preprocess import InputSpec, prepare_frame
from ditta_ros.runtime import configure_process
from ditta_ros.synth.sequence import SequenceSpec, generate
from ditta_ros.tools.synth import parse_size


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='ditta-train-demo-model', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out', required=True, help='checkpoint file to write')
    p.add_argument('--sequences', type=int, default=40)
    p.add_argument('--frames', type=int, default=24, help='frames per sequence (every 3rd used)')
    p.add_argument('--size', type=parse_size, default=(512, 256), help='WIDTHxHEIGHT')
    p.add_argument('--domain', default='clear', help='training (source) domain')
    p.add_argument('--steps', type=int, default=1200)
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--lr', type=float, default=1e-3)
    p.add_argument('--embed-dim', type=int, default=128)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--data-seed', type=int, default=10_000,
                   help='first sequence seed (keep it apart from evaluation seeds)')
    return p


def make_dataset(args, spec: InputSpec, lut: np.ndarray):
    images, labels = [], []
    width, height = args.size
    for k in tqdm(range(args.sequences), desc='generating source data', unit='sequence'):
        seq = SequenceSpec(width=width, height=height, frames=args.frames,
                           seed=args.data_seed + k, domain=args.domain)
        for index, frame in enumerate(generate(seq)):
            if index % 3 == 0:
                images.append(prepare_frame(frame.image, spec))
                labels.append(torch.from_numpy(lut[frame.label_ids].astype(np.int64)))
    return torch.stack(images), torch.stack(labels)


def main(argv=None) -> int:
    configure_process()
    args = build_parser().parse_args(argv)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    labels_set = load_label_set('cityscapes')
    spec = InputSpec(img_scale=args.size)
    images, labels = make_dataset(args, spec, labels_set.id_to_train_id())
    model = build_model(ModelSpec(variant='b0', num_classes=labels_set.num_classes,
                                  embed_dim=args.embed_dim, init_seed=args.seed))
    backbone, head = model.backbone, model.decode_head
    for param in backbone.parameters():
        param.requires_grad_(True)
    params = list(backbone.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: (1 - step / args.steps) ** 0.9)
    backbone.train()
    head.train()
    started = time.monotonic()
    bar = tqdm(range(args.steps), desc='training', unit='step')
    running = None
    for step in bar:
        pick = rng.choice(len(images), size=args.batch, replace=False)
        x, y = images[pick].clone(), labels[pick].clone()
        flip = torch.from_numpy(rng.random(args.batch) < 0.5)
        x[flip], y[flip] = x[flip].flip(-1), y[flip].flip(-1)
        x = x * torch.empty(args.batch, 1, 1, 1).uniform_(0.8, 1.2) + \
            torch.empty(args.batch, 3, 1, 1).uniform_(-0.2, 0.2)
        _, logits = head(backbone(x, stochastic=True))
        logits = F.interpolate(logits, size=y.shape[-2:], mode='bilinear', align_corners=False)
        loss = F.cross_entropy(logits, y, ignore_index=labels_set.ignore_value)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        bar.set_postfix(loss=f'{running:.3f}')
    state = {f'backbone.{k}': v.half() for k, v in backbone.state_dict().items()}
    state.update({f'decode_head.{k}': (v.half() if v.is_floating_point() else v)
                  for k, v in head.state_dict().items()})
    meta = {'arch': 'segformer/b0', 'embed_dim': args.embed_dim, 'label_set': 'cityscapes',
            'input_size': list(args.size), 'train_domain': args.domain,
            'final_loss': running, 'train_seconds': time.monotonic() - started,
            'args': {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({'state_dict': state, 'meta': meta}, out)
    print(f'wrote {out} ({out.stat().st_size / 1e6:.1f} MB), final training loss {running:.3f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
