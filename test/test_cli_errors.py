"""The error policy of every `densepred` command (densepred_ros.cli_errors).

A user mistake or a bad input ends with exit code 2 and one line
`densepred <command>: error: <what> (<path or value>)` on stderr, without a traceback;
a bug keeps its traceback; --debug / DENSEPRED_DEBUG show tracebacks for everything.

`BAD` is the table of bad invocations: a new command adds its rows there.
"""

import errno
import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import textwrap
from typing import Callable, Dict, List, NamedTuple

from densepred_ros import cli
from densepred_ros.cli import main
from densepred_ros.cli_errors import EXIT_INTERRUPTED, EXIT_USER, run_command, UserError
from densepred_ros.testing import write_tiny_lotus
import numpy as np
from PIL import Image
import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO_DEPTH = REPO / 'densepred_ros' / 'demo_models' / 'lotus-depth-demo'


def _image(path: Path, height: int = 40, width: int = 56, seed: int = 0) -> Path:
    rgb = (np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(path)
    return path


@pytest.fixture(scope='module')
def files(checkpoints, tmp_path_factory) -> Dict[str, str]:
    """Bad (and a few good) inputs, by name: every path a row may use."""
    root = tmp_path_factory.mktemp('bad_inputs')
    (root / 'notes.png').write_text('these are notes, not a picture\n')
    # An MP4 header (ISO base media 'ftyp' box) under an image name, and under its own.
    mp4 = b'\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom' + bytes(64)
    (root / 'clip.png').write_bytes(mp4)
    (root / 'clip.mp4').write_bytes(mp4)
    good = _image(root / 'good.png')
    _image(root / 'tiny.png', 4, 4)
    _image(root / 'wide.png', 70, 100)
    (root / 'empty_folder').mkdir()
    (root / 'not_a_checkpoint').mkdir()
    (root / 'same').mkdir()
    _image(root / 'same' / 'a.png')
    _image(root / 'same' / 'a.jpg')
    truncated = write_tiny_lotus(root / 'truncated', variant='d', space='disparity')
    weights = next((truncated / 'unet').glob('*.safetensors'))
    weights.write_bytes(weights.read_bytes()[:200])
    images = root / 'images_with_notes'
    images.mkdir()
    (images / 'notes.png').write_text('not a picture')
    (root / 'no_vae').mkdir()
    export = root / 'export_64'
    from densepred_ros.models.export import export_lotus
    export_lotus(str(checkpoints['lotus_d']), 64, 64, export, components=['unet'],
                 log=lambda *_: None)
    paths = {name: str(root / name) for name in (
        'notes.png', 'clip.png', 'clip.mp4', 'tiny.png', 'wide.png', 'empty_folder',
        'not_a_checkpoint', 'same', 'images_with_notes', 'no_vae', 'export_64')}
    paths.update(_evaluation_data(root / 'eval'))
    paths.update(_training_data(root / 'train'))
    paths.update(root=str(root), good=str(good), truncated=str(truncated),
                 out=str(root / 'out'), missing=str(root / 'missing.png'),
                 missing_folder=str(root / 'no_such_folder'),
                 nothing=str(root / 'nothing_*.png'), json_dir=str(root))
    paths.update({k: str(v) for k, v in checkpoints.items()})
    return paths


def _evaluation_data(root: Path) -> Dict[str, str]:
    """One-frame datasets for evaluate-alignment, each with one bad file; by name."""
    paths = {}
    for name in ('corrupt_depth', 'missing_depth', 'bad_intrinsics'):
        folder = root / name
        (folder / 'depth').mkdir(parents=True)
        (folder / 'intrinsics.json').write_text(json.dumps(
            {'fx': 50.0, 'fy': 50.0, 'cx': 28.0, 'cy': 20.0, 'depth_png_scale': 256.0}))
        depth = folder / 'depth' / '0001.png'
        Image.fromarray(np.full((40, 56), 1000, np.uint16)).save(depth)
        paths[f'eval_{name}'] = str(folder)
    corrupt = root / 'corrupt_depth' / 'depth' / '0001.png'
    corrupt.write_bytes(corrupt.read_bytes()[:60])            # a truncated PNG
    missing = root / 'missing_depth' / 'depth' / '0001.png'
    missing.unlink()
    missing.symlink_to(root / 'moved_away.png')                # listed, but gone
    (root / 'bad_intrinsics' / 'intrinsics.json').write_text('{"fx": 50.0, "fy": ')
    lidar = root / 'bad_calib'
    lidar.mkdir()
    (lidar / 'calib.json').write_text(json.dumps({'width': 56, 'height': 40,
                                                  'cam2img_K': [[50, 0, 28], [0, 50]],
                                                  'lidar2cam': np.eye(4).tolist()}))
    np.ones(40, np.float32).tofile(lidar / '0001.bin')
    paths.update(eval_bad_calib=str(lidar), eval_corrupt_depth_file=str(corrupt),
                 eval_missing_depth_file=str(missing),
                 eval_intrinsics_file=str(root / 'bad_intrinsics' / 'intrinsics.json'),
                 eval_calib_file=str(lidar / 'calib.json'))
    return paths


def _training_data(root: Path) -> Dict[str, str]:
    """Training data folders (a good frame, then a bad one) for train --data; by name."""
    rng = np.random.default_rng(0)

    def good(folder: Path) -> None:
        folder.mkdir(parents=True)
        np.savez(folder / 'a.npz', rgb=rng.integers(0, 256, (32, 48, 3), dtype=np.uint8),
                 depth=rng.uniform(1, 5, (32, 48)).astype(np.float32))

    good(root / 'corrupt_npz')
    (root / 'corrupt_npz' / 'b.npz').write_bytes(b'PK\x03\x04 not really a zip archive')
    good(root / 'npz_without_rgb')
    np.savez(root / 'npz_without_rgb' / 'b.npz', depth=np.ones((32, 48), np.float32))
    good(root / 'without_depth')
    np.savez(root / 'without_depth' / 'b.npz', rgb=np.zeros((32, 48, 3), np.uint8))
    images = root / 'bad_depth_npy'
    images.mkdir()
    for stem in ('a', 'b'):
        _image(images / f'{stem}.png', 32, 48)
    np.save(images / 'a_depth.npy', np.ones((32, 48), np.float32))
    (images / 'b_depth.npy').write_bytes(b'\x93NUMPY\x01\x00')        # a cut-off header
    return {
        'train_corrupt_npz': str(root / 'corrupt_npz'),
        'train_corrupt_npz_file': str(root / 'corrupt_npz' / 'b.npz'),
        'train_npz_without_rgb': str(root / 'npz_without_rgb'),
        'train_npz_without_rgb_file': str(root / 'npz_without_rgb' / 'b.npz'),
        'train_without_depth': str(root / 'without_depth'),
        'train_without_depth_file': str(root / 'without_depth' / 'b.npz'),
        'train_bad_depth_npy': str(images),
        'train_bad_depth_npy_file': str(images / 'b_depth.npy'),
    }


def _train_data(f, name):
    return ['train', '--output', f['out'], '--no-progress', '--data', f[name]]


class Row(NamedTuple):
    """One bad invocation: argv (from the `files` names), and what the line must name."""

    name: str
    argv: Callable[[Dict[str, str]], List[str]]
    names: Callable[[Dict[str, str]], str]
    code: int = EXIT_USER


def _predict(f, *extra, model='lotus_d', inputs=('good',)):
    return ['predict', '--model', f[model] if model in f else model, '--input',
            *[f.get(i, i) for i in inputs], '--output', f['out'], '--device', 'cpu',
            '--processing-resolution', '32', *extra]


BAD = [
    # predict: bad input files
    Row('predict-text-as-png', lambda f: _predict(f, inputs=['notes.png']),
        lambda f: f['notes.png']),
    Row('predict-video-named-png', lambda f: _predict(f, inputs=['clip.png']),
        lambda f: f['clip.png']),
    Row('predict-video', lambda f: _predict(f, inputs=['clip.mp4']), lambda f: f['clip.mp4']),
    Row('predict-missing-input', lambda f: _predict(f, inputs=['missing']),
        lambda f: f['missing']),
    Row('predict-too-small', lambda f: _predict(f, inputs=['tiny.png']),
        lambda f: f['tiny.png']),
    Row('predict-empty-folder', lambda f: _predict(f, inputs=['empty_folder']),
        lambda f: f['empty_folder']),
    Row('predict-glob-matches-nothing', lambda f: _predict(f, inputs=['nothing']),
        lambda f: f['nothing']),
    Row('predict-same-stem-twice', lambda f: _predict(f, inputs=['same']), lambda f: 'a.jpg'),
    Row('predict-unwritable-output',
        lambda f: _predict(f)[:5] + ['--output', '/proc/nope'], lambda f: '/proc/nope'),
    # predict: the model and its options
    Row('predict-not-a-checkpoint', lambda f: _predict(f, model='not_a_checkpoint'),
        lambda f: f['not_a_checkpoint']),
    Row('predict-missing-model', lambda f: _predict(f, model='missing_folder'),
        lambda f: f['missing_folder']),
    Row('predict-truncated-weights', lambda f: _predict(f, model='truncated'),
        lambda f: f['truncated']),
    Row('predict-wrong-family', lambda f: _predict(f, '--family', 'marigold'),
        lambda f: f['lotus_d']),
    Row('predict-wrong-space', lambda f: _predict(f, '--space', 'normals'),
        lambda f: f['lotus_d']),
    Row('predict-marigold-as-lotus',
        lambda f: _predict(f, '--family', 'lotus', model='marigold_depth'),
        lambda f: f['marigold_depth']),
    Row('predict-negative-resolution', lambda f: _predict(f, '--processing-resolution', '-5'),
        lambda f: '-5'),
    Row('predict-bad-dtype', lambda f: _predict(f, '--dtype', 'fp8'), lambda f: 'fp8'),
    Row('predict-bad-device', lambda f: _predict(f, '--device', 'tpu'), lambda f: 'tpu'),
    Row('predict-bad-backend', lambda f: _predict(f, '--backend', 'vulkan'),
        lambda f: 'vulkan'),
    Row('predict-backend-without-export', lambda f: _predict(f, '--backend', 'onnxruntime'),
        lambda f: "'onnxruntime' needs export_dir"),
    Row('predict-export-dir-not-an-export',
        lambda f: _predict(f, '--backend', 'unet=onnxruntime', '--export-dir',
                           f['empty_folder']), lambda f: f['empty_folder']),
    Row('predict-export-for-another-size',
        lambda f: _predict(f, '--backend', 'unet=onnxruntime', '--export-dir', f['export_64'],
                           '--processing-resolution', '0', inputs=['wide.png']),
        lambda f: f['wide.png']),
    Row('predict-export-of-another-variant',
        lambda f: _predict(f, '--backend', 'unet=onnxruntime', '--export-dir', f['export_64'],
                           model='lotus_g'), lambda f: f['export_64']),
    # export
    Row('export-marigold', lambda f: ['export', '--model', f['marigold_depth'], '--height',
                                      '64', '--width', '64', '--output', f['out']],
        lambda f: f['marigold_depth']),
    Row('export-bad-components', lambda f: ['export', '--model', f['lotus_d'], '--height', '64',
                                            '--width', '64', '--output', f['out'],
                                            '--components', 'text_encoder'],
        lambda f: 'text_encoder'),
    Row('export-no-size', lambda f: ['export', '--model', f['lotus_d'], '--output', f['out']],
        lambda f: '--image-size'),
    Row('export-unwritable-output', lambda f: ['export', '--model', f['lotus_d'], '--height',
                                               '64', '--width', '64', '--output', '/proc/nope'],
        lambda f: '/proc/nope'),
    Row('export-not-a-checkpoint', lambda f: ['export', '--model', f['not_a_checkpoint'],
                                              '--height', '64', '--width', '64', '--output',
                                              f['out']], lambda f: f['not_a_checkpoint']),
    # bench (fails before any timing)
    Row('bench-bad-resolutions', lambda f: ['bench', '--tiny', '--resolutions', '12'],
        lambda f: '12'),
    Row('bench-unknown-config', lambda f: ['bench', '--tiny', '--configs', 'ours,fastest'],
        lambda f: 'fastest'),
    Row('bench-no-repeats', lambda f: ['bench', '--tiny', '--repeats', '0'], lambda f: '0'),
    Row('bench-unwritable-json', lambda f: ['bench', '--tiny', '--json', '/proc/nope/b.json'],
        lambda f: '/proc/nope'),
    Row('bench-json-is-a-folder', lambda f: ['bench', '--tiny', '--json', f['json_dir']],
        lambda f: f['json_dir']),
    # demo (fails before the node starts, except the unreadable image)
    Row('demo-not-a-checkpoint', lambda f: ['demo', '--model', f['not_a_checkpoint'],
                                            '--output', f['out']],
        lambda f: f['not_a_checkpoint']),
    Row('demo-missing-images', lambda f: ['demo', '--images', f['missing_folder'], '--output',
                                          f['out']], lambda f: f['missing_folder']),
    Row('demo-text-as-image', lambda f: ['demo', '--model', f['lotus_g'], '--images',
                                         f['images_with_notes'], '--output', f['out']],
        lambda f: f['images_with_notes']),
    Row('demo-no-frames', lambda f: ['demo', '--frames', '0', '--output', f['out']],
        lambda f: '0'),
    Row('demo-unwritable-output', lambda f: ['demo', '--output', '/proc/nope'],
        lambda f: '/proc/nope'),
    # evaluate-alignment
    Row('evaluate-missing-data', lambda f: ['evaluate-alignment', '--data',
                                            f['missing_folder']],
        lambda f: f['missing_folder']),
    Row('evaluate-missing-predictions',
        lambda f: ['evaluate-alignment', '--data', f['empty_folder'], '--predictions',
                   f['missing_folder']], lambda f: f['missing_folder']),
    Row('evaluate-one-point', lambda f: ['evaluate-alignment', '--data', f['empty_folder'],
                                         '--points', '1'], lambda f: '1'),
    Row('evaluate-no-frames', lambda f: ['evaluate-alignment', '--data', f['empty_folder']],
        lambda f: f['empty_folder']),
    Row('evaluate-truncated-depth-png',
        lambda f: ['evaluate-alignment', '--data', f['eval_corrupt_depth']],
        lambda f: f['eval_corrupt_depth_file']),
    Row('evaluate-depth-png-gone',
        lambda f: ['evaluate-alignment', '--data', f['eval_missing_depth']],
        lambda f: f['eval_missing_depth_file']),
    Row('evaluate-intrinsics-not-json',
        lambda f: ['evaluate-alignment', '--data', f['eval_bad_intrinsics']],
        lambda f: f['eval_intrinsics_file']),
    Row('evaluate-calib-bad-matrix',
        lambda f: ['evaluate-alignment', '--data', f['eval_bad_calib']],
        lambda f: f['eval_calib_file']),
    # train (fails before any training)
    Row('train-missing-data', lambda f: ['train', '--output', f['out'], '--data',
                                         f['missing_folder']], lambda f: f['missing_folder']),
    Row('train-data-without-frames', lambda f: ['train', '--output', f['out'], '--data',
                                                f['empty_folder']],
        lambda f: f['empty_folder']),
    Row('train-unknown-model-config', lambda f: ['train', '--output', f['out'],
                                                 '--model-config', 'lotus_huge'],
        lambda f: 'lotus_huge'),
    Row('train-zero-steps', lambda f: ['train', '--output', f['out'], '--steps', '0'],
        lambda f: '0'),
    Row('train-resolution-not-multiple-of-8',
        lambda f: ['train', '--output', f['out'], '--resolution', '30', '40'],
        lambda f: '30 40'),
    Row('train-missing-init', lambda f: ['train', '--output', f['out'], '--init',
                                         f['missing_folder']], lambda f: f['missing_folder']),
    Row('train-vae-without-vae', lambda f: ['train', '--output', f['out'], '--vae',
                                            f['no_vae']], lambda f: f['no_vae']),
    Row('train-unwritable-output', lambda f: ['train', '--output', '/proc/nope'],
        lambda f: '/proc/nope'),
    # train: a bad file inside --data (found when the frames are loaded, before training)
    Row('train-corrupt-npz', lambda f: _train_data(f, 'train_corrupt_npz'),
        lambda f: f['train_corrupt_npz_file']),
    Row('train-npz-without-rgb', lambda f: _train_data(f, 'train_npz_without_rgb'),
        lambda f: f['train_npz_without_rgb_file']),
    Row('train-frame-without-the-depth-others-have',
        lambda f: _train_data(f, 'train_without_depth'),
        lambda f: f['train_without_depth_file']),
    Row('train-cut-off-depth-npy', lambda f: _train_data(f, 'train_bad_depth_npy'),
        lambda f: f['train_bad_depth_npy_file']),
    # bag and evaluate-bag
    Row('bag-missing-input', lambda f: ['bag', f['missing_folder'], f['out'], '--model',
                                        f['lotus_d']], lambda f: f['missing_folder']),
    Row('bag-folder-is-no-bag', lambda f: ['bag', f['empty_folder'], f['out'], '--model',
                                           f['lotus_d']], lambda f: f['empty_folder']),
    Row('bag-every-zero', lambda f: ['bag', f['empty_folder'], f['out'], '--model',
                                     f['lotus_d'], '--every', '0'], lambda f: '0'),
    Row('bag-output-exists', lambda f: ['bag', f['empty_folder'], f['root'], '--model',
                                        f['lotus_d']], lambda f: f['root']),
    Row('evaluate-bag-missing', lambda f: ['evaluate-bag', f['missing_folder'],
                                           '--depth-topic', '/d', '--truth-topic', '/t'],
        lambda f: f['missing_folder']),
    Row('evaluate-bag-folder-is-no-bag',
        lambda f: ['evaluate-bag', f['empty_folder'], '--depth-topic', '/d',
                   '--truth-topic', '/t'], lambda f: f['empty_folder']),
]


def _check_line(err: str, command: str, names: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert 'Traceback' not in err, err
    assert lines, 'nothing on stderr'
    assert len([line for line in lines if ': error:' in line]) == 1, err
    line = lines[-1]
    assert line.startswith(f'densepred {command}: error: '), err
    assert names in line, (names, line)


@pytest.mark.parametrize('row', BAD, ids=[r.name for r in BAD])
def test_bad_invocation_is_one_line(row, files, capsys):
    argv = row.argv(files)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == row.code, err
    _check_line(err, argv[0], row.names(files))


def test_the_table_covers_every_command():
    commands = set(cli.build_parser()._subparsers._group_actions[0].choices)
    assert commands <= {_command(r) for r in BAD}
    assert len(BAD) >= 25


def _command(row: Row) -> str:
    return row.argv({k: k for k in _FILE_NAMES})[0]


_FILE_NAMES = (
    'notes.png', 'clip.png', 'clip.mp4', 'tiny.png', 'wide.png', 'empty_folder',
    'not_a_checkpoint', 'same', 'images_with_notes', 'no_vae', 'export_64', 'root', 'good',
    'truncated', 'out', 'missing', 'missing_folder', 'nothing', 'json_dir', 'lotus_g',
    'lotus_d', 'lotus_normals', 'marigold_depth', 'marigold_normals', 'eval_corrupt_depth',
    'eval_missing_depth', 'eval_bad_intrinsics', 'eval_bad_calib', 'train_corrupt_npz',
    'train_npz_without_rgb', 'train_without_depth', 'train_bad_depth_npy')


def _subprocess(argv, env=None, **kwargs):
    environment = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run([sys.executable, '-m', 'densepred_ros.cli', *argv],
                          capture_output=True, text=True, timeout=300, env=environment,
                          **kwargs)


@pytest.mark.parametrize('row_id', ['predict-text-as-png', 'predict-unwritable-output',
                                    'export-marigold', 'train-missing-data'])
def test_real_entry_point(row_id, files):
    row = next(r for r in BAD if r.name == row_id)
    argv = row.argv(files)
    result = _subprocess(argv)
    assert result.returncode == row.code, result.stderr
    _check_line(result.stderr, argv[0], row.names(files))


def test_usage_error_is_one_line(capsys):
    assert main(['predict', '--model']) == EXIT_USER
    err = capsys.readouterr().err
    _check_line(err, 'predict', '--model')


def test_many_inputs_skip_the_bad_ones(files, tmp_path, capsys):
    """A folder with good and bad files: the good ones are written, the bad ones named."""
    folder = tmp_path / 'mixed'
    folder.mkdir()
    for name in ('a', 'c'):
        _image(folder / f'{name}.png')
    (folder / 'b.png').write_text('not an image')
    (folder / 'readme.txt').write_text('ignored: not an image suffix')
    out = tmp_path / 'out'
    code = main(['predict', '--model', files['lotus_d'], '--input', str(folder),
                 files['clip.mp4'], '--output', str(out), '--processing-resolution', '32'])
    captured = capsys.readouterr()
    assert code == EXIT_USER
    assert 'Traceback' not in captured.err
    assert sorted(p.name for p in out.iterdir()) == ['a.npy', 'a.png', 'c.npy', 'c.png']
    errors = [line for line in captured.err.splitlines() if line]
    assert errors[0] == f'densepred predict: error: not an image file PIL can read ' \
                        f'({folder / "b.png"})'
    assert errors[1].startswith('densepred predict: error: a video') and 'clip.mp4' in errors[1]
    assert errors[2].startswith('densepred predict: error: 2 of 4 inputs skipped')
    assert len(errors) == 3
    assert '2 of 4 inputs written' in captured.out


def test_a_glob_pattern_is_expanded(files, tmp_path):
    for name in ('x1', 'x2', 'y'):
        _image(tmp_path / f'{name}.png')
    out = tmp_path / 'out'
    assert main(['predict', '--model', files['lotus_d'], '--input', str(tmp_path / 'x*.png'),
                 '--output', str(out), '--processing-resolution', '32']) == 0
    assert sorted(p.stem for p in out.glob('*.npy')) == ['x1', 'x2']


def test_full_disk_leaves_no_partial_file(files, tmp_path, monkeypatch, capsys):
    """ENOSPC while writing: one line naming the file, and no half-written output."""
    real_save = np.save

    def save_then_fill_the_disk(file, array, *args, **kwargs):
        with open(file, 'wb') as f:
            f.write(b'\x93NUMPY partial')
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))

    monkeypatch.setattr(np, 'save', save_then_fill_the_disk)
    out = tmp_path / 'out'
    code = main(['predict', '--model', files['lotus_d'], '--input', files['good'], '--output',
                 str(out), '--processing-resolution', '32'])
    monkeypatch.setattr(np, 'save', real_save)
    err = capsys.readouterr().err
    assert code == EXIT_USER
    _check_line(err, 'predict', str(out / 'good.npy'))
    assert 'No space left on device' in err
    assert list(out.iterdir()) == []


