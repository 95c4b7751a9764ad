"""`densepred evaluate-alignment` on a tiny generated dataset in the real data's layout."""

import argparse
import json
import shutil

from densepred_ros import evaluation
from densepred_ros.cli_errors import UserError
from densepred_ros.synthetic import make_frame
import numpy as np
from PIL import Image
import pytest

WIDTH, HEIGHT = 160, 120


def _write_gt_dataset(root, frames):
    """KITTI/NYU-style: intrinsics.json, depth/*.png (uint16, /256 m), rgb/*.png."""
    folder = root / 'tiny_gt'
    (folder / 'depth').mkdir(parents=True)
    (folder / 'rgb').mkdir()
    fx, fy, cx, cy = frames[0].camera.intrinsics()
    (folder / 'intrinsics.json').write_text(json.dumps(
        {'fx': fx, 'fy': fy, 'cx': cx, 'cy': cy, 'depth_png_scale': 256.0}))
    for i, frame in enumerate(frames):
        depth = np.where(np.isfinite(frame.depth), frame.depth * 256.0, 0.0)
        Image.fromarray(np.clip(np.round(depth), 0, 65535).astype(np.uint16)).save(
            folder / 'depth' / f'sync_depth_{i:05d}.png')
        Image.fromarray(frame.rgb).save(folder / 'rgb' / f'rgb_{i:05d}.png')
    return folder


def _write_lidar_dataset(root, frame):
    """KITTI-object-style: calib.json (P2 4×4, lidar2cam_rect), scan .bin (x y z r), image."""
    folder = root / 'tiny_lidar'
    folder.mkdir()
    P2 = np.eye(4)
    P2[:3, :3] = frame.camera.K
    (folder / 'calib.json').write_text(json.dumps({
        'width': WIDTH, 'height': HEIGHT, 'P2_cam2img': P2.tolist(),
        'lidar2cam_rect': np.asarray(frame.T_cam_lidar).tolist()}))
    scan = np.concatenate([frame.lidar_points, np.ones((len(frame.lidar_points), 1))], axis=1)
    scan.astype(np.float32).tofile(folder / '000001.bin')
    Image.fromarray(frame.rgb).save(folder / '000001.png')
    return folder


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp('data')
    frames = [make_frame(seed=s, kind='indoor', width=WIDTH, height=HEIGHT, beams=32)
              for s in (0, 1)]
    _write_gt_dataset(root, frames)
    lidar_frame = make_frame(seed=2, kind='outdoor', width=WIDTH, height=HEIGHT, beams=32)
    _write_lidar_dataset(root, lidar_frame)
    return root, frames, lidar_frame


def _run(argv, capsys):
    parser = argparse.ArgumentParser()
    evaluation.add_arguments(parser)
    rc = evaluation.run(parser.parse_args(argv))
    out = capsys.readouterr().out
    rows = {}
    for line in out.splitlines():
        parts = line.split()
        if parts and '/' in parts[0] and len(parts) >= 13:
            rows[parts[0]] = {'points': int(parts[2]), 'abs_rel': float(parts[4]),
                              'delta1': float(parts[5]), 'rmse': float(parts[6]),
                              'coverage': float(parts[7]), 'oracle_abs_rel': float(parts[8]),
                              'lidar_abs_rel': float(parts[10]),
                              'lidar_delta1': float(parts[11]), 'status': parts[12]}
    return rc, out, rows


EXPECTED = {'tiny_gt/rgb_00000', 'tiny_gt/rgb_00001', 'tiny_lidar/000001'}


@pytest.mark.parametrize('space', ['depth', 'disparity'])
def test_perturbed_ground_truth_runs_the_whole_chain(dataset, capsys, space):
    root, _, _ = dataset
    rc, out, rows = _run(['--data', str(root), '--space', space, '--points', '300',
                          '--noise', '0.005'], capsys)
    assert rc == 0, out
    assert set(rows) == EXPECTED, out
    for label, row in rows.items():
        assert row['status'] == 'ok', out
        assert row['abs_rel'] < 0.05 and row['delta1'] > 0.95, out
        assert row['coverage'] == 1.0 and 0.0 < row['rmse'] < 1.0, out
        # The robust sparse fit is about as good as the dense oracle fit.
        assert row['abs_rel'] < 1.3 * row['oracle_abs_rel'] + 0.005, out
        # A nearly exact relative map carries more than the sparse points alone.
        assert 0.0 < row['abs_rel'] < row['lidar_abs_rel'] < 1.0, out
        assert 0.0 < row['lidar_delta1'] <= 1.0, out
    # 300 samples; the see-through filter may drop a few at depth edges.
    assert 270 <= rows['tiny_gt/rgb_00000']['points'] <= 300
    assert rows['tiny_lidar/000001']['points'] > 500
    assert 'mean (3/3 ok)' in out


