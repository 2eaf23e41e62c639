"""Real Cityscapes sequences: one sequence id holds several 30-frame snippets of unrelated scenes,
labelled at one frame each. Each snippet is its own video (bags, evaluation), and mVC, which
needs consecutive labelled frames, is not available rather than 0."""
import json
import shutil

import pytest

from conftest import node_params
from ditta_ros.io import cityscapes
from ditta_ros.io.video import load_videos
from ditta_ros.tools import evaluate, make_bag, synth

SNIPPETS = (275, 557)      # first frames of two snippets of frankfurt_000000 in the real val set
LENGTH, LABELLED = 5, 2    # frames per snippet here, and the index of each one's labelled frame


@pytest.fixture(scope='module')
def real_layout(tmp_path_factory):
    """A folder laid out like leftImg8bit_sequence/val + gtFine/val of the real data set: two
    snippets under one sequence id, one labelled frame each, made from a generated drive."""
    tmp = tmp_path_factory.mktemp('cityscapes')
    synth.main(['--out', str(tmp / 'gen'), '--sequences', '1', '--frames', str(2 * LENGTH),
                '--size', '96x48', '--domain', 'fog', '--seed', '9'])
    root = tmp / 'real'
    for k, first in enumerate(SNIPPETS):
        for i in range(LENGTH):
            source = ('synth', 0, k * LENGTH + i)
            target = ('frankfurt', 0, first + i)
            dst = cityscapes.image_path(root, 'val', *target)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(cityscapes.image_path(tmp / 'gen', 'val', *source), dst)
            if i == LABELLED:
                for kind in ('labelIds', 'instanceIds'):
                    dst = cityscapes.gt_path(root, 'val', *target, kind)
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(cityscapes.gt_path(tmp / 'gen', 'val', *source, kind), dst)
    return root


def test_a_sequence_id_with_several_snippets_is_one_video_per_snippet(real_layout):
    videos = cityscapes.find_sequences(real_layout)
    assert [v.name for v in videos] == ['frankfurt_000000_000275', 'frankfurt_000000_000557']
    for video, first in zip(videos, SNIPPETS):
        assert video.frames == list(range(first, first + LENGTH))
        assert list(video.label_ids) == [LABELLED] and list(video.instance_ids) == [LABELLED]
    loaded = load_videos(real_layout)
    assert [len(v) for v in loaded] == [LENGTH, LENGTH]
    assert [list(v.label_ids) for v in loaded] == [[LABELLED], [LABELLED]]
    assert loaded[0].stamps[0] == 0.0 and loaded[1].stamps[0] == 0.0   # each its own clock


def test_bags_are_made_per_snippet_and_scored_where_labels_exist(real_layout, tmp_path,
                                                                 b0_checkpoint):
    assert make_bag.main([str(real_layout), '--out', str(tmp_path / 'bags')]) == 0
    bags = sorted(p.name for p in (tmp_path / 'bags').iterdir())
    assert bags == ['frankfurt_000000_000275', 'frankfurt_000000_000557']
    videos = load_videos(tmp_path / 'bags')
    assert [len(v) for v in videos] == [LENGTH, LENGTH]
    assert [list(v.label_ids) for v in videos] == [[LABELLED], [LABELLED]]

    import yaml
    from ditta_ros.tools.replay import nest
    params = node_params(b0_checkpoint)
    params.pop('camera_topics')
    (tmp_path / 'p.yaml').write_text(yaml.safe_dump({'/**': {'ros__parameters': nest(params)}}))
    assert evaluate.main([str(tmp_path / 'bags'), '--offline', '--methods', 'none',
                          '--params', str(tmp_path / 'p.yaml'), '--warmup-ratio', '20',
                          '--json', str(tmp_path / 'r.json')]) == 0
    none = json.loads((tmp_path / 'r.json').read_text())['methods']['none']
    assert none['frames_evaluated'] == 2 * (LENGTH - 1)
    assert none['mIoU'] is not None and 0 < none['mIoU'] <= 1
    assert none['mVC8'] is None and none['mVC16'] is None     # not available, not 0


def test_consistency_windows_stay_inside_runs_of_consecutive_labelled_frames():
    from ditta_ros.evaluation import labelled_runs
    labelled = {1: None, 2: None, 3: None, 5: None, 6: None, 7: None, 8: None}
    # frame 4 has no label, frame 7 no prediction (absent from the evaluated frames)
    assert labelled_runs([1, 2, 3, 4, 5, 6, 8, 9], labelled) == [[1, 2, 3], [5, 6], [8]]
    assert labelled_runs(list(range(10)), {i: None for i in range(10)}) == [list(range(10))]
    assert labelled_runs([0, 1], {}) == []
