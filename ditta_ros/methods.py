"""Every method the node, ditta-eval and ditta-bench can run, and one factory for their streams.

    none         the source ISS model, frame by frame
    ditta        DiTTA: warm-up, SAM2/flow distillation into the decoder, fused inference
    tent, cotta, auxadapt   peer test-time adaptation methods (every frame or warm-up only)
    sam2_refine  SAM2 refining the ISS masks at every frame (no adaptation)
"""
from ditta_ros.adapt.peers import PEER_METHODS, make_peer
from ditta_ros.engine import CameraStream, EngineConfig
from ditta_ros.online import OnlineStream

METHODS = ('none', 'ditta') + PEER_METHODS
NEEDS_TEACHER = ('ditta', 'sam2_refine')


def make_stream(name: str, model, spec, cfg: EngineConfig, worker=None, teacher=None,
                device='cpu', on_phase_change=None, class_names=None):
    """The stream of `cfg.method` for one camera."""
    if cfg.method in ('none', 'ditta'):
        return CameraStream(name, model, spec, cfg, worker, teacher, device, on_phase_change,
                            class_names)
    if cfg.method not in PEER_METHODS:
        raise ValueError(f'unknown method {cfg.method!r}; choose one of {", ".join(METHODS)}')
    seed = cfg.seed if cfg.seed is not None else 0

    def fresh():
        return make_peer(cfg.method, model, model.decode_head, spec, device, cfg.peer_lr, seed,
                         teacher, cfg.targets)
    return OnlineStream(name, model, spec, cfg, fresh, device, on_phase_change, class_names)