def test_scanline_pattern(dataset, capsys):
    root, _, _ = dataset
    rc, out, rows = _run(['--data', str(root), '--pattern', 'scanlines'], capsys)
    assert rc == 0 and all(r['status'] == 'ok' for r in rows.values()), out


def _prediction(depth, space, shape):
    """Return an exact relative prediction at another resolution (nearest resize)."""
    known = np.isfinite(depth)
    y = np.where(known, depth, np.nan) if space == 'depth' else \
        np.where(known, 1.0 / np.where(known, depth, 1.0), 0.0)
    if space == 'depth':
        y = np.where(known, y, np.nanmax(y))
    y = (y - y.min()) / (y.max() - y.min())
    h, w = shape
    rows = ((np.arange(h) + 0.5) * depth.shape[0] / h).astype(int)
    cols = ((np.arange(w) + 0.5) * depth.shape[1] / w).astype(int)
    return y[rows][:, cols].astype(np.float32)


def test_prediction_files_at_another_resolution(dataset, capsys, tmp_path):
    root, frames, lidar_frame = dataset
    preds = tmp_path / 'preds'
    (preds / 'tiny_gt').mkdir(parents=True)
    for i, frame in enumerate(frames):
        np.save(preds / 'tiny_gt' / f'rgb_{i:05d}.npy',
                _prediction(frame.depth, 'disparity', (60, 80)))
    np.save(preds / '000001.npy', _prediction(lidar_frame.depth, 'disparity', (60, 80)))
    rc, out, rows = _run(['--data', str(root), '--predictions', str(preds),
                          '--space', 'disparity'], capsys)
    assert rc == 0, out
    assert set(rows) == EXPECTED and 'prediction' in out
    for row in rows.values():
        # Exact up to the 2× nearest-neighbour resampling at depth edges.
        assert row['status'] == 'ok' and row['abs_rel'] < 0.05, out

    # A prediction unrelated to the scene must not look good.
    rng = np.random.default_rng(0)
    for i in range(2):
        np.save(preds / 'tiny_gt' / f'rgb_{i:05d}.npy',
                rng.random((60, 80)).astype(np.float32))
    rc, out, rows = _run(['--data', str(root), '--predictions', str(preds),
                          '--space', 'disparity'], capsys)
    for label in ('tiny_gt/rgb_00000', 'tiny_gt/rgb_00001'):
        assert rows[label]['status'] != 'ok' or rows[label]['abs_rel'] > 0.2, out


def test_empty_and_bad_folders(tmp_path, capsys):
    with pytest.raises(UserError, match='no frames found') as caught:
        _run(['--data', str(tmp_path)], capsys)
    assert caught.value.subject == tmp_path
    with pytest.raises(UserError, match='not a folder'):
        _run(['--data', str(tmp_path / 'missing')], capsys)
    with pytest.raises(UserError, match='predictions'):
        _run(['--data', str(tmp_path), '--predictions', str(tmp_path / 'missing')], capsys)


def test_unknown_calibration_layout_is_named(tmp_path, capsys):
    folder = tmp_path / 'odd'
    folder.mkdir()
    (folder / 'calib.json').write_text(json.dumps({'width': 10, 'height': 10, 'K': []}))
    np.zeros(8, dtype=np.float32).tofile(folder / 'scan.bin')
    with pytest.raises(UserError, match='calib.json layout') as caught:
        _run(['--data', str(tmp_path)], capsys)
    assert caught.value.subject == folder / 'calib.json'


def _copy(dataset_root, tmp_path):
    target = tmp_path / 'data'
    shutil.copytree(dataset_root, target)
    return target


def _corrupt_depth(root):
    (root / 'tiny_gt' / 'depth' / 'sync_depth_00001.png').write_bytes(b'\x89PNG\r\n\x1a\n')
    return root / 'tiny_gt' / 'depth' / 'sync_depth_00001.png'


