"""ditta-bench's tables in Markdown."""


def markdown(report) -> str:
    lines = [f'Machine: {report["machine"]}. Model: {report["model"]}, frames {report["size"]}, '
             f'{report["warmup"]} warm-up frames, {report["frames"]} timed frames.', '',
             '| method | FPS | latency p50 / p95 (ms) | warm-up + adaptation (s) | peak RSS (MB) '
             '| peak CUDA allocated (MB) | x ISS time | phase |',
             '|---|---|---|---|---|---|---|---|']
    base = report['methods'].get('none', {}).get('latency_p50_ms')
    for name, m in report['methods'].items():
        ratio = f'{m["latency_p50_ms"] / base:.2f}' if base else '–'
        cuda = f'{m["peak_cuda_mb"]:.0f}' if 'peak_cuda_mb' in m else '–'
        lines.append(f'| {name} | {m["fps"]:.2f} | {m["latency_p50_ms"]:.1f} / '
                     f'{m["latency_p95_ms"]:.1f} | {m["warmup_s"]:.1f} | {m["peak_rss_mb"]:.0f} '
                     f'| {cuda} | {ratio} | {m["phase"]} |')
    for key, title in (('ratios', 'Ratios (this run)'),):
        if report.get(key):
            lines += ['', f'**{title}**: ' + '; '.join(f'{k} = {v:.3f}'
                                                       for k, v in report[key].items())]
    if report.get('reference'):
        lines += ['', '| reference comparison (480x864, D=256, r=5) | seconds | peak RSS (MB) '
                      '| peak in use (MB) |', '|---|---|---|---|']
        for name, r in report['reference'].items():
            in_use = f'{r["peak_in_use_mb"]:.0f}' if 'peak_in_use_mb' in r else '–'
            lines.append(f'| {name} | {r["seconds"]:.2f} | {r["peak_rss_mb"]:.0f} | {in_use} |')
    if report.get('stage_b'):
        b = report['stage_b']
        lines += ['', f'Stage B (SAM2, {b["warmup_frames"]} warm-up frames, {b["objects"]} '
                      f'objects): features cached {b["cached_s"]:.1f} s, recomputed '
                      f'{b["recomputed_s"]:.1f} s: {b["speedup"]:.1f}x, identical targets: '
                      f'{b["identical_targets"]}.']
    if report.get('stage_costs'):
        lines += ['', f'| stage (at {report["size"]}) | seconds |', '|---|---|']
        lines += [f'| {k} | {v:.3f} |' for k, v in report['stage_costs'].items()]
    if report.get('addon_cost'):
        lines += ['', f'| frames alternating, one process ({report["size"]}) | latency p50 (ms) '
                      '| multiply-adds (G) |', '|---|---|---|']
        lines += [f'| {kind} | {c["latency_p50_ms"]:.1f} | {c["gmacs"]:.2f} |'
                  for kind, c in report['addon_cost'].items()]
    if report.get('node'):
        lines += ['', f'| node over DDS ({report["size"]}) | round trip (ms) | throughput (FPS) '
                      '| decode / model / encode+publish (ms) | outside the model |',
                  '|---|---|---|---|---|']
        for name, n in report['node'].items():
            lines.append(f'| {name} | {n["round_trip_ms"]:.0f} | {n["throughput_fps"]:.2f} | '
                         f'{n["decode_ms"]:.1f} / {n["model_ms"]:.1f} / '
                         f'{n["encode_publish_ms"]:.1f} | {100 * n["outside_model_share"]:.0f} % |')
    return '\n'.join(lines) + '\n'
