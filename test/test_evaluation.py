"""`densepred evaluate-alignment` on a tiny generated dataset in the real data's layout."""

import argparse
import json

from densepred_ros import evaluation
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
        if parts and '/' in parts[0] and len(parts) >= 11:
            rows[parts[0]] = {'points': int(parts[2]), 'abs_rel': float(parts[4]),
                              'delta1': float(parts[5]), 'rmse': float(parts[6]),
                              'coverage': float(parts[7]), 'oracle_abs_rel': float(parts[8]),
                              'status': parts[10]}
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
    rc, out, rows = _run(['--data', str(tmp_path)], capsys)
    assert rc == 1 and 'no datasets' in out
    with pytest.raises(ValueError, match='not a folder'):
        _run(['--data', str(tmp_path / 'missing')], capsys)
    with pytest.raises(ValueError, match='predictions'):
        _run(['--data', str(tmp_path), '--predictions', str(tmp_path / 'missing')], capsys)


def test_unknown_calibration_layout_is_named(tmp_path, capsys):
    folder = tmp_path / 'odd'
    folder.mkdir()
    (folder / 'calib.json').write_text(json.dumps({'width': 10, 'height': 10, 'K': []}))
    np.zeros(8, dtype=np.float32).tofile(folder / 'scan.bin')
    with pytest.raises(ValueError, match='calib.json layout'):
        _run(['--data', str(tmp_path)], capsys)
