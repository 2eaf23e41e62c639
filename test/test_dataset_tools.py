"""ditta-synth layout and labels, bag round trips, and the Cityscapes metric agreement."""
import cv2
import numpy as np
import pytest

from ditta_ros.io import cityscapes
from ditta_ros.io.video import load_videos
from ditta_ros.labels import load_label_set
from ditta_ros.metrics import ConfusionMatrix
from ditta_ros.tools import make_bag, synth

LABELS = load_label_set('cityscapes')


@pytest.fixture(scope='module')
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('synth')
    assert synth.main(['--out', str(root), '--sequences', '2', '--frames', '6',
                       '--size', '160x80', '--domain', 'rain+noise', '--seed', '3']) == 0
    return root


def test_synth_writes_the_exact_cityscapes_layout(synth_root):
    for seq in range(2):
        for frame in range(6):
            stem = f'synth_{seq:06d}_{frame:06d}'
            assert (synth_root / 'leftImg8bit_sequence' / 'val' / 'synth' /
                    f'{stem}_leftImg8bit.png').is_file()
            for kind in ('labelIds', 'instanceIds', 'color'):
                assert (synth_root / 'gtFine' / 'val' / 'synth' /
                        f'{stem}_gtFine_{kind}.png').is_file()
    sequences = cityscapes.find_sequences(synth_root)
    assert [s.name for s in sequences] == ['synth_000000', 'synth_000001']
    assert all(len(s.label_ids) == 6 and len(s.instance_ids) == 6 for s in sequences)


def test_synth_labels_are_valid_and_consistent(synth_root):
    valid_ids = {lab.id for lab in LABELS.dataset_labels}
    things = {lab.id for lab in LABELS.dataset_labels if lab.has_instances}
    lut = np.zeros((256, 3), np.uint8)
    for lab in LABELS.dataset_labels:
        lut[lab.id] = lab.color
    seq = cityscapes.find_sequences(synth_root)[0]
    tracks = []
    for i in range(6):
        labels = cityscapes.read_label_ids(seq.label_ids[i])
        instances = cityscapes.read_label_ids(seq.instance_ids[i]).astype(np.int64)
        assert labels.dtype == np.uint8 and set(np.unique(labels)) <= valid_ids
        assert (LABELS.id_to_train_id()[labels] != 255).mean() > 0.99
        thing = np.isin(labels, list(things))
        assert (instances[thing] // 1000 == labels[thing]).all()
        assert (instances[~thing] == labels[~thing]).all()
        color = cv2.cvtColor(cv2.imread(str(seq.label_ids[i]).replace('labelIds', 'color'),
                                        cv2.IMREAD_UNCHANGED), cv2.COLOR_BGRA2RGBA)
        assert np.array_equal(color[..., :3], lut[labels]) and (color[..., 3] == 255).all()
        tracks.append(set(np.unique(instances[thing]).tolist()))
    # objects keep their id from frame to frame (most tracks persist over 6 frames)
    assert tracks[0] and len(tracks[0] & tracks[-1]) >= len(tracks[0]) // 2


def test_synth_is_deterministic(tmp_path, synth_root):
    synth.main(['--out', str(tmp_path), '--sequences', '1', '--frames', '2', '--size', '160x80',
                '--domain', 'rain+noise', '--seed', '3'])
    a = sorted((tmp_path / 'leftImg8bit_sequence').rglob('*.png'))
    b = sorted((synth_root / 'leftImg8bit_sequence').rglob('synth_000000_00000[01]*.png'))
    assert [cv2.imread(str(x)).tobytes() for x in a] == [cv2.imread(str(x)).tobytes() for x in b]


def test_synth_rejects_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit):
        synth.main(['--out', str(tmp_path), '--domain', 'snowstorm'])
    assert 'unknown domain effect' in capsys.readouterr().err


@pytest.mark.parametrize('storage,compressed', [('mcap', None), ('sqlite3', None),
                                                ('mcap', 'png'), ('sqlite3', 'jpeg')])
def test_bag_round_trip(tmp_path, synth_root, storage, compressed):
    args = [str(synth_root), '--out', str(tmp_path / 'bags'), '--storage', storage,
            '--frame-id', 'cam_front']
    if compressed:
        args += ['--compressed', compressed]
    assert make_bag.main(args) == 0
    folder = load_videos(synth_root)
    bags = load_videos(tmp_path / 'bags')
    assert [b.name for b in bags] == [f.name for f in folder]
    for f, b in zip(folder, bags):
        assert len(b) == len(f) == 6 and b.frame_id == 'cam_front'
        assert np.allclose(np.diff(b.stamps), 1 / 17.0, atol=1e-6)
        for x, y in zip(f.frames, b.frames):
            if compressed == 'jpeg':
                assert np.abs(x.astype(int) - y).mean() < 20  # noisy frames, lossy codec
            else:
                assert np.array_equal(x, y)
        assert sorted(b.label_ids) == sorted(f.label_ids)
        for i in f.label_ids:
            assert np.array_equal(b.label_ids[i], f.label_ids[i])
            assert np.array_equal(b.instance_ids[i], f.instance_ids[i])
    assert (tmp_path / 'bags' / 'synth_000000' / 'metadata.yaml').is_file()


def test_miou_agrees_with_the_official_cityscapes_evaluator(tmp_path, synth_root):
    evaluator = pytest.importorskip('cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling')
    rng = np.random.default_rng(0)
    to_train, to_id = LABELS.id_to_train_id(), LABELS.train_id_to_id()
    preds, gts = [], []
    confusion = ConfusionMatrix(LABELS.num_classes)
    seq = cityscapes.find_sequences(synth_root)[0]
    for i, gt_path in sorted(seq.label_ids.items()):
        gt_ids = cityscapes.read_label_ids(gt_path)
        pred = to_train[gt_ids].copy()
        pred[pred == 255] = 0
        noise = rng.random(pred.shape) < 0.2
        pred[noise] = rng.integers(0, LABELS.num_classes, int(noise.sum()))
        pred[:4, :4] = 16   # 'train': predicted, never in the ground truth
        path = tmp_path / f'{seq.city}_{seq.seq:06d}_{seq.frames[i]:06d}_pred.png'
        cv2.imwrite(str(path), to_id[pred])
        preds.append(str(path))
        gts.append(str(gt_path))
        confusion.add(pred, to_train[gt_ids])
    args = evaluator.args
    args.quiet, args.JSONOutput = True, False
    args.evalInstLevelScore, args.evalPixelAccuracy = False, False
    results = evaluator.evaluateImgLists(preds, gts, args)
    assert confusion.miou_cityscapes() == pytest.approx(results['averageScoreClasses'], abs=1e-9)
    for name, iou in zip(LABELS.class_names, confusion.iou()):
        official = results['classScores'][name]
        assert (np.isnan(official) and (np.isnan(iou))) or iou == pytest.approx(official)
    # the reference convention leaves out the class that is only predicted
    assert confusion.miou() > confusion.miou_cityscapes()
