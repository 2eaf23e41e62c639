"""From a finished warm-up to the decoder that serves: one adaptation, start to end.

1. Normalisation statistics (`norm_stats` warmup): the decode head's BatchNorm statistics
   re-estimated from the warm-up frames (norm_stats.py), and stage A (labels, reliability)
   recomputed with that head: the targets and the labels stage C keeps are then those of the
   re-normalised model, not of the source model it is about to replace.
2. Stage B: the teacher's targets on the warm-up clip.
3. Stage C on every frame with a target except the held-out ones (`holdout_frames`, when the
   choice is on).
4. The checks: divergence (collapse onto one class) refuses; the do-no-harm check passes,
   repairs (blends towards the head stage C started from) or refuses.
5. The label-free choice (choice.py) among the trained head, the statistics-only head and the
   source head, on the held-out frames.

Streams run this in their background worker; the offline tools call it directly.
"""
from dataclasses import dataclass, replace
from typing import Callable, Dict, Optional

import torch

from ditta_ros.adapt.choice import Choice, choose_decoder, held_out_frames
from ditta_ros.adapt.ditta import AdaptationError, WarmupClip, adapt, step_plan
from ditta_ros.adapt.guard import HarmCheck, collapse_reason, harmless_head
from ditta_ros.adapt.norm_stats import warmup_statistics, with_statistics
from ditta_ros.model.heads import DiTTAHead
from ditta_ros.model.segmentor import Segmentor
from ditta_ros.predictor import FramePredictor
from ditta_ros.preprocess import InputSpec
from ditta_ros.teacher.targets import Propagator, TargetConfig, build_targets


@dataclass
class AdaptationOutcome:
    head: DiTTAHead           # the decoder that serves from now on
    decoder: str              # adapted | repaired | statistics | source
    note: str                 # what the checks and the choice found ('' when nothing to say)
    targets: int              # warm-up frames with a target
    steps: int                # stage-C steps taken
    choice: Optional[Choice] = None


def restage(model: Segmentor, head: DiTTAHead, clip: WarmupClip, spec: InputSpec,
            device) -> WarmupClip:
    """The clip with stage A (label, reliability) recomputed by `head`."""
    predictor = FramePredictor(model, spec, device)
    predictions = [predictor.predict(head, f, fused=False, want_reliability=True)
                   for f in clip.frames]
    return WarmupClip(clip.frames, [p.label.cpu() for p in predictions],
                      [p.reliability.cpu() for p in predictions])


def statistics_only(model: Segmentor, clip: WarmupClip, spec: InputSpec, adapt_cfg,
                    device) -> AdaptationOutcome:
    """Step 1 alone (method stats): the source head with the warm-up's statistics serves."""
    stats = warmup_statistics(model, model.decode_head, clip.frames, spec, device)
    head = with_statistics(model.decode_head, stats, adapt_cfg.norm_prior)
    return AdaptationOutcome(head, 'statistics', '', 0, 0)


def adapt_on_warmup(model: Segmentor, clip: WarmupClip, propagator: Propagator,
                    spec: InputSpec, targets_cfg: TargetConfig, adapt_cfg, harm: HarmCheck,
                    tau: float, device, class_names=None,
                    on_stage: Optional[Callable[[int], None]] = None,
                    on_step: Optional[Callable[[int, int, Dict[str, float]], None]] = None,
                    should_stop: Optional[Callable[[], bool]] = None) -> AdaptationOutcome:
    """Run steps 1-5 on a warm-up clip (stage A by the source head). `on_stage(steps_total)` is
    called once the targets exist and stage C is about to start. Raises AdaptationError when
    the result must not serve (no prompt, collapse, refused by the do-no-harm check)."""
    source = model.decode_head
    base = source
    if adapt_cfg.norm_stats == 'warmup':
        stats = warmup_statistics(model, source, clip.frames, spec, device)
        base = with_statistics(source, stats, adapt_cfg.norm_prior)
        clip = restage(model, base, clip, spec, device)
    build = build_targets(propagator, clip.frames, clip.labels, clip.reliabilities,
                          replace(targets_cfg, num_classes=model.num_classes))
    if not build.targets:
        raise AdaptationError('the teacher got no prompt: no class reached reliability '
                              f'{targets_cfg.frame0_threshold} in the warm-up frames')
    held = held_out_frames(build.targets, adapt_cfg.holdout_frames) if adapt_cfg.choose else []
    trained = {i: t for i, t in build.targets.items() if i not in held}
    steps = len(step_plan(adapt_cfg, sorted(trained)))
    if on_stage is not None:
        on_stage(steps)
    adapter = adapt(model, base, clip, trained, spec, adapt_cfg, device, on_step, should_stop)
    reason = collapse_reason(model, adapter.served_head(), clip.frames, clip.labels, spec,
                             device, class_names)
    if reason:
        raise AdaptationError(reason)
    head, verdict = harmless_head(model, base, adapter.served_head(), clip.frames, clip.labels,
                                  clip.reliabilities, spec, device, tau, harm, class_names)
    if head is None and not adapt_cfg.choose:
        raise AdaptationError(verdict)
    decoder = 'repaired' if verdict else 'adapted'
    if not adapt_cfg.choose or not held:
        return AdaptationOutcome(head, decoder, verdict, len(build.targets), steps)
    candidates = {decoder: head} if head is not None else {}
    if base is not source:
        candidates['statistics'] = base
    candidates['source'] = source
    with torch.no_grad():
        chosen, choice = choose_decoder(model, candidates, clip.frames,
                                        {i: build.targets[i] for i in held}, spec, device)
    note = '; '.join(n for n in (verdict, choice.summary()) if n)
    return AdaptationOutcome(chosen, choice.name, note, len(build.targets), steps, choice)
