"""ditta-quality: does adaptation make the masks better? The quality benchmark, one command.

Generated drives (ditta-synth) are run offline through the camera streams with the paper's
warm-up-to-frozen protocol: the source model and the defaults at several warm-up shares; the
reference preset, the peers (statistics only, TENT, CoTTA, AuxAdapt) and any extra row (a named
set of node parameters) at the first share (--all-warmups: at every share).
Two sets of target-domain mixes:

* tuning mixes (--domains, --seed): where defaults are chosen and ablations are run;
* test mixes (--test-domains, --test-seed): other effects, night among them, from other seeds,
  that no choice of defaults may look at; reported beside the tuning mixes.

Reported per set, row and warm-up share, as the mean over mixes of the per-mix scores (each mix's
confusion matrix pooled over its sequences): mIoU (VSPW convention) and as the Cityscapes
evaluator averages it, wIoU, mVC8, mVC16, TC, per-class IoU, per-mix mIoU and mVC8; the
difference to the source model with a 95 % bootstrap interval over sequences (resampled within
each mix, the same draw for the row and the source); what served after each adaptation; and the
source model's accuracy on its clear training domain. Everything is seeded: the same command
gives the same figures on the same machine.
"""
import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List

from ditta_ros.executors import run_jobs
from ditta_ros.runtime import configure_process
from ditta_ros.tools.quality.report import THIN_CLASSES, markdown, served
from ditta_ros.tools.quality.rows import (PEERS, SOURCE_ROW, Row, ablation_rows, build_rows,
                                          parse_overrides)
from ditta_ros.tools.quality.runs import ensure_domain, run_job, worker_init
from ditta_ros.tools.quality.scoring import (VideoScore, bootstrap_difference,
                                             mean_over_domains, pooled)

__all__ = ['ablation_rows', 'bootstrap_difference', 'build_parser', 'benchmark', 'main',
           'markdown', 'parse_overrides', 'Row', 'SOURCE_ROW', 'THIN_CLASSES', 'VideoScore']

TUNING_DOMAINS = 'fog+noise,rain+cast+jpeg,cast+blur+noise'
TEST_DOMAINS = 'night+noise,fog+jpeg,rain+blur+noise,cast+fog'
SOURCE_DOMAIN = 'clear'
SETS = ('tuning', 'test')


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
    p.add_argument('--sets', default=','.join(SETS),
                   help='which sets of mixes to run: tuning, test or both')
    p.add_argument('--domains', default=TUNING_DOMAINS, help='tuning mixes, comma-separated')
    p.add_argument('--sequences', type=int, default=3, help='sequences per tuning mix')
    p.add_argument('--seed', type=int, default=100,
                   help='first sequence seed of the tuning mixes; mix k uses seed + 100 k (the '
                        'demo model was trained on seeds from 10000)')
    p.add_argument('--test-domains', default=TEST_DOMAINS, help='test mixes, comma-separated')
    p.add_argument('--test-sequences', type=int, default=2, help='sequences per test mix')
    p.add_argument('--test-seed', type=int, default=7000,
                   help='first sequence seed of the test mixes (mix k: + 100 k)')
    p.add_argument('--frames', type=int, default=60, help='frames per sequence')
    p.add_argument('--size', default='512x256', help='frame WIDTHxHEIGHT')
    p.add_argument('--warmups', default='10,25,50', help='warm-up shares in %%')
    p.add_argument('--all-warmups', action='store_true',
                   help='run the reference preset, the peers and the --row rows at every warm-up '
                        'share, not only the first (the source and the defaults always are)')
    p.add_argument('--peers', default=','.join(PEERS),
                   help=f'peer rows, comma-separated, of {", ".join(PEERS)} (empty: none)')
    p.add_argument('--row', action='append', default=[], metavar='NAME=P:=V[,P:=V...]',
                   help='an extra row: a name and its parameter overrides')
    p.add_argument('--ablation', action='store_true',
                   help='add a row per knob of the robust preset, set back to the reference '
                        'value (tuning mixes, first warm-up share only)')
    p.add_argument('--no-reference', action='store_true', help='skip the reference-preset row')
    p.add_argument('--bootstrap', type=int, default=2000, help='bootstrap resamples')
    p.add_argument('--jobs', type=int, default=2, help='worker processes (one thread each)')
    p.add_argument('--ray', default=None, metavar='ADDRESS',
                   help='run the jobs as Ray tasks instead: a cluster address, auto, or local '
                        '(see ditta-eval --ray); the figures are the same')
    p.add_argument('--no-tc', action='store_true', help='skip the optical-flow TC metric')
    p.add_argument('--trace', action='store_true',
                   help='also trace, stage by stage, what happens to the pixels of the thin '
                        'classes (first sequence of each tuning mix, first warm-up share, robust '
                        'and reference presets): trace.md')
    return p


