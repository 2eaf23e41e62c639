"""Evaluation reports: JSON, Markdown, PNG plots and an overlay video."""
import json
import math
from pathlib import Path
from typing import Dict, List

import cv2
import numpy as np

from ditta_ros.io.video import Video
from ditta_ros.labels import LabelSet

HEADLINE = ('mIoU', 'mIoU_cityscapes', 'wIoU', 'mVC8', 'mVC16', 'TC')


def _pct(value) -> str:
    return '–' if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f'{100 * value:.1f}'


def write_json(path: Path, report: dict) -> None:
    def clean(value):
        if isinstance(value, float) and math.isnan(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clean(report), indent=2))


def markdown(report: dict) -> str:
    methods = report['methods']
    lines = ['# ditta-eval report', '',
             f'Data: `{report["data"]}` ({report["videos"]} video(s)); mode: {report["mode"]}; '
             f'warm-up: {report["warmup"]}; teacher: {report.get("teacher", "-")}; '
             f'model: {report["model"]}; device: {report["device"]}.', '',
             '| method | ' + ' | '.join(HEADLINE) + ' | frames sent / received / evaluated | '
             'dropped | FPS |',
             '|---|' + '---|' * (len(HEADLINE) + 3)]
    for name, m in methods.items():
        lines.append(f'| {name} | ' + ' | '.join(_pct(m.get(k)) for k in HEADLINE) +
                     f' | {m["frames_sent"]} / {m["frames_received"]} / {m["frames_evaluated"]} '
                     f'| {m["frames_dropped"]} | {m["fps"]:.2f} |')
    lines += ['', 'Metrics in %, on the frames after the warm-up. mIoU averages the classes '
              'present in the ground truth (reference/VSPW convention); mIoU_cityscapes as the '
              'official Cityscapes evaluator (classes with any GT or predicted pixel).', '',
              '## Per-class IoU (%)', '',
              '| class | ' + ' | '.join(methods) + ' |', '|---|' + '---|' * len(methods)]
    classes = next(iter(methods.values()))['per_class_IoU']
    for cls in classes:
        lines.append(f'| {cls} | ' + ' | '.join(_pct(m['per_class_IoU'][cls])
                                              for m in methods.values()) + ' |')
    for name, m in methods.items():
        if m.get('failures'):
            lines += ['', f'**{name}**: adaptation failures: ' + '; '.join(m['failures'])]
    if report.get('plots'):
        lines += ['', '## Plots', ''] + [f'![{p}]({p})' for p in report['plots']]
    return '\n'.join(lines) + '\n'


def plot_per_class(path: Path, methods: Dict[str, dict]) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    classes = list(next(iter(methods.values()))['per_class_IoU'])
    x = np.arange(len(classes))
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(max(8, len(classes) * 0.5), 4))
    for k, (name, m) in enumerate(methods.items()):
        values = [100 * (m['per_class_IoU'][c] or 0) for c in classes]
        ax.bar(x + k * width, values, width, label=name)
    ax.set_xticks(x + width * (len(methods) - 1) / 2, classes, rotation=60, ha='right')
    ax.set_ylabel('IoU (%)')
    ax.set_title('Per-class IoU on evaluated frames')
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_over_time(path: Path, per_frame: Dict[str, List[dict]]) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(9, 3.5))
    for name, rows in per_frame.items():
        ax.plot(range(len(rows)), [100 * r['mIoU'] for r in rows], label=name, lw=1.2)
    first = next(iter(per_frame.values()))
    warm = [i for i, r in enumerate(first) if r['warmup']]
    starts = [i for i, r in enumerate(first) if r['frame'] == 0]
    for i in warm:
        ax.axvspan(i - 0.5, i + 0.5, color='orange', alpha=0.15, lw=0)
    for i in starts[1:]:
        ax.axvline(i - 0.5, color='grey', lw=0.8)
    ax.set_xlabel('frame (videos concatenated; warm-up shaded)')
    ax.set_ylabel('frame mIoU (%)')
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def overlay(frame: np.ndarray, label: np.ndarray, labels: LabelSet, alpha=0.5) -> np.ndarray:
    return (frame * (1 - alpha) + labels.colorize(label) * alpha).astype(np.uint8)


def strip(path: Path, video: Video, preds: Dict[str, List[np.ndarray]], labels: LabelSet,
          frames: List[int]) -> None:
    """Rows of frame / GT / one overlay per method, for a few evaluated frames."""
    lut = labels.id_to_train_id()
    rows = []
    for i in frames:
        tiles = [video.frames[i]]
        gt = lut[video.label_ids[i]] if i in video.label_ids else None
        tiles.append(overlay(video.frames[i], gt, labels) if gt is not None
                     else np.zeros_like(video.frames[i]))
        tiles += [overlay(video.frames[i], p[i], labels) if p[i] is not None
                  else np.zeros_like(video.frames[i]) for p in preds.values()]
        rows.append(np.hstack(tiles))
    image = np.vstack(rows)
    header = np.full((24, image.shape[1], 3), 255, np.uint8)
    titles = ['frame', 'ground truth'] + list(preds)
    tile_w = video.frames[0].shape[1]
    for k, title in enumerate(titles):
        cv2.putText(header, title, (k * tile_w + 6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, 0, 1)
    cv2.imwrite(str(path), cv2.cvtColor(np.vstack([header, image]), cv2.COLOR_RGB2BGR))


def overlay_video(path: Path, videos: List[Video], preds: Dict[str, Dict[str, list]],
                  labels: LabelSet, fps: float = 17.0) -> None:
    """Side-by-side overlays (one panel per method) of every frame, as an MP4."""
    writer = None
    try:
        for video in videos:
            for i, frame in enumerate(video.frames):
                panels = [overlay(frame, p[video.name][i], labels) if p[video.name][i] is not None
                          else frame for p in preds.values()]
                image = cv2.cvtColor(np.hstack(panels), cv2.COLOR_RGB2BGR)
                if writer is None:
                    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), fps,
                                             (image.shape[1], image.shape[0]))
                writer.write(image)
    finally:
        if writer is not None:
            writer.release()