def test_full_disk_anywhere_is_a_user_error(capsys):
    def write(args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), '/data/run/log.jsonl')

    assert run_command('train', write, None) == EXIT_USER
    _check_line(capsys.readouterr().err, 'train', '/data/run/log.jsonl')


@pytest.mark.skipif(not Path('/dev/full').exists(), reason='needs /dev/full')
def test_a_real_full_device_is_a_user_error(capsys):
    """Writing to /dev/full fails with the kernel's own ENOSPC."""
    def write(args):
        with open('/dev/full', 'wb') as f:
            f.write(b'depth' * 1000)

    assert run_command('bag', write, None) == EXIT_USER
    err = capsys.readouterr().err
    assert err.startswith('densepred bag: error: cannot write: No space left on device (')
    assert 'Traceback' not in err


@pytest.mark.skipif(os.geteuid() == 0, reason='root reads files without read permission')
def test_unreadable_input_file(files, tmp_path, capsys):
    secret = _image(tmp_path / 'secret.png')
    secret.chmod(0)
    code = main(_predict(files, inputs=[str(secret)]))
    assert code == EXIT_USER
    _check_line(capsys.readouterr().err, 'predict', str(secret))


def test_help_is_not_an_error(capsys):
    assert main(['--help']) == 0
    assert 'evaluate-alignment' in capsys.readouterr().out


