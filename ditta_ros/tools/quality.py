"""ditta-quality: does adaptation make the masks better? The quality benchmark, one command.

Generated drives (ditta-synth) of several target domains, several sequences each, are run
offline through the camera streams with the warm-up-to-frozen protocol (the paper's) at several warm-up
shares, for the source model and for each row (a named set of node parameters: the defaults, the
reference preset, ablations). Reported per row and warm-up share, as the mean over domains of the
per-domain scores (each domain's confusion matrix pooled over its sequences):

* mIoU (VSPW convention: classes present in the ground truth) and mIoU as the Cityscapes
  evaluator averages it, wIoU, mVC8, mVC16, TC, per-class IoU, per-domain mIoU;
* the difference to the source model with a 95 % bootstrap interval over sequences (sequences
  resampled within each domain, the same draw for the row and the source model);
* the source model's own accuracy on its clear training domain (what the shift costs).

Everything is seeded: the same command gives the same figures on the same machine.
"""
import argparse
import json
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from ditta_ros.adapt.presets import PRESETS
from ditta_ros.runtime import configure_process

DEFAULT_DOMAINS = 'fog+noise,rain+cast+jpeg,cast+blur+noise'
SOURCE_DOMAIN = 'clear'
CLEAR_KEY = 'clear (training domain)'
SOURCE_ROW = 'source (no adaptation)'
THIN_CLASSES = ('pole', 'traffic light', 'traffic sign', 'person')


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='ditta-quality', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out', default='out/quality', help='folder for data, report.md and JSON')
    p.add_argument('--params', action='append', default=None,
                   help='node parameter file(s) (default: the package\'s config/demo.yaml)')
    p.add_argument('--checkpoint', default=None,
                   help='model checkpoint (default: the demo model in models/)')
    p.add_argument('-p', '--param', action='append', default=[], metavar='NAME:=VALUE',
                   help='override one parameter for every row')
    p.add_argument('--domains', default=DEFAULT_DOMAINS, help='comma-separated target domains')
    p.add_argument('--sequences', type=int, default=3, help='sequences per domain')
    p.add_argument('--frames', type=int, default=60, help='frames per sequence')
    p.add_argument('--size', default='512x256', help='frame WIDTHxHEIGHT')
    p.add_argument('--seed', type=int, default=100,
                   help='first sequence seed; domain k uses seed + 100 k (the demo model was '
                        'trained on seeds from 10000)')
    p.add_argument('--warmups', default='10,25,50', help='warm-up shares in %%')
    p.add_argument('--row', action='append', default=[], metavar='NAME=P:=V[,P:=V...]',
                   help='an extra row: a name and its parameter overrides')
    p.add_argument('--ablation', action='store_true',
                   help='add a row per knob of the robust preset, set back to the reference '
                        'value (at the first warm-up share only)')
    p.add_argument('--no-reference', action='store_true', help='skip the reference-preset row')
    p.add_argument('--bootstrap', type=int, default=2000, help='bootstrap resamples')
    p.add_argument('--jobs', type=int, default=2, help='worker processes (one thread each)')
    p.add_argument('--no-tc', action='store_true', help='skip the optical-flow TC metric')
    p.add_argument('--trace', action='store_true',
                   help='also trace, stage by stage, what happens to the pixels of the thin '
                        'classes (first sequence of each domain, first warm-up share, robust '
                        'and reference presets): trace.md')
    return p


@dataclass(frozen=True)
class Row:
    name: str
    overrides: Tuple[Tuple[str, object], ...]
    warmups: Tuple[float, ...]


@dataclass
class VideoScore:
    """One row's scores on one sequence (fractions)."""
    domain: str
    video: str
    confusion: np.ndarray
    vc: Dict[int, List[float]]
    tc: List[float]
    phase: str
    reason: str = ''


def parse_overrides(text: str) -> Dict[str, object]:
    """NAME:=VALUE[,NAME:=VALUE...]; a comma starts a new item only before the next NAME:= (values
    may hold commas: [512, 256])."""
    from ditta_ros.ros.params import parse_assignment
    return dict(parse_assignment(t.strip()) for t in re.split(r',(?=\s*[\w.]+:=)', text)
                if t.strip())


