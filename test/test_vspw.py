"""VSPW read as it is: frames and palette masks per video, the split list, the 124-class label
set; bags and the paper's per-video protocol on small folders the tests make, edge cases
included (a video shorter than the mVC window, a frame without a mask, a value outside the set)."""
import json

import numpy as np
import pytest
from PIL import Image

from conftest import confident_checkpoint, node_params, synthetic_clip
from ditta_ros.io import vspw
from ditta_ros.io.video import load_videos
from ditta_ros.labels import load_label_set
from ditta_ros.model.build import ModelSpec
from ditta_ros.tools import evaluate, make_bag

VSPW = load_label_set('vspw')


def write_mask(path, values):
    """A palette PNG, as VSPW stores its masks (OpenCV would read the palette's colours)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.asarray(values, np.uint8), mode='P')
    image.putpalette([(7 * i) % 256 for i in range(768)])
    image.save(path)


@pytest.fixture(scope='module')
def vspw_root(tmp_path_factory):
    """Two videos: `long` (8 frames, frame 5 without a mask, value 200 in frame 0), `short`
    (3 frames, under any mVC window); only `long` and `short` are in val.txt, `extra` is not."""
    root = tmp_path_factory.mktemp('VSPW_480p')
    clip = synthetic_clip(frames=8)
    for name, count in (('long', 8), ('short', 3), ('extra', 2)):
        for i in range(count):
            frame = root / 'data' / name / 'origin' / f'{i:08d}.jpg'
            frame.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(clip[i]).save(frame, quality=95)
            if name == 'long' and i == 5:
                continue
            mask = np.zeros(clip[i].shape[:2], np.uint8)
            mask[:24] = 29                      # sky (class 28)
            mask[24:] = 19                      # road (class 18)
            mask[20:36, 5 + 3 * i:19 + 3 * i] = 49   # car (class 48)
            mask[0] = 0                         # unlabelled border
            if name == 'long' and i == 0:
                mask[1, :4] = 200               # outside the label set
            write_mask(root / 'data' / name / 'mask' / f'{i:08d}.png', mask)
    (root / 'val.txt').write_text('long\nshort\n\n')
    return root


def test_the_vspw_label_set_has_the_benchmarks_124_classes_and_its_mask_convention():
    assert VSPW.num_classes == 124
    assert VSPW.class_names[0] == 'wall' and VSPW.class_names[-1] == 'train'
    lut = VSPW.id_to_train_id()
    assert lut[0] == 255 and lut[1] == 0 and lut[124] == 123 and lut[125] == 255
    assert lut[200] == 255 and lut[255] == 255
    assert tuple(VSPW.palette[0]) == (120, 120, 120)


def test_the_reference_fixture_video_reads_as_the_reference_read_it(reference):
    """shared/fixtures/reference/video is laid out as VSPW; its masks as prepare_gt read them."""
    videos = load_videos(reference / 'video', split='val')
    inputs = np.load(reference / 'inputs.npz')
    assert [v.name for v in videos] == ['synth_setA']
    video = videos[0]
    np.testing.assert_array_equal(np.stack(video.frames), inputs['frames_bgr_decoded_cv2'][..., ::-1])
    labels = np.stack([VSPW.id_to_train_id()[video.label_ids[i]] for i in range(len(video))])
    np.testing.assert_array_equal(labels, inputs['labels'])


def test_split_lists_masks_and_edge_cases(vspw_root):
    assert vspw.is_vspw(vspw_root)
    assert [v.name for v in vspw.find_videos(vspw_root, 'val')] == ['long', 'short']
    assert [v.name for v in vspw.find_videos(vspw_root)] == ['extra', 'long', 'short']
    long, short = load_videos(vspw_root, split='val')
    assert len(long) == 8 and len(short) == 3
    assert sorted(long.label_ids) == [0, 1, 2, 3, 4, 6, 7]      # frame 5 has no mask
    assert long.stamps[1] == pytest.approx(1 / vspw.VSPW_FPS)
    train = VSPW.id_to_train_id()[long.label_ids[0]]
    assert (train[1, :4] == 255).all() and (train[0] == 255).all()   # outside the set, border
    assert set(np.unique(train)) == {18, 28, 48, 255}
    with pytest.raises(FileNotFoundError, match='test.txt'):
        vspw.find_videos(vspw_root, 'test')


def test_bags_and_the_per_video_protocol_on_vspw(vspw_root, tmp_path):
    assert make_bag.main([str(vspw_root), '--split', 'val', '--out', str(tmp_path / 'bags')]) == 0
    bags = load_videos(tmp_path / 'bags')
    assert [b.name for b in bags] == ['long', 'short']
    assert sorted(bags[0].label_ids) == [0, 1, 2, 3, 4, 6, 7]
    assert bags[0].stamps[1] - bags[0].stamps[0] == pytest.approx(1 / vspw.VSPW_FPS, abs=1e-6)

    spec = ModelSpec(variant='b0', num_classes=124, embed_dim=32, window=2)
    checkpoint = confident_checkpoint(tmp_path / 'b0_vspw.pt', spec)
    import yaml
    from ditta_ros.tools.replay import nest
    params = node_params(checkpoint, **{'model.label_set': 'vspw', 'adapt.seed': 0})
    params.pop('camera_topics')
    (tmp_path / 'p.yaml').write_text(yaml.safe_dump({'/**': {'ros__parameters': nest(params)}}))
    assert evaluate.main([str(vspw_root), '--split', 'val', '--offline', '--methods',
                          'none,ditta', '--params', str(tmp_path / 'p.yaml'), '--warmup-ratio',
                          '25', '--no-tc', '--json', str(tmp_path / 'r.json')]) == 0
    report = json.loads((tmp_path / 'r.json').read_text())
    for method in ('none', 'ditta'):
        m = report['methods'][method]
        # warm-ups: 2 of 8 frames, 1 of 3; frame 5 of `long` is evaluated but not scored
        assert m['frames_evaluated'] == 6 + 2
        assert 0 <= m['mIoU'] <= 1
        assert m['mVC8'] is None   # runs of labelled evaluated frames: 3, 2 and 2 frames
    assert report['methods']['ditta']['phases'][0] in ('adapted', 'failed')