def test_ctrl_c_exits_130_and_keeps_only_complete_outputs(files, tmp_path, monkeypatch,
                                                          capsys):
    from densepred_ros.models.lotus import LotusPredictor
    real_predict = LotusPredictor.predict
    calls = []

    def interrupt_on_the_second(self, rgb):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_predict(self, rgb)

    monkeypatch.setattr(LotusPredictor, 'predict', interrupt_on_the_second)
    for name in ('a', 'b', 'c'):
        _image(tmp_path / f'{name}.png')
    out = tmp_path / 'out'
    code = main(['predict', '--model', files['lotus_d'], '--input', str(tmp_path / '*.png'),
                 '--output', str(out), '--processing-resolution', '32'])
    err = capsys.readouterr().err
    assert code == EXIT_INTERRUPTED
    assert err.strip().splitlines()[-1].startswith('densepred predict: interrupted; 1 of 3')
    assert 'Traceback' not in err
    assert sorted(p.name for p in out.iterdir()) == ['a.npy', 'a.png']


def test_sigint_of_the_real_process(files, tmp_path):
    """A real Ctrl-C (SIGINT) during a run of many images: exit 130, complete files only."""
    folder = tmp_path / 'many'
    folder.mkdir()
    for index in range(400):
        _image(folder / f'{index:03d}.png', seed=index)
    out = tmp_path / 'out'
    environment = dict(os.environ, PYTHONPATH=str(REPO))
    process = subprocess.Popen(
        [sys.executable, '-m', 'densepred_ros.cli', 'predict', '--model', files['lotus_d'],
         '--input', str(folder), '--output', str(out), '--processing-resolution', '32'],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
    try:
        for line in process.stdout:
            if '→' in line:
                break
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == EXIT_INTERRUPTED, err
    assert 'densepred predict: interrupted' in err and 'Traceback' not in err
    written = sorted(out.iterdir())
    assert 0 < len(written) < 800
    assert not [p for p in written if 'partial' in p.name]
    stems = {p.stem for p in written}
    for stem in stems:   # both outputs of every finished image, each readable
        assert np.load(out / f'{stem}.npy').shape == (40, 56)
        with Image.open(out / f'{stem}.png') as picture:
            picture.load()


def _divide_by_zero(*args, **kwargs):
    return 1 / 0


def test_a_bug_keeps_its_traceback(files, monkeypatch):
    from densepred_ros.models import runtime
    monkeypatch.setattr(runtime, 'rgb_to_tensor', _divide_by_zero)
    with pytest.raises(ZeroDivisionError):
        main(_predict(files))


def test_a_bug_keeps_its_traceback_in_the_real_process(files):
    script = textwrap.dedent(f"""
        import sys
        from densepred_ros import cli
        from densepred_ros.models import runtime
        runtime.rgb_to_tensor = lambda *a: 1 / 0
        sys.exit(cli.main({_predict(files)!r}))
    """)
    result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                            timeout=300, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert result.returncode == 1
    assert 'Traceback' in result.stderr and 'ZeroDivisionError' in result.stderr
    assert ': error:' not in result.stderr


@pytest.mark.parametrize('where', ['before', 'after', 'environment'])
def test_debug_shows_the_traceback_of_a_user_error(where, files, monkeypatch, capsys):
    argv = _predict(files, inputs=['notes.png'])
    if where == 'before':
        argv = ['--debug'] + argv
    elif where == 'after':
        argv = argv + ['--debug']
    else:
        monkeypatch.setenv('DENSEPRED_DEBUG', '1')
    assert main(argv) == EXIT_USER
    err = capsys.readouterr().err
    assert 'Traceback' in err and 'UnidentifiedImageError' in err
    assert err.strip().splitlines()[-1] == (
        f'densepred predict: error: not an image file PIL can read ({files["notes.png"]})')


def test_debug_off_by_default_and_with_zero(files, monkeypatch, capsys):
    monkeypatch.setenv('DENSEPRED_DEBUG', '0')
    assert main(_predict(files, inputs=['notes.png'])) == EXIT_USER
    assert 'Traceback' not in capsys.readouterr().err


def test_user_error_line():
    assert UserError('not an image', '/x/a.png').line('bag') == \
        'densepred bag: error: not an image (/x/a.png)'
    assert UserError('bag has no camera topic').line('bag') == \
        'densepred bag: error: bag has no camera topic'


def test_the_bundled_model_with_a_text_file(tmp_path, capsys):
    """The reproduction of the issue, with the bundled demo model."""
    notes = tmp_path / 'notes.png'
    notes.write_text('hello')
    code = main(['predict', '--model', str(DEMO_DEPTH), '--input', str(notes), '--output',
                 str(tmp_path / 'out')])
    assert code == EXIT_USER
    _check_line(capsys.readouterr().err, 'predict', str(notes))


def test_evaluate_many_frames_skip_the_bad_one(files, tmp_path, capsys):
    """Two datasets, one with a truncated depth PNG: the other is evaluated, exit 2."""
    import shutil
    data = tmp_path / 'data'
    shutil.copytree(files['eval_corrupt_depth'], data / 'bad')
    good = data / 'good'
    shutil.copytree(files['eval_corrupt_depth'], good)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(256, 5000, (40, 56)).astype(np.uint16)).save(
        good / 'depth' / '0001.png')
    code = main(['evaluate-alignment', '--data', str(data), '--points', '200'])
    captured = capsys.readouterr()
    assert code == EXIT_USER
    assert 'Traceback' not in captured.err
    bad = data / 'bad' / 'depth' / '0001.png'
    assert captured.err.splitlines() == [
        f'densepred evaluate-alignment: error: cannot read as an image: image file is '
        f'truncated ({bad})',
        f'densepred evaluate-alignment: error: 1 of 2 frames skipped (each reported above), '
        f'the first ({bad})']
    assert 'mean (1/2 ok)' in captured.out


