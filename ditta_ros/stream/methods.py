"""Every method a camera stream can run, in one table, and the one factory of their streams.

What a method needs is stated here only: whether it takes a stage-B teacher (DiTTA's targets,
SAM2 refinement's masks), whether it adapts, and whether it adapts in the background (then its
stream runs the job on an `AdaptationWorker`: the caller's shared one, or one it makes and owns).
The node, ditta-eval, ditta-quality and ditta-bench all build their streams through
`make_stream`.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Type

from ditta_ros.stream.config import StreamConfig
from ditta_ros.stream.ditta import DittaStream
from ditta_ros.stream.peers import PeerStream
from ditta_ros.stream.worker import AdaptationWorker
from ditta_ros.teacher.factory import TeacherFactory


@dataclass(frozen=True)
class Method:
    name: str
    summary: str              # one line for the parameter description and --help texts
    needs_teacher: bool       # takes a stage-B teacher factory
    adapts: bool              # changes the model (start_adaptation is meaningful)
    in_background: bool       # adapts on an AdaptationWorker, not in the camera's thread
    stream: Type = PeerStream  # the stream class that runs it


METHODS: Dict[str, Method] = {m.name: m for m in (
    Method('none', 'the source model frame by frame', False, False, False, DittaStream),
    Method('ditta', 'adapt on a warm-up (SAM2/flow distillation into the decoder), then the '
           'adapted model', True, True, True, DittaStream),
    Method('stats', 'baseline: the decoder\'s BatchNorm statistics from the warm-up (prior '
           'adapt.norm_prior), no weight trained, no teacher', False, True, True, DittaStream),
    Method('tent', 'peer test-time adaptation (entropy, BatchNorm affine)', False, True, False),
    Method('cotta', 'peer test-time adaptation (EMA teacher, restoration)', False, True, False),
    Method('auxadapt', 'peer test-time adaptation (auxiliary network)', False, True, False),
    Method('sam2_refine', 'SAM2 refines every frame (no adaptation, slow)', True, False, False),
)}
METHOD_NAMES = tuple(METHODS)


def method_help() -> str:
    """The methods and what each does, one clause each (parameter descriptions, --help)."""
    return '; '.join(f'{m.name}: {m.summary}' for m in METHODS.values()) + '.'


def method_named(name: str) -> Method:
    """The method called `name`; ValueError naming the choices."""
    if name not in METHODS:
        raise ValueError(f'unknown method {name!r}; choose from {", ".join(METHOD_NAMES)}')
    return METHODS[name]


def parse_methods(text: str) -> List[str]:
    """Method names from a comma-separated list (ValueError for an unknown or no name)."""
    names = [n.strip() for n in text.split(',') if n.strip()]
    if not names:
        raise ValueError(f'no method given; choose from {", ".join(METHOD_NAMES)}')
    return [method_named(n).name for n in names]


def make_stream(name: str, model, spec, cfg: StreamConfig,
                teacher: Optional[TeacherFactory] = None,
                worker: Optional[AdaptationWorker] = None, device='cpu', on_phase_change=None,
                class_names=None):
    """The stream of `cfg.method` for one camera. `teacher` is required by the methods that need
    one; `worker` is the shared adaptation thread of the background methods (without one, the
    stream makes its own and `shutdown()` ends it)."""
    method = method_named(cfg.method)
    if method.needs_teacher and teacher is None:
        raise ValueError(f'method {method.name!r} needs a stage-B teacher')
    extra = {'worker': worker} if method.in_background else {}
    return method.stream(name, model, spec, cfg, method.adapts, teacher=teacher, device=device,
                         on_phase_change=on_phase_change, class_names=class_names, **extra)
