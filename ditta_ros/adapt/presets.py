"""Named stage-C recipes, and the choice lists of the knobs they set (one place for each).

* `reference`: the authors' implementation as published (the fixture tests hold it to the
  reference's outputs): softmax applied twice and an all-pixel mean in the distillation loss,
  the teacher's label everywhere it has one, BatchNorm statistics re-estimated from the warm-up
  clip, AdamW at 1e-3 for 5 passes, the live head serves.
* `robust` (the default): what measured best on the quality benchmark (docs/quality.md), each
  change with its own ablation row there.

`fusion_tau` and `fusion_hold` are stage D's (the node parameters fusion.tau and fusion.hold) and
`harm_check` the do-no-harm check's (adapt.harm_check; the reference has none); every other entry
is an AdaptConfig field. The robust preset serves the adapted plain branch alone (tau 0: at the
scale measured the add-on's fusion smoothed the masks but cost accuracy, thin classes first),
made temporally consistent by the temporal hold instead (predictor.py), which costs nothing per
frame and measured no loss of accuracy.
"""
from ditta_ros.prediction import PAPER_TAU

DISTILL_LOSSES = ('reference', 'balanced')
LABEL_RULES = ('override', 'keep_confident')
NORM_STATS = ('batch', 'source', 'warmup')
SERVED_HEADS = ('live', 'momentum')

PRESETS = {
    'reference': dict(lr=1e-3, addon_lr=0.0, passes=5, max_steps=0, distill_loss='reference',
                      label_rule='override', keep_reliability=0.9, norm_stats='batch',
                      norm_prior=0.0, holdout_frames=0, choose=False,
                      serve='live', fusion_tau=PAPER_TAU, fusion_hold=0.0, harm_check=False),
    'robust': dict(lr=1e-4, addon_lr=1e-3, passes=5, max_steps=0, distill_loss='balanced',
                   label_rule='keep_confident', keep_reliability=0.9, norm_stats='warmup',
                   norm_prior=0.0, holdout_frames=1, choose=True,
                   serve='live', fusion_tau=0.0, fusion_hold=2.0, harm_check=True),
}
PRESET_NAMES = tuple(PRESETS)