def _effective(preset: dict, knob: str):
    """A knob's value as it acts and as its parameter takes it (an add-on learning rate of 0
    means the add-on trains at lr; the harm check's parameter says on or off)."""
    if knob == 'addon_lr' and not preset[knob]:
        return preset['lr']
    if knob == 'harm_check':
        return 'on' if preset[knob] else 'off'
    return preset[knob]


def ablation_rows(warmup: float) -> List[Row]:
    """For each knob in which the robust preset acts differently from the reference: the robust
    preset with that knob as the reference has it (what the change is worth)."""
    robust, reference = PRESETS['robust'], PRESETS['reference']
    rows = []
    for knob in robust:
        param = 'fusion.tau' if knob == 'fusion_tau' else f'adapt.{knob}'
        mine, theirs = _effective(robust, knob), _effective(reference, knob)
        if knob == 'addon_lr':   # the reference trains the add-on with the rest of the head
            theirs = robust['lr']
        if mine != theirs:
            rows.append(Row(f'robust, {knob} {theirs} (as reference)', ((param, theirs),),
                            (warmup,)))
    return rows


def build_rows(args) -> List[Row]:
    warmups = tuple(float(w) for w in args.warmups.split(','))
    rows = [Row(SOURCE_ROW, (('method', 'none'),), warmups),
            Row('ditta (defaults)', (), warmups)]
    if not args.no_reference:
        rows.append(Row('ditta, reference preset', (('adapt.preset', 'reference'),), warmups))
    for text in args.row:
        name, _, spec = text.partition('=')
        rows.append(Row(name.strip(), tuple(parse_overrides(spec).items()), warmups))
    if args.ablation:
        rows += ablation_rows(warmups[0])
    return rows


# ---------------------------------------------------------------- data

def ensure_domain(out: Path, domain: str, index: int, args) -> Path:
    """The generated sequences of one domain (made once, then reused)."""
    from ditta_ros.tools import synth
    folder = out / 'data' / (f'{domain}-{args.size}-{args.sequences}x{args.frames}f-'
                             f'seed{args.seed + 100 * index}')
    if not (folder / 'done').is_file():
        synth.main(['--out', str(folder), '--sequences', str(args.sequences), '--frames',
                    str(args.frames), '--size', args.size, '--domain', domain,
                    '--seed', str(args.seed + 100 * index)])
        (folder / 'done').write_text('')
    return folder


# ---------------------------------------------------------------- runs (worker processes)

_WORKER: dict = {}


def _worker_init(params: dict) -> None:
    import torch
    configure_process()
    torch.set_num_threads(1)
    _WORKER.update(params=params, videos={}, models={})


def _video(folder: str, index: int):
    from ditta_ros.io.video import load_videos
    videos = _WORKER['videos']
    if folder not in videos:
        videos.clear()  # one domain's sequences at a time: jobs come domain by domain
        videos[folder] = load_videos(folder)
    return videos[folder][index]


def run_job(job) -> VideoScore:
    """Run one row on one sequence at one warm-up share (in a worker process)."""
    from ditta_ros import settings
    from ditta_ros.evaluation import MethodScores, run_offline, warmup_length
    from ditta_ros.labels import load_label_set
    from ditta_ros.model.build import build_model
    from ditta_ros.ros.params import validate
    from ditta_ros.teacher.factory import make_teacher
    row, warmup, domain, folder, index, with_tc = job
    video = _video(folder, index)
    frames = warmup_length(len(video), warmup)
    params = dict(_WORKER['params'], **dict(row.overrides),
                  **{'warmup.frames': frames, 'warmup.seconds': 0.0, 'warmup.stride': 1,
                     'warmup.max_frames': max(frames, 1), 'start': 'immediate'})
    problems = [r for r in (validate(k, v) for k, v in params.items()) if r]
    if problems:
        raise ValueError(f'row {row.name!r}: ' + '; '.join(problems))
    labels = load_label_set(params['model.label_set'])
    device = settings.resolve_device(params['device'])
    # one model and teacher per process for each model/teacher setting the rows use
    key = tuple(sorted((k, str(v)) for k, v in params.items()
                       if k.startswith(('model.', 'teacher.')) or k == 'device'))
    if key not in _WORKER['models']:
        model = build_model(settings.model_spec(params, labels), device).eval()
        _WORKER['models'][key] = dict(model=model, spec=settings.input_spec(params),
                                      teacher=make_teacher(settings.teacher_spec(params), device))
    m = _WORKER['models'][key]
    run = run_offline(video, m['model'], m['spec'], settings.stream_config(params),
                      m['teacher'], device, class_names=labels.class_names)
    scores = MethodScores(labels)
    scores.add(video, run, with_tc=with_tc)
    return VideoScore(domain, video.name, scores.confusion.matrix,
                      {n: v[0] for n, v in scores.vc.items() if v},
                      scores.tc[0] if scores.tc else [], run.phase, run.reason)