def _mixes(args) -> Dict[str, dict]:
    """The sets to run: their mixes, first seed and sequence count."""
    wanted = [s.strip() for s in args.sets.split(',') if s.strip()]
    unknown = [s for s in wanted if s not in SETS]
    if unknown or not wanted:
        raise ValueError(f'unknown set(s) {unknown or args.sets!r}; choose from '
                         f'{", ".join(SETS)}')
    sets = {'tuning': dict(domains=args.domains, seed=args.seed, sequences=args.sequences),
            'test': dict(domains=args.test_domains, seed=args.test_seed,
                         sequences=args.test_sequences)}
    out = {}
    for name in wanted:
        part = dict(sets[name])
        part['domains'] = [d.strip() for d in part['domains'].split(',') if d.strip()]
        out[name] = part
    return out


def _summaries(rows: List[Row], by_key, domains, names, resamples) -> tuple:
    """Report rows (one per row and warm-up share) of one set, and its notes."""
    source_row = rows[0]
    report_rows, notes = [], []
    for row in rows:
        for w in row.warmups:
            per_domain = by_key[(row.name, w)]
            summary = mean_over_domains({d: pooled(per_domain[d], names) for d in domains})
            scores = [s for d in domains for s in per_domain[d]]
            notes += [f'{row.name}, {w:g} %, {s.domain}/{s.video}: {s.decoder or s.phase}: '
                      f'{s.reason}' for s in scores
                      if s.reason and (s.phase == 'failed' or s.decoder != 'adapted')]
            summary.update(row=row.name, warmup=w, overrides=dict(row.overrides),
                           served='–' if row is source_row else served(scores))
            if row is not source_row:
                summary['delta_mIoU'] = bootstrap_difference(
                    per_domain, by_key[(source_row.name, w)], resamples)
            report_rows.append(summary)
    return report_rows, notes


def benchmark(args) -> dict:
    from ditta_ros.io.cityscapes import find_sequences
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
    sets = _mixes(args)
    jobs = []
    for name, part in sets.items():
        part['folders'] = {d: ensure_domain(out, d, part['seed'] + 100 * k, part['sequences'],
                                            args.frames, args.size)
                           for k, d in enumerate(part['domains'])}
        part['counts'] = {d: len(find_sequences(f)) for d, f in part['folders'].items()}
        part['rows'] = [r for r in rows if name == 'tuning' or not r.tuning_only]
        jobs += [(name, (row, w, d, str(part['folders'][d]), i, not args.no_tc))
                 for d in part['domains'] for row in part['rows'] for w in row.warmups
                 for i in range(part['counts'][d])]
    clear = ensure_domain(out, SOURCE_DOMAIN, args.seed + 100 * len(args.domains.split(',')),
                          args.sequences, args.frames, args.size)
    source_row = rows[0]
    jobs += [('clear', (source_row, source_row.warmups[0], 'clear', str(clear), i, False))
             for i in range(len(find_sequences(clear)))]
    started = time.monotonic()
    results = run_jobs(run_job, [j for _, j in jobs], args.jobs, args.ray, worker_init,
                       (params,), progress=lambda results: _progress(results, len(jobs)))
    by_set: Dict[str, dict] = {}
    for (name, job), score in zip(jobs, results):
        by_set.setdefault(name, {}).setdefault((job[0].name, job[1]), {}) \
            .setdefault(job[2], []).append(score)
    names = labels.class_names
    report_sets = {}
    for name, part in sets.items():
        report_rows, notes = _summaries(part['rows'], by_set[name], part['domains'], names,
                                        args.bootstrap)
        report_sets[name] = dict(domains=part['domains'], seed=part['seed'],
                                 sequences=part['sequences'], frames=args.frames,
                                 size=args.size, source_row=SOURCE_ROW, rows=report_rows,
                                 reasons=notes)
    clear_scores = by_set['clear'][(source_row.name, source_row.warmups[0])]['clear']
    return {
        'model': f'{params["model.family"]}/{params["model.variant"]} '
                 f'({Path(params["model.checkpoint"]).name})',
        'input': 'x'.join(str(v) for v in params['model.input_scale']),
        'teacher': params['teacher.name'], 'sets': report_sets,
        'clear': pooled(clear_scores, names),
        'seconds': round(time.monotonic() - started, 1),
        'params': params, 'folders': sets.get('tuning', {}).get('folders', {}),
    }


def trace(args, params, folders: Dict[str, Path]) -> str:
    """ditta_ros.tools.stage_trace on the first sequence of each tuning mix, both presets."""
    from ditta_ros import settings
    from ditta_ros.adapt.presets import PRESETS
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
    params, folders = report.pop('params'), report.pop('folders')
    if args.trace and folders:
        report['trace'] = trace(args, params, folders)
        (out / 'trace.md').write_text(report['trace'])
    text = markdown(report)
    (out / 'report.md').write_text(text)
    (out / 'report.json').write_text(json.dumps(report, indent=1, default=float))
    print(text)
    print(f'report: {out / "report.md"} ({report["seconds"]:.0f} s)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