def test_training_module_entry_point_follows_the_policy(files, capsys):
    """`python -m densepred_ros.training`: the same one-line errors, --debug, usage errors."""
    from densepred_ros.training.__main__ import main as training_main
    argv = _train_data(files, 'train_corrupt_npz')
    assert training_main(argv) == EXIT_USER
    _check_line(capsys.readouterr().err, 'train', files['train_corrupt_npz_file'])
    assert training_main(['evaluate-model', files['not_a_checkpoint']]) == EXIT_USER
    _check_line(capsys.readouterr().err, 'evaluate-model', files['not_a_checkpoint'])
    assert training_main(['--debug'] + argv) == EXIT_USER
    err = capsys.readouterr().err
    assert 'Traceback' in err and 'BadZipFile' in err
    assert training_main(['train']) == EXIT_USER
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and '--output' in err and 'Traceback' not in err
    assert training_main(['--help']) == 0


def test_training_module_real_process(files):
    environment = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, '-m', 'densepred_ros.training', 'train', '--output', '/proc/nope'],
        capture_output=True, text=True, timeout=300, env=environment)
    assert result.returncode == EXIT_USER, result.stderr
    _check_line(result.stderr, 'train', '/proc/nope')


# --- save_checkpoint: never a half-written checkpoint ----------------------------------