# ---------------------------------------------------------------- scoring

def pooled(scores: Sequence[VideoScore], class_names) -> dict:
    """Metrics of sequences pooled (one confusion matrix, all VC windows, all TC pairs)."""
    from ditta_ros.metrics import ConfusionMatrix, summarize
    confusion = ConfusionMatrix(len(class_names))
    for s in scores:
        confusion.matrix += s.confusion
    vc = {n: [s.vc[n] for s in scores if n in s.vc] for n in (8, 16)}
    return summarize(confusion, vc, [s.tc for s in scores], class_names)


def mean_over_domains(per_domain: Dict[str, dict]) -> dict:
    """Scalar metrics and per-class IoU averaged over domains (NaN/None skipped)."""
    keys = ('mIoU', 'mIoU_cityscapes', 'wIoU', 'mVC8', 'mVC16', 'TC')
    result = {}
    for k in keys:   # a metric no domain has (TC with --no-tc) is NaN
        values = [d[k] for d in per_domain.values() if d[k] is not None and not np.isnan(d[k])]
        result[k] = float(np.mean(values)) if values else float('nan')
    names = next(iter(per_domain.values()))['per_class_IoU']
    result['per_class_IoU'] = {}
    for name in names:
        values = [d['per_class_IoU'][name] for d in per_domain.values()
                  if d['per_class_IoU'][name] is not None]
        result['per_class_IoU'][name] = float(np.mean(values)) if values else None
    result['per_domain_mIoU'] = {dom: d['mIoU'] for dom, d in per_domain.items()}
    return result


def _domain_miou(scores: Sequence[VideoScore], picks: Sequence[int]) -> float:
    from ditta_ros.metrics import ConfusionMatrix
    confusion = ConfusionMatrix(len(scores[0].confusion))
    confusion.matrix = sum(scores[i].confusion for i in picks)
    return confusion.miou()


def bootstrap_difference(row: Dict[str, List[VideoScore]], source: Dict[str, List[VideoScore]],
                         resamples: int, seed: int = 0) -> Tuple[float, float, float]:
    """Mean over domains of (row mIoU - source mIoU), and its 95 % bootstrap interval: the
    sequences of each domain resampled with replacement, the same draw for both."""
    rng = np.random.default_rng(seed)
    domains = sorted(row)

    def difference(draws):
        return float(np.mean([_domain_miou(row[d], draws[d]) - _domain_miou(source[d], draws[d])
                              for d in domains]))
    point = difference({d: range(len(row[d])) for d in domains})
    samples = [difference({d: rng.integers(0, len(row[d]), len(row[d])) for d in domains})
               for _ in range(resamples)]
    low, high = np.percentile(samples, [2.5, 97.5]) if samples else (np.nan, np.nan)
    return point, float(low), float(high)


# ---------------------------------------------------------------- report

def _pct(value) -> str:
    return '–' if value is None or (isinstance(value, float) and np.isnan(value)) \
        else f'{100 * value:.1f}'


