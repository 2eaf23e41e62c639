"""ditta-eval: replay recorded drives through the node and score it against the ground truth.

Input: a sequence bag (ditta-make-bag), a folder of them, a Cityscapes-style folder (one video per
snippet) or a VSPW folder (--split val reads val.txt).
Each video is run with the warm-up-to-frozen protocol (the paper's): a fresh model, the first
`--warmup-ratio` % of the frames (or `--warmup-seconds`) as warm-up, metrics on the rest, for the
ISS baseline (`none`) and the adapted model (`ditta`) side by side on the same frames.

Modes:
  (default)  real DDS: starts the installed node for each video and method (or, with --attach,
             talks to a node already running) and replays the frames to it, recording the masks
             it publishes; frames sent / received / dropped are reported.
  --offline  runs the camera streams without DDS, one job per video: in this process, in
             --jobs worker processes, or as tasks on a Ray cluster (--ray); the scores are merged
             in the videos' order, equal to a serial run's; deterministic with a seed.

Model, teacher and adaptation settings come from the node's parameter files (--params, default
the package's config/ditta.yaml), so the evaluation runs exactly what the node would run.
"""
import argparse
import os
import sys
from pathlib import Path

from tqdm import tqdm

from ditta_ros import report as rep
from ditta_ros.evaluation import MethodScores, VideoRun, warmup_frames_for
from ditta_ros.io.video import load_videos, video_count
from ditta_ros.labels import load_label_set
from ditta_ros.ros.params import load_parameters, parse_assignment
from ditta_ros.runtime import configure_process
from ditta_ros.stream.methods import METHOD_NAMES, METHODS, parse_methods
from ditta_ros.tools.eval_jobs import EvalSetup, evaluate_offline


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='ditta-eval', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('data', help='sequence bag, folder of bags, or Cityscapes-style folder')
    p.add_argument('--params', action='append', default=[],
                   help='node parameter file(s) (model, teacher, adaptation settings)')
    p.add_argument('-p', '--param', action='append', default=[], metavar='NAME:=VALUE',
                   help='override one parameter, e.g. -p teacher.name:=flow')
    p.add_argument('--methods', default='none,ditta',
                   help=f'comma-separated, of: {", ".join(METHOD_NAMES)}')
    group = p.add_mutually_exclusive_group()
    group.add_argument('--warmup-ratio', type=float, default=None,
                       help='warm-up share of each video in %% (paper: 10, 25, 50; default 10)')
    group.add_argument('--warmup-seconds', type=float, default=None,
                       help='warm-up duration in stream seconds')
    p.add_argument('--offline', action='store_true', help='run the camera streams here, without DDS')
    p.add_argument('--jobs', type=int, default=1,
                   help='offline: videos run in this many worker processes at once')
    p.add_argument('--threads', type=int, default=0,
                   help='offline: PyTorch threads per video (default: the cores shared among the '
                        'workers); the figures of a run do not depend on --jobs or --ray, but '
                        'floating-point sums do on the thread count')
    p.add_argument('--ray', default=None, metavar='ADDRESS',
                   help='offline: one Ray task per video on a cluster: its address '
                        '(ray://head:10001), auto (RAY_ADDRESS / a running ray start), or local '
                        '(a Ray instance on this machine, on 127.0.0.1); needs the ray extra')
    p.add_argument('--oracle', action='store_true',
                   help='offline only: the teacher follows the ground-truth instance tracks')
    p.add_argument('--attach', action='store_true',
                   help='DDS: use a node that is already running instead of starting one')
    p.add_argument('--node-name', default='ditta')
    p.add_argument('--topic', default='/camera/image_raw', help='DDS: camera topic')
    p.add_argument('--pace', choices=['lockstep', 'realtime'], default='lockstep',
                   help='DDS: wait for each mask (nothing lost) or send at the video rate')
    p.add_argument('--no-wait', action='store_true',
                   help='do not hold the stream while the adaptation runs')
    p.add_argument('--split', default=None, help='Cityscapes split to use (default: all)')
    p.add_argument('--max-videos', type=int, default=None)
    p.add_argument('--out', default=None, help='folder for report.md, plots and (with '
                                               '--video) the overlay video')
    p.add_argument('--json', default=None, help='write the metrics as JSON to this file')
    p.add_argument('--video', action='store_true', help='also write an overlay MP4 to --out')
    p.add_argument('--no-tc', action='store_true', help='skip the optical-flow TC metric')
    return p