@pytest.fixture(scope='module')
def lotus_parts(checkpoints):
    """Load the five components of a tiny Lotus-D checkpoint."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer
    source = checkpoints['lotus_d']
    return {
        'unet': UNet2DConditionModel.from_pretrained(source, subfolder='unet',
                                                     use_safetensors=True),
        'vae': AutoencoderKL.from_pretrained(source, subfolder='vae', use_safetensors=True),
        'text_encoder': CLIPTextModel.from_pretrained(source, subfolder='text_encoder',
                                                      use_safetensors=True),
        'tokenizer': CLIPTokenizer.from_pretrained(source, subfolder='tokenizer'),
        'scheduler': DDIMScheduler.from_pretrained(source, subfolder='scheduler'),
    }


def _save(parts, path, step):
    from densepred_ros.training.trainer import save_checkpoint
    return save_checkpoint(path, variant='d', space='disparity', processing_resolution=64,
                           state={'step': step}, **parts)


def _contents(folder: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob('*')) if p.is_file()}


def _saved_step(folder: Path) -> int:
    import torch
    from densepred_ros.training.trainer import STATE_FILE
    return torch.load(folder / STATE_FILE, weights_only=True)['step']


def _first_checkpoint(parts, tmp_path) -> Path:
    output = _save(parts, tmp_path / 'run', 1)
    (output / 'training_log.jsonl').write_text('{"event": "start"}\n')
    (output / 'notes').mkdir()
    (output / 'notes' / 'mine.txt').write_text('a file of the user')
    return output


def test_save_checkpoint_replaces_and_keeps_the_other_files(lotus_parts, tmp_path):
    from densepred_ros.models.loading import check_layout
    output = _first_checkpoint(lotus_parts, tmp_path)
    assert _save(lotus_parts, output, 2) == output
    assert _saved_step(output) == 2
    check_layout(output)
    assert (output / 'training_log.jsonl').read_text() == '{"event": "start"}\n'
    assert (output / 'notes' / 'mine.txt').is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['run']   # no hidden leftovers


@pytest.mark.parametrize('failure', ['ctrl-c', 'disk-full'])
def test_an_interrupted_save_leaves_the_previous_checkpoint(failure, lotus_parts, tmp_path,
                                                            monkeypatch):
    """Ctrl-C or ENOSPC half-way through the save: the old checkpoint, byte for byte."""
    output = _first_checkpoint(lotus_parts, tmp_path)
    before = _contents(output)
    error = KeyboardInterrupt() if failure == 'ctrl-c' else OSError(
        errno.ENOSPC, os.strerror(errno.ENOSPC))
    real = type(lotus_parts['tokenizer']).save_pretrained

    def fail_after_writing_some(self, folder, *args, **kwargs):
        real(self, folder, *args, **kwargs)
        raise error

    monkeypatch.setattr(type(lotus_parts['tokenizer']), 'save_pretrained',
                        fail_after_writing_some)
    with pytest.raises(type(error)):
        _save(lotus_parts, output, 2)
    assert _contents(output) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['run']


def test_sigint_during_the_rename_is_held_back(lotus_parts, tmp_path, monkeypatch):
    """A real SIGINT between the renames is delivered after them: the new checkpoint."""
    output = _first_checkpoint(lotus_parts, tmp_path)
    real_rename = os.rename
    calls = []

    def rename_with_a_signal(src, dst):
        calls.append(dst)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return real_rename(src, dst)

    monkeypatch.setattr(os, 'rename', rename_with_a_signal)
    with pytest.raises(KeyboardInterrupt):
        _save(lotus_parts, output, 2)
    monkeypatch.setattr(os, 'rename', real_rename)
    assert len(calls) == 4                   # the log, notes/, the old folder, the new one
    assert _saved_step(output) == 2
    assert (output / 'training_log.jsonl').is_file() and (output / 'notes').is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['run']
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_failed_rename_puts_everything_back(lotus_parts, tmp_path, monkeypatch):
    output = _first_checkpoint(lotus_parts, tmp_path)
    before = _contents(output)
    real_rename = os.rename

    def cannot_rename_into_place(src, dst):
        if Path(dst) == output.resolve() and '.saving-' in Path(src).name:
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))
        return real_rename(src, dst)

    monkeypatch.setattr(os, 'rename', cannot_rename_into_place)
    with pytest.raises(OSError):
        _save(lotus_parts, output, 2)
    monkeypatch.setattr(os, 'rename', real_rename)
    assert _contents(output) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['run']


def test_save_checkpoint_in_place_when_the_parent_is_not_writable(lotus_parts, tmp_path,
                                                                  monkeypatch):
    """No sibling folder possible (parent not writable): written in place, as before."""
    output = _first_checkpoint(lotus_parts, tmp_path)
    real_mkdir = Path.mkdir

    def no_sibling(self, *args, **kwargs):
        if '.saving-' in self.name:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, 'mkdir', no_sibling)
    assert _save(lotus_parts, output, 3) == output
    monkeypatch.setattr(Path, 'mkdir', real_mkdir)
    assert _saved_step(output) == 3
    assert (output / 'training_log.jsonl').is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['run']
