"""ditta-eval --offline as independent jobs: one a video, all methods of that video in it, run
in this process, in worker processes (--jobs) or as Ray tasks (--ray) through
ditta_ros.executors. Each job scores its own video; the scores are merged in the videos' order,
so the figures equal a serial run's exactly (confusion matrices summed, consistency windows and
TC pairs pooled in the same order).

A worker loads only the videos of its jobs, and builds the model and the teacher once."""
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Tuple

from ditta_ros.evaluation import MethodScores, VideoRun

_WORKER: dict = {}


@dataclass(frozen=True)
class EvalSetup:
    """What every job of one ditta-eval run shares."""
    params: dict
    data: str
    split: Optional[str]
    methods: Tuple[str, ...]
    warmup_ratio: Optional[float]
    warmup_seconds: Optional[float]
    oracle: bool
    wait: bool
    with_tc: bool
    keep_predictions: bool      # the report's overlays need them; nothing else does
    threads: int = 0            # torch threads per worker (0: leave torch's default)


def worker_init(setup: EvalSetup) -> None:
    import torch
    from ditta_ros.runtime import configure_process
    configure_process()
    if setup.threads > 0:
        torch.set_num_threads(setup.threads)
    _WORKER.clear()
    _WORKER['setup'] = setup


def _model():
    """The model, input spec, label set and (unless oracle) teacher of this worker, built once."""
    from ditta_ros import settings
    from ditta_ros.labels import load_label_set
    from ditta_ros.model.build import build_model
    from ditta_ros.stream.methods import METHODS
    from ditta_ros.teacher.factory import make_teacher
    if 'model' not in _WORKER:
        setup, params = _WORKER['setup'], _WORKER['setup'].params
        labels = load_label_set(params['model.label_set'])
        device = settings.resolve_device(params['device'])
        teacher = None
        if any(METHODS[m].needs_teacher for m in setup.methods) and not setup.oracle:
            teacher = make_teacher(settings.teacher_spec(params), device)
        _WORKER['model'] = (build_model(settings.model_spec(params, labels), device).eval(),
                            settings.input_spec(params), labels, teacher, device)
    return _WORKER['model']


def video_job(index: int) -> List[Tuple[VideoRun, MethodScores]]:
    """Every method of the setup on video `index`: its run and its scores, in method order."""
    from ditta_ros import settings
    from ditta_ros.evaluation import run_offline, warmup_frames_for
    from ditta_ros.io.video import load_video_at
    from ditta_ros.teacher.factory import oracle_teacher
    setup = _WORKER['setup']
    model, spec, labels, teacher, device = _model()
    video = load_video_at(setup.data, index, setup.split)
    if setup.oracle:
        teacher = oracle_teacher(video.frames, video.instance_ids)
    warmup = warmup_frames_for(video, setup.warmup_ratio, setup.warmup_seconds)
    results = []
    for method in setup.methods:
        p = dict(setup.params, method=method, **{'warmup.frames': warmup, 'warmup.seconds': 0.0,
                                                 'warmup.stride': 1, 'start': 'immediate'})
        run = run_offline(video, model, spec, settings.stream_config(p), teacher, device,
                          setup.wait, class_names=labels.class_names)
        scores = MethodScores(labels)
        scores.add(video, run, with_tc=setup.with_tc)
        if not setup.keep_predictions:
            scores.runs[-1] = replace(run, preds=[])
        results.append((scores.runs[-1], scores))
    return results


def evaluate_offline(setup: EvalSetup, count: int, workers: int = 1, ray: Optional[str] = None,
                     progress=None) -> Tuple[Dict[str, List[VideoRun]], Dict[str, MethodScores]]:
    """Run the jobs of `count` videos and merge their scores per method, in video order."""
    from ditta_ros.executors import run_jobs
    from ditta_ros.labels import load_label_set
    from ditta_ros.stream.methods import METHODS
    # a Ray task holds a GPU where the model runs on one (device cuda; auto decides per node
    # and reserves none)
    gpus = 1.0 if ray and setup.params['device'] == 'cuda' else 0.0
    per_video = run_jobs(video_job, list(range(count)), workers, ray, worker_init, (setup,),
                         gpus_per_job=gpus, progress=progress)
    labels = load_label_set(setup.params['model.label_set'])
    runs = {m: [] for m in setup.methods}
    scores = {m: MethodScores(labels) for m in setup.methods}
    for results in per_video:
        for method, (run, partial) in zip(setup.methods, results):
            runs[method].append(run)
            scores[method].merge(partial)
    return runs, scores