def parse_overrides(items):
    """-p NAME:=VALUE items as typed parameter values (a clear exit on a bad one)."""
    try:
        return dict(parse_assignment(item) for item in items)
    except ValueError as exc:
        raise SystemExit(f'error: -p {exc}') from None


def run_dds(args, params, videos, methods, warmups, tick):
    import os
    from ditta_ros.tools.replay import Client, NodeProcess, dds_environment, replay_video
    runs = {m: [] for m in methods}
    if not args.attach:  # our own node: loopback only, in a domain of our own
        os.environ.update(dds_environment())
    client = Client('ditta_eval')
    try:
        for video, warmup in zip(videos, warmups):
            for method in methods:
                node = None
                if not args.attach:
                    node_params = dict(params, **{
                        'camera_topics': [args.topic], 'method': method, 'input.qos': 'reliable',
                        'input.qos_depth': 10, 'warmup.frames': warmup, 'warmup.seconds': 0.0,
                        'warmup.stride': 1, 'output.color_mask': False,
                        'output.confidence': False, 'start': 'immediate'})
                    workdir = Path(args.out or '.') / 'eval_logs'
                    workdir.mkdir(parents=True, exist_ok=True)
                    node = NodeProcess(workdir, node_params, name=args.node_name)
                    node.wait_for_log('ready:', 120)
                else:
                    _restart_attached(client, args, method)
                try:
                    result = replay_video(client, video, args.topic, args.node_name, warmup,
                                          METHODS[method].in_background and not args.no_wait,
                                          lockstep=args.pace == 'lockstep', progress=tick)
                finally:
                    if node is not None:
                        node.stop()
                status = result['status']
                evaluated = max(1, len(video) - warmup)
                runs[method].append(VideoRun(
                    video.name, method, warmup, result['preds'],
                    result['eval_seconds'] / evaluated, 0.0,
                    status.phase_name if status else '', status.reason if status else '',
                    {}, result['sent'], result['received'], result['dropped']))
    finally:
        client.close()
    return runs


def _restart_attached(client, args, method):
    from std_srvs.srv import Trigger
    from ditta_ros.ros.params import camera_name
    service = f'/{args.node_name}/{camera_name(args.topic)}/'
    response = client.call(Trigger, service + 'reset', Trigger.Request())
    if METHODS[method].adapts:
        response = client.call(Trigger, service + 'start_adaptation', Trigger.Request())
    if not response.success:
        raise SystemExit(f'error: the attached node refused: {response.message}')