def _bad_intrinsics(root):
    (root / 'tiny_gt' / 'intrinsics.json').write_text('{"fx": 100, "fy": ')
    return root / 'tiny_gt' / 'intrinsics.json'


def _intrinsics_without_cx(root):
    path = root / 'tiny_gt' / 'intrinsics.json'
    meta = json.loads(path.read_text())
    del meta['cx']
    path.write_text(json.dumps(meta))
    return path


def _colour_depth(root):
    path = root / 'tiny_gt' / 'depth' / 'sync_depth_00000.png'
    Image.fromarray(np.zeros((HEIGHT, WIDTH, 3), np.uint8)).save(path)
    return path


def _empty_depth(root):
    path = root / 'tiny_gt' / 'depth' / 'sync_depth_00000.png'
    Image.fromarray(np.zeros((HEIGHT, WIDTH), np.uint16)).save(path)
    return path


def _missing_depth(root):
    path = root / 'tiny_gt' / 'depth' / 'sync_depth_00000.png'
    path.unlink()
    path.symlink_to(root / 'nowhere.png')    # listed, but the file is gone
    return path


def _bad_calib(root):
    (root / 'tiny_lidar' / 'calib.json').write_text('not json')
    return root / 'tiny_lidar' / 'calib.json'


def _calib_with_2x2_transform(root):
    path = root / 'tiny_lidar' / 'calib.json'
    calib = json.loads(path.read_text())
    calib['lidar2cam_rect'] = [[1, 0], [0, 1]]
    path.write_text(json.dumps(calib))
    return path


def _calib_without_size_or_image(root):
    path = root / 'tiny_lidar' / 'calib.json'
    calib = json.loads(path.read_text())
    del calib['width'], calib['height']
    path.write_text(json.dumps(calib))
    (root / 'tiny_lidar' / '000001.png').unlink()
    return root / 'tiny_lidar' / '000001.bin'


def _short_scan(root):
    path = root / 'tiny_lidar' / '000001.bin'
    path.write_bytes(path.read_bytes()[:-4])
    return path


BAD_FILES = {
    'corrupt-depth-png': (_corrupt_depth, 1, 'cannot read as an image'),
    'colour-depth-png': (_colour_depth, 1, 'one integer channel'),
    'depth-png-without-pixels': (_empty_depth, 1, 'fewer than 2 known pixels'),
    'missing-depth-png': (_missing_depth, 1, 'cannot read: No such file'),
    'intrinsics-not-json': (_bad_intrinsics, 2, 'cannot parse as JSON'),
    'intrinsics-without-cx': (_intrinsics_without_cx, 2, 'no "cx"'),
    'calib-not-json': (_bad_calib, 1, 'cannot parse as JSON'),
    'calib-2x2-transform': (_calib_with_2x2_transform, 1, 'the lidar-to-camera transform'),
    'calib-without-size-or-image': (_calib_without_size_or_image, 1, 'no width/height'),
    'scan-not-whole-records': (_short_scan, 1, 'not a positive multiple of 4'),
}


@pytest.mark.parametrize('case', sorted(BAD_FILES))
def test_a_bad_file_skips_its_frames_and_names_the_file(case, dataset, tmp_path, capsys):
    """The bad file is named once on stderr, its frames are skipped, the others evaluated."""
    spoil, n_skipped, what = BAD_FILES[case]
    root = _copy(dataset[0], tmp_path)
    bad = spoil(root)
    parser = argparse.ArgumentParser()
    evaluation.add_arguments(parser)
    with pytest.raises(UserError) as caught:
        evaluation.run(parser.parse_args(['--data', str(root), '--points', '300']))
    captured = capsys.readouterr()
    assert str(caught.value) == (f'{n_skipped} of 3 frames skipped (each reported above), '
                                 f'the first ({bad})')
    errors = captured.err.splitlines()
    assert len(errors) == 1, captured.err
    assert errors[0].startswith('densepred evaluate-alignment: error: '), errors
    assert what in errors[0], errors
    assert errors[0].endswith(f'({bad})'), errors
    statuses = [line.split()[-1] if 'skipped' not in line else 'skipped'
                for line in captured.out.splitlines() if line.startswith('tiny_')]
    assert statuses.count('skipped') == n_skipped and len(statuses) == 3, captured.out
    assert statuses.count('ok') == 3 - n_skipped, captured.out
    assert f'mean ({3 - n_skipped}/3 ok)' in captured.out


