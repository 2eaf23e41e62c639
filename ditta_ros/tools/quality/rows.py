"""The rows of the quality benchmark: named sets of node parameters, each run at some warm-up
shares. The source model, the defaults, the reference preset, the peers (TENT, CoTTA, AuxAdapt
and the statistics-only baseline, each with its own paper's settings) and the ablation rows."""
import re
from dataclasses import dataclass
from typing import Dict, List, Tuple

from ditta_ros.adapt.presets import PRESETS

SOURCE_ROW = 'source (no adaptation)'
DEFAULTS_ROW = 'ditta (defaults)'
REFERENCE_ROW = 'ditta, reference preset'
PEERS = ('stats', 'tent', 'cotta', 'auxadapt')
PEER_ROWS = {'stats': 'statistics only (no training)', 'tent': 'tent', 'cotta': 'cotta',
             'auxadapt': 'auxadapt'}


@dataclass(frozen=True)
class Row:
    name: str
    overrides: Tuple[Tuple[str, object], ...]
    warmups: Tuple[float, ...]
    tuning_only: bool = False   # ablation rows: defaults are chosen on the tuning mixes only


def parse_overrides(text: str) -> Dict[str, object]:
    """NAME:=VALUE[,NAME:=VALUE...]; a comma starts a new item only before the next NAME:= (values
    may hold commas: [512, 256])."""
    from ditta_ros.ros.params import parse_assignment
    return dict(parse_assignment(t.strip()) for t in re.split(r',(?=\s*[\w.]+:=)', text)
                if t.strip())


def _effective(preset: dict, knob: str):
    """A knob's value as it acts and as its parameter takes it (an add-on learning rate of 0
    means the add-on trains at lr; on/off switches say on or off)."""
    if knob == 'addon_lr' and not preset[knob]:
        return preset['lr']
    if knob in ('harm_check', 'choose'):
        return 'on' if preset[knob] else 'off'
    return preset[knob]


def ablation_rows(warmup: float) -> List[Row]:
    """For each knob in which the robust preset acts differently from the reference: the robust
    preset with that knob as the reference has it (what the change is worth)."""
    robust, reference = PRESETS['robust'], PRESETS['reference']
    rows = []
    for knob in robust:
        param = knob.replace('fusion_', 'fusion.') if knob.startswith('fusion_') \
            else f'adapt.{knob}'
        mine, theirs = _effective(robust, knob), _effective(reference, knob)
        if knob == 'addon_lr':   # the reference trains the add-on with the rest of the head
            theirs = robust['lr']
        if knob == 'holdout_frames' and not reference['choose']:
            continue             # without the choice nothing is held out: the choice's row
        if mine != theirs:
            rows.append(Row(f'robust, {knob} {theirs} (as reference)', ((param, theirs),),
                            (warmup,), tuning_only=True))
    return rows


def build_rows(args) -> List[Row]:
    """Source and defaults at every warm-up share; the reference preset (unless --no-reference),
    the peers (--peers) and the --row rows at the first share, or at every share with
    --all-warmups (the later shares ask whether the defaults keep their gain, which the source
    and the defaults answer; the other rows at every share would double the run's time); with
    --ablation, the ablation rows at the first share on the tuning mixes."""
    warmups = tuple(float(w) for w in args.warmups.split(','))
    others = warmups if args.all_warmups else warmups[:1]
    rows = [Row(SOURCE_ROW, (('method', 'none'),), warmups), Row(DEFAULTS_ROW, (), warmups)]
    if not args.no_reference:
        rows.append(Row(REFERENCE_ROW, (('adapt.preset', 'reference'),), others))
    for peer in peer_names(args.peers):
        rows.append(Row(PEER_ROWS[peer], (('method', peer),), others))
    for text in args.row:
        name, _, spec = text.partition('=')
        rows.append(Row(name.strip(), tuple(parse_overrides(spec).items()), others))
    if args.ablation:
        rows += ablation_rows(warmups[0])
    return rows


def peer_names(text: str) -> List[str]:
    names = [n.strip() for n in text.split(',') if n.strip()]
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise ValueError(f'unknown peer row(s) {", ".join(unknown)}; choose from '
                         f'{", ".join(PEERS)}')
    return names
