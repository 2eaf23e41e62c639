"""The quality benchmark's report in Markdown: per set of mixes (tuning, test), the main table
(mean over mixes, difference to the source with its interval), per mix and per class."""
from collections import Counter
from typing import Sequence

import numpy as np

THIN_CLASSES = ('pole', 'traffic light', 'traffic sign', 'person')


def pct(value) -> str:
    return '–' if value is None or (isinstance(value, float) and np.isnan(value)) \
        else f'{100 * value:.1f}'


def served(scores: Sequence) -> str:
    """What served after each sequence's adaptation: decoder counts, failures; continuous
    peers say so."""
    counts = Counter()
    for s in scores:
        if s.phase == 'adapted':
            counts[s.decoder or 'adapted'] += 1
        elif s.phase == 'adapting':
            counts['continuous'] += 1
        else:
            counts[s.phase] += 1
    return ', '.join(f'{name} {n}' for name, n in sorted(counts.items(), key=lambda x: -x[1]))


def _delta(d) -> str:
    return '–' if d is None else f'{100 * d[0]:+.1f} [{100 * d[1]:+.1f}, {100 * d[2]:+.1f}]'


def set_markdown(name: str, part: dict) -> str:
    domains = part['domains']
    lines = [f'### {name} mixes: {", ".join(domains)}', '',
             f'{part["sequences"]} sequences x {part["frames"]} frames of {part["size"]} per mix, '
             f'sequence seeds from {part["seed"]} (mix k: + 100 k). Metrics in % on the frames '
             'after each warm-up, mean over mixes; Δ: to the source model at the same warm-up, '
             'mIoU with its 95 % bootstrap interval over sequences.', '',
             '| row | warm-up | mIoU | Δ mIoU [95 % CI] | mIoU (Cityscapes) | wIoU | mVC8 | Δ mVC8 '
             '| mVC16 | TC | ' + ' | '.join(THIN_CLASSES) + ' | what served |',
             '|---|---|---|---|---|---|---|---|---|---|' + '---|' * len(THIN_CLASSES) + '---|']
    source = {r['warmup']: r for r in part['rows'] if r['row'] == part['source_row']}
    for r in part['rows']:
        thin = ' | '.join(pct(r['per_class_IoU'].get(c)) for c in THIN_CLASSES)
        base = source.get(r['warmup'])
        dvc = '–' if r['row'] == part['source_row'] or base is None \
            else f'{100 * (r["mVC8"] - base["mVC8"]):+.1f}'
        lines.append(f'| {r["row"]} | {r["warmup"]:g} % | {pct(r["mIoU"])} | '
                     f'{_delta(r.get("delta_mIoU"))} | {pct(r["mIoU_cityscapes"])} | '
                     f'{pct(r["wIoU"])} | {pct(r["mVC8"])} | {dvc} | {pct(r["mVC16"])} | '
                     f'{pct(r["TC"])} | {thin} | {r["served"]} |')
    lines += ['', f'Per mix ({name.lower()}; mIoU / mVC8):', '',
              '| row | warm-up | ' + ' | '.join(domains) + ' |',
              '|---|---|' + '---|' * len(domains)]
    for r in part['rows']:
        lines.append(f'| {r["row"]} | {r["warmup"]:g} % | ' + ' | '.join(
            f'{pct(r["per_domain_mIoU"][d])} / {pct(r["per_domain_mVC8"][d])}'
            for d in domains) + ' |')
    names = list(part['rows'][0]['per_class_IoU'])
    lines += ['', f'Per class ({name.lower()}; IoU, mean over mixes):', '',
              '| row | warm-up | ' + ' | '.join(names) + ' |',
              '|---|---|' + '---|' * len(names)]
    for r in part['rows']:
        lines.append(f'| {r["row"]} | {r["warmup"]:g} % | ' + ' | '.join(
            pct(r['per_class_IoU'][n]) for n in names) + ' |')
    if part.get('reasons'):
        lines += ['', f'Notes of the adaptations ({name.lower()}; row, warm-up, sequence):', '']
        lines += [f'* {x}' for x in part['reasons']]
    return '\n'.join(lines)


def markdown(report: dict) -> str:
    lines = [f'Quality benchmark: {report["model"]}, network input {report["input"]}, '
             f'{report["teacher"]} teacher. Defaults are chosen on the tuning mixes only; the '
             'test mixes (other effects, other seeds) are for reporting.', '',
             f'Source model on its clear training domain: mIoU {pct(report["clear"]["mIoU"])}, '
             f'wIoU {pct(report["clear"]["wIoU"])}.', '']
    for name, part in report['sets'].items():
        lines += [set_markdown(name.capitalize(), part), '']
    if report.get('trace'):
        lines += ['Where the thin classes go (ditta-quality --trace, tuning mixes; % of the '
                  'pixels the source model gives the class on the warm-up frames, and IoU after '
                  'it):', '', report['trace']]
    return '\n'.join(lines) + '\n'
