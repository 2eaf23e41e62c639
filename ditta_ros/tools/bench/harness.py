"""What every ditta-bench measurement shares: the model and frames it runs on, the device, its
timers and memory figures, and a fresh interpreter per measurement (its own peak memory)."""
import multiprocessing as mp
import os
import resource
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import torch

from ditta_ros.runtime import configure_process

WEIGHT_SHARPENING = 30.0


def frame_size(text):
    w, h = (int(v) for v in text.lower().split('x'))
    return w, h


def device_for(choice):
    from ditta_ros.settings import resolve_device
    return resolve_device(choice)


def bench_model(args, device, **overrides):
    from ditta_ros.model.build import ModelSpec, build_model
    fields = dict(family=args.family, variant=args.variant, checkpoint=args.checkpoint,
                  num_classes=args.num_classes, embed_dim=args.embed_dim, window=args.window)
    fields.update(overrides)
    model = build_model(ModelSpec(**fields), device).eval()
    if not fields['checkpoint']:
        with torch.no_grad():
            for param in model.decode_head.classifier_parameters():
                param.mul_(WEIGHT_SHARPENING)
    return model


def bench_frames(args, count):
    from ditta_ros.synth.sequence import SequenceSpec, generate
    w, h = frame_size(args.size)
    return [f.image for f in generate(SequenceSpec(width=w, height=h, frames=count, seed=7,
                                                    domain='fog+noise'))]


def sam2_teacher_spec(args):
    """The SAM2 teacher: the given checkpoint, or random weights saved to a temporary file."""
    from ditta_ros.teacher.factory import TeacherSpec
    checkpoint, overrides = args.sam2_checkpoint, ()
    if not checkpoint:
        import tempfile
        from sam2.build_sam import build_sam2_video_predictor
        overrides = (f'++model.image_size={args.sam2_image_size}',)
        torch.manual_seed(0)
        model = build_sam2_video_predictor(args.sam2_config, ckpt_path=None, device='cpu',
                                           hydra_overrides_extra=list(overrides))
        checkpoint = tempfile.mkstemp(suffix='.pt')[1]
        torch.save({'model': model.state_dict()}, checkpoint)
    return TeacherSpec('sam2', args.sam2_config, checkpoint, overrides)


def peak_memory(device):
    figures = {'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.device(device).type == 'cuda':
        figures['peak_cuda_mb'] = torch.cuda.max_memory_allocated() / 2 ** 20
    return figures


def synchronize(device):
    """Wait for the GPU's queued work, so that a timer read next covers it."""
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize()


def configured(function, *args):
    configure_process()
    return function(*args)


def in_fresh_process(function, *args, env=None):
    """function(*args) in a new interpreter (its own peak memory), configured as the tools are,
    with `env` added to its environment."""
    env = env or {}
    previous = {name: os.environ.get(name) for name in env}
    os.environ.update(env)        # a spawned interpreter starts with this process's environment
    try:
        with ProcessPoolExecutor(1, mp_context=mp.get_context('spawn')) as pool:
            return pool.submit(configured, function, *args).result()
    except BrokenProcessPool:     # a killed child (out of memory) must not hang the benchmark
        raise RuntimeError(f'{function.__name__}: its process died before it reported '
                           '(killed for lack of memory?)') from None
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
