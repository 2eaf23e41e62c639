"""The work of the quality benchmark: generated drives (made once, then reused) and one row on
one sequence at one warm-up share, in a worker process."""
from pathlib import Path

from ditta_ros.runtime import configure_process
from ditta_ros.tools.quality.scoring import VideoScore


def ensure_domain(out: Path, domain: str, seed: int, sequences: int, frames: int,
                  size: str) -> Path:
    """The generated sequences of one domain (made once, then reused)."""
    from ditta_ros.tools import synth
    folder = out / 'data' / f'{domain}-{size}-{sequences}x{frames}f-seed{seed}'
    if not (folder / 'done').is_file():
        synth.main(['--out', str(folder), '--sequences', str(sequences), '--frames',
                    str(frames), '--size', size, '--domain', domain, '--seed', str(seed)])
        (folder / 'done').write_text('')
    return folder


_WORKER: dict = {}


def worker_init(params: dict) -> None:
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
                      scores.tc[0] if scores.tc else [], run.phase, run.reason, run.decoder)