def evaluate(args) -> dict:
    params = load_parameters(args.params, parse_overrides(args.param))
    try:
        methods = parse_methods(args.methods)
    except ValueError as exc:
        raise SystemExit(f'error: {exc}') from None
    if args.oracle and not args.offline:
        raise SystemExit('error: --oracle needs --offline (the node has no ground truth)')
    if (args.jobs > 1 or args.ray) and not args.offline:
        raise SystemExit('error: --jobs and --ray need --offline (a replay talks to one node)')
    labels = load_label_set(params['model.label_set'])
    videos = None
    if args.offline:
        count = video_count(args.data, args.split)
        count = min(count, args.max_videos) if args.max_videos else count
        setup = EvalSetup(params, str(args.data), args.split, tuple(methods), args.warmup_ratio,
                          args.warmup_seconds, args.oracle, not args.no_wait, not args.no_tc,
                          keep_predictions=bool(args.out), threads=_threads(args))
        with tqdm(total=count, desc='ditta-eval', unit='video') as bar:
            runs, scores = evaluate_offline(setup, count, args.jobs, args.ray,
                                            progress=lambda results: _ticking(results, bar))
        warmups = [run.warmup for run in runs[methods[0]]]
    else:
        videos = load_videos(args.data, args.split)[:args.max_videos]
        warmups = [warmup_frames_for(v, args.warmup_ratio, args.warmup_seconds) for v in videos]
        total = sum(len(v) for v in videos) * len(methods)
        with tqdm(total=total, desc='ditta-eval', unit='frame') as bar:
            runs = run_dds(args, params, videos, methods, warmups, lambda: bar.update(1))
        scores = {m: MethodScores(labels) for m in methods}
        for method in methods:
            for video, run in zip(videos, runs[method]):
                scores[method].add(video, run, with_tc=not args.no_tc)
    report = {
        'data': str(args.data), 'videos': len(warmups), 'mode': _mode(args) if args.offline
        else f'dds ({args.pace}{", attached" if args.attach else ""})',
        'warmup': (f'{args.warmup_seconds} s' if args.warmup_seconds is not None
                   else f'{args.warmup_ratio or 10:g} %') + f' ({sum(warmups)} frames in all)',
        'teacher': 'oracle' if args.oracle else params['teacher.name'],
        'model': f'{params["model.family"]}/{params["model.variant"]} '
                 f'({params["model.checkpoint"] or "random weights"})',
        'device': params['device'],
        'methods': {m: scores[m].summary() for m in methods},
    }
    if args.out:
        if videos is None:   # offline: the overlays need the frames here
            videos = load_videos(args.data, args.split)[:len(warmups)]
        _write_outputs(Path(args.out), args, report, videos, runs, scores, labels)
    if args.json:
        rep.write_json(Path(args.json), report)
    return report


def _ticking(results, bar):
    for result in results:
        bar.update(1)
        yield result


def _threads(args) -> int:
    """PyTorch threads per video: --threads, else the cores shared among the workers (a Ray task
    holds one core); 0 keeps torch's default in a serial run."""
    if args.threads:
        return args.threads
    if args.ray:
        return 1
    return max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else 0


def _mode(args) -> str:
    if args.ray:
        return f'offline, Ray ({args.ray})'
    return f'offline, {args.jobs} worker processes' if args.jobs > 1 else 'offline'


def _write_outputs(out, args, report, videos, runs, scores, labels):
    out.mkdir(parents=True, exist_ok=True)
    rep.plot_per_class(out / 'per_class_iou.png', report['methods'])
    rep.plot_over_time(out / 'miou_over_time.png', {m: s.per_frame for m, s in scores.items()})
    video = videos[0]
    first = runs[next(iter(runs))][0].warmup
    picks = sorted({first, (first + len(video) - 1) // 2, len(video) - 1})
    rep.strip(out / 'overlays.png', video, {m: r[0].preds for m, r in runs.items()}, labels,
              picks)
    report['plots'] = ['per_class_iou.png', 'miou_over_time.png', 'overlays.png']
    if args.video:
        rep.overlay_video(out / 'overlays.mp4', videos,
                          {m: {run.video: run.preds for run in r} for m, r in runs.items()},
                          labels)
        report['video'] = 'overlays.mp4'
    (out / 'report.md').write_text(rep.markdown(report))
    rep.write_json(out / 'report.json', report)


def main(argv=None) -> int:
    configure_process()
    args = build_parser().parse_args(argv)
    try:
        report = evaluate(args)
    except (FileNotFoundError, ValueError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    print(rep.markdown({**report, 'plots': []}).split('\n## Per-class')[0])
    if args.out:
        print(f'report: {Path(args.out) / "report.md"}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