def _write_prediction(preds, name, payload):
    path = preds / f'{name}.npy'
    if isinstance(payload, bytes):
        path.write_bytes(payload)
    else:
        np.save(path, payload)
    return path


@pytest.mark.parametrize('payload, what', [
    (b'\x93NUMPY\x01\x00v\x00{', 'cannot read as a .npy array'),
    (b'plain text, not numpy', 'cannot read as a .npy array'),
    (np.zeros((2, 60, 80), np.float32), 'must be H×W'),
    (np.array([['a', 'b'], ['c', 'd']]), 'must be numbers'),
])
def test_a_bad_prediction_file_is_named(payload, what, dataset, tmp_path, capsys):
    root, _, _ = dataset
    preds = tmp_path / 'preds'
    preds.mkdir()
    bad = _write_prediction(preds, '000001', payload)
    parser = argparse.ArgumentParser()
    evaluation.add_arguments(parser)
    with pytest.raises(UserError, match='1 of 3 frames skipped'):
        evaluation.run(parser.parse_args(['--data', str(root), '--predictions', str(preds)]))
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith('densepred evaluate-alignment: error: '), err
    assert what in err[0] and err[0].endswith(f'({bad})'), err


def test_a_single_bad_frame_is_one_error(dataset, tmp_path, capsys):
    root = _copy(dataset[0], tmp_path)
    shutil.rmtree(root / 'tiny_gt')
    bad = _short_scan(root)
    with pytest.raises(UserError, match='not a positive multiple') as caught:
        _run(['--data', str(root)], capsys)
    assert caught.value.subject == bad


def test_a_bug_is_not_a_user_error(dataset, monkeypatch, capsys):
    """Only reading and parsing are mapped: an error in the computation keeps its type."""
    monkeypatch.setattr(evaluation, 'align', lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        _run(['--data', str(dataset[0])], capsys)


def test_lidar_only_depth_interpolates_inside_and_extends_outside():
    rng = np.random.default_rng(3)
    h, w = 40, 50
    uv = np.stack([rng.integers(10, 40, 60), rng.integers(8, 32, 60)], axis=1)

    def plane(u, v):
        return 5.0 + 0.1 * u - 0.05 * v
    z = plane(uv[:, 0], uv[:, 1])
    out = evaluation.lidar_only_depth(uv, z, (h, w))
    assert out.shape == (h, w) and out.dtype == np.float32 and np.isfinite(out).all()
    # Linear interpolation is exact for a function linear in the pixels inside the hull.
    v, u = np.mgrid[0:h, 0:w]
    inside = (u >= 20) & (u <= 30) & (v >= 15) & (v <= 25)
    np.testing.assert_allclose(out[inside], plane(u, v)[inside], rtol=1e-5)
    # Outside the hull: the nearest point's depth (the corner pixel is far outside).
    nearest = np.argmin((uv[:, 0] - 0) ** 2 + (uv[:, 1] - 0) ** 2)
    assert out[0, 0] == pytest.approx(z[nearest], rel=1e-6)
    assert out.min() >= z.min() - 1e-4 and out.max() <= z.max() + 1e-4


def test_lidar_only_depth_degenerate_inputs():
    shape = (10, 12)
    # Bad depths are ignored; none left: NaN everywhere.
    nothing = evaluation.lidar_only_depth(np.array([[1, 1], [2, 2]]),
                                          np.array([np.nan, -1.0]), shape)
    assert np.isnan(nothing).all()
    # Two points (no triangle) and collinear points: nearest neighbour, no exception.
    two = evaluation.lidar_only_depth(np.array([[0, 0], [11, 9]]), np.array([2.0, 4.0]), shape)
    assert two[0, 0] == 2.0 and two[9, 11] == 4.0 and set(np.unique(two)) == {2.0, 4.0}
    line = evaluation.lidar_only_depth(np.array([[0, 5], [5, 5], [11, 5]]),
                                       np.array([1.0, 2.0, 3.0]), shape)
    assert line[0, 1] == 1.0 and line[9, 11] == 3.0
    # Repeated pixels: their mean.
    dup = evaluation.lidar_only_depth(np.array([[3, 3], [3, 3]]), np.array([2.0, 4.0]), shape)
    assert np.all(dup == 3.0)
