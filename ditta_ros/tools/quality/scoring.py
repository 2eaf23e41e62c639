"""Scores of the quality benchmark: sequences pooled per domain, the mean over domains, and the
difference to the source model with a bootstrap interval over sequences."""
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

METRICS = ('mIoU', 'mIoU_cityscapes', 'wIoU', 'mVC8', 'mVC16', 'TC')


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
    decoder: str = ''


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
    result = {}
    for k in METRICS:   # a metric no domain has (TC with --no-tc) is NaN
        values = [d[k] for d in per_domain.values() if d[k] is not None and not np.isnan(d[k])]
        result[k] = float(np.mean(values)) if values else float('nan')
    names = next(iter(per_domain.values()))['per_class_IoU']
    result['per_class_IoU'] = {}
    for name in names:
        values = [d['per_class_IoU'][name] for d in per_domain.values()
                  if d['per_class_IoU'][name] is not None]
        result['per_class_IoU'][name] = float(np.mean(values)) if values else None
    result['per_domain_mIoU'] = {dom: d['mIoU'] for dom, d in per_domain.items()}
    result['per_domain_mVC8'] = {dom: d['mVC8'] for dom, d in per_domain.items()}
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