def markdown(report: dict) -> str:
    lines = [f'Quality benchmark: {report["model"]}, network input {report["input"]}, '
             f'{report["teacher"]} teacher; domains {", ".join(report["domains"])}; '
             f'{report["sequences"]} sequences x {report["frames"]} frames of {report["size"]} '
             'per domain. Metrics in % on the frames after each warm-up, mean over domains; '
             'Δ mIoU: to the source model, with its 95 % bootstrap interval over sequences.', '',
             f'Source model on its clear training domain: mIoU {_pct(report["clear"]["mIoU"])}, '
             f'wIoU {_pct(report["clear"]["wIoU"])}.', '',
             '| row | warm-up | mIoU | Δ mIoU [95 % CI] | mIoU (Cityscapes) | wIoU | mVC8 '
             '| mVC16 | TC | ' + ' | '.join(THIN_CLASSES) + ' | refused / failed |',
             '|---|---|---|---|---|---|---|---|---|' + '---|' * len(THIN_CLASSES) + '---|']
    for r in report['rows']:
        d = r.get('delta_mIoU')
        delta = '–' if d is None else f'{100 * d[0]:+.1f} [{100 * d[1]:+.1f}, {100 * d[2]:+.1f}]'
        thin = ' | '.join(_pct(r['per_class_IoU'].get(c)) for c in THIN_CLASSES)
        lines.append(f'| {r["row"]} | {r["warmup"]:g} % | {_pct(r["mIoU"])} | {delta} | '
                     f'{_pct(r["mIoU_cityscapes"])} | {_pct(r["wIoU"])} | {_pct(r["mVC8"])} | '
                     f'{_pct(r["mVC16"])} | {_pct(r["TC"])} | {thin} | {r["not_adapted"]} |')
    lines += ['', 'Per domain (mIoU):', '',
              '| row | warm-up | ' + ' | '.join(report['domains']) + ' |',
              '|---|---|' + '---|' * len(report['domains'])]
    for r in report['rows']:
        lines.append(f'| {r["row"]} | {r["warmup"]:g} % | ' + ' | '.join(
            _pct(r['per_domain_mIoU'][d]) for d in report['domains']) + ' |')
    names = list(report['rows'][0]['per_class_IoU'])
    lines += ['', 'Per class (IoU, mean over domains):', '',
              '| row | warm-up | ' + ' | '.join(names) + ' |',
              '|---|---|' + '---|' * len(names)]
    for r in report['rows']:
        lines.append(f'| {r["row"]} | {r["warmup"]:g} % | ' + ' | '.join(
            _pct(r['per_class_IoU'][n]) for n in names) + ' |')
    if report.get('trace'):
        lines += ['', 'Where the thin classes go (ditta-quality --trace; % of the pixels the '
                      'source model gives the class on the warm-up frames, and IoU after it):',
                  '', report['trace']]
    if report.get('reasons'):
        lines += ['', 'Adaptations not served (row, warm-up, sequence: reason):', '']
        lines += [f'* {x}' for x in report['reasons']]
    return '\n'.join(lines) + '\n'


# ---------------------------------------------------------------- main

def benchmark(args) -> dict:
    from ditta_ros.labels import config_dir, load_label_set
    from ditta_ros.ros.params import load_parameters
    from ditta_ros.tools.demo import find_checkpoint
    out = Path(args.out)
    files = args.params or [str(Path(config_dir()) / 'demo.yaml')]
    overrides = parse_overrides(','.join(args.param))
    overrides.setdefault('model.checkpoint', args.checkpoint or str(find_checkpoint()))
    params = load_parameters(files, overrides)
    labels = load_label_set(params['model.label_set'])
    rows = build_rows(args)
    for row in rows:  # a bad row is reported now, not by a worker an hour in
        try:
            load_parameters(files, dict(overrides, **dict(row.overrides)))
        except ValueError as exc:
            raise ValueError(f'row {row.name!r}: {exc}') from None
    domains = [d.strip() for d in args.domains.split(',') if d.strip()]
    folders = {d: ensure_domain(out, d, k, args) for k, d in enumerate(domains)}
    clear = ensure_domain(out, SOURCE_DOMAIN, len(domains), args)
    from ditta_ros.io.cityscapes import find_sequences
    counts = {d: len(find_sequences(f)) for d, f in folders.items()}
    jobs = [(row, w, d, str(folders[d]), i, not args.no_tc)
            for d in domains for row in rows for w in row.warmups for i in range(counts[d])]
    source_row = rows[0]
    jobs += [(source_row, source_row.warmups[0], CLEAR_KEY, str(clear), i, False)
             for i in range(len(find_sequences(clear)))]
    started = time.monotonic()
    with ProcessPoolExecutor(args.jobs, initializer=_worker_init, initargs=(params,)) as pool:
        results = list(_progress(pool.map(run_job, jobs), len(jobs)))
    by_key: Dict[tuple, Dict[str, List[VideoScore]]] = {}
    for job, score in zip(jobs, results):
        by_key.setdefault((job[0].name, job[1]), {}).setdefault(job[2], []).append(score)
    names = labels.class_names
    clear_scores = by_key[(source_row.name, source_row.warmups[0])].pop(CLEAR_KEY)
    report_rows, reasons = [], []
    for row in rows:
        for w in row.warmups:
            per_domain = by_key[(row.name, w)]
            summary = mean_over_domains({d: pooled(per_domain[d], names) for d in domains})
            not_adapted = [s for d in domains for s in per_domain[d]
                           if row is not source_row and s.phase != 'adapted']
            reasons += [f'{row.name}, {w:g} %, {s.video}: {s.phase} ({s.reason})'
                        for s in not_adapted]
            summary.update(row=row.name, warmup=w, overrides=dict(row.overrides),
                           not_adapted=f'{len(not_adapted)} / {sum(counts.values())}'
                           if row is not source_row else '–')
            if row is not source_row:
                summary['delta_mIoU'] = bootstrap_difference(
                    per_domain, by_key[(source_row.name, w)], args.bootstrap)
            report_rows.append(summary)
    return {
        'model': f'{params["model.family"]}/{params["model.variant"]} '
                 f'({Path(params["model.checkpoint"]).name})',
        'input': 'x'.join(str(v) for v in params['model.input_scale']),
        'teacher': params['teacher.name'], 'domains': domains, 'sequences': args.sequences,
        'frames': args.frames, 'size': args.size, 'seed': args.seed,
        'clear': pooled(clear_scores, names), 'rows': report_rows, 'reasons': reasons,
        'seconds': round(time.monotonic() - started, 1),
        'params': params, 'folders': folders,
    }


def trace(args, params, folders: Dict[str, Path]) -> str:
    """ditta_ros.tools.stage_trace on the first sequence of each domain, for both presets."""
    from ditta_ros import settings
    from ditta_ros.evaluation import warmup_length
    from ditta_ros.io.video import load_videos
    from ditta_ros.labels import load_label_set
    from ditta_ros.model.build import build_model
    from ditta_ros.teacher.factory import make_teacher
    from ditta_ros.tools import stage_trace
    labels = load_label_set(params['model.label_set'])
    device = settings.resolve_device(params['device'])
    model = build_model(settings.model_spec(params, labels), device).eval()
    teacher = make_teacher(settings.teacher_spec(params), device)
    classes = {n: labels.class_names.index(n) for n in THIN_CLASSES + ('sky', 'car')}
    share = float(args.warmups.split(',')[0])
    rows = {}
    for domain, folder in folders.items():
        video = load_videos(folder)[0]
        warmup = warmup_length(len(video), share)
        for preset in PRESETS:
            p = dict(params, **{'adapt.preset': preset})
            rows[f'{preset}, {domain}/{video.name}'] = stage_trace.trace_video(
                video, warmup, model, settings.input_spec(p), settings.stream_config(p),
                teacher, classes, labels.id_to_train_id(), device)
    return stage_trace.markdown(rows)


def _progress(results, total):
    from tqdm import tqdm
    yield from tqdm(results, total=total, desc='ditta-quality', unit='run')


def main(argv=None) -> int:
    configure_process()
    args = build_parser().parse_args(argv)
    try:
        report = benchmark(args)
    except (FileNotFoundError, ValueError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.trace:
        report['trace'] = trace(args, report.pop('params'), report.pop('folders'))
        (out / 'trace.md').write_text(report['trace'])
    else:
        report.pop('params'), report.pop('folders')
    text = markdown(report)
    (out / 'report.md').write_text(text)
    (out / 'report.json').write_text(json.dumps(report, indent=1, default=float))
    print(text)
    print(f'report: {out / "report.md"} ({report["seconds"]:.0f} s)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
