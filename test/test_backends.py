"""Backend requests, the fallback chain, the TensorRT engine cache and the fp16 guard.

All of this is plain code and is tested as such; the TensorRT build and runtime are
tested only where `tensorrt` and CUDA are importable (skipped otherwise).
"""

import importlib.util
import json
import logging
import threading
import time

from densepred_ros.models import load_predictor, PredictorOptions
from densepred_ros.models.backends import BackendUnavailable, choose, EngineCache, EngineKey
from densepred_ros.models.backends import engine_key, fallback_chain, FiniteGuard
from densepred_ros.models.backends import onnx_hash, ort_providers, parse_backend_spec
import numpy as np
import pytest
import torch

CPU = torch.device('cpu')
CUDA = torch.device('cuda')


def _key(**changes) -> EngineKey:
    fields = {'component': 'unet', 'gpu_name': 'NVIDIA Orin', 'compute_capability': '8.7',
              'trt_version': '10.3.0',
              'input_shapes': (('sample', (1, 8, 72, 96)), ('timestep', (1,))),
              'precision': 'fp16', 'onnx_sha256': 'ab' * 32, 'builder': 'opt3'}
    fields.update(changes)
    return EngineKey(**fields)


# Backend requests and the chain ------------------------------------------------------------

def test_parse_backend_spec():
    assert parse_backend_spec('') == dict.fromkeys(('vae_encoder', 'unet', 'vae_decoder'),
                                                   'torch')
    assert set(parse_backend_spec('tensorrt').values()) == {'tensorrt'}
    assert parse_backend_spec('unet=tensorrt, vae_decoder=onnxruntime') == {
        'vae_encoder': 'torch', 'unet': 'tensorrt', 'vae_decoder': 'onnxruntime'}
    for bad, match in (('cuda', 'backend'), ('unet=trt', 'trt'), ('text=torch', 'text'),
                       ('unet=torch,unet=tensorrt', 'twice')):
        with pytest.raises(ValueError, match=match):
            parse_backend_spec(bad)


def test_fallback_chain_order():
    assert fallback_chain('tensorrt', CUDA) == [
        ('tensorrt', 'cuda'), ('onnxruntime', 'cuda'), ('torch', 'cuda'), ('torch', 'cpu')]
    assert fallback_chain('tensorrt', CPU) == [('tensorrt', 'cuda'), ('torch', 'cpu')]
    assert fallback_chain('onnxruntime', CPU) == [('onnxruntime', 'cpu'), ('torch', 'cpu')]
    assert fallback_chain('onnxruntime', CUDA) == [
        ('onnxruntime', 'cuda'), ('torch', 'cuda'), ('torch', 'cpu')]
    assert fallback_chain('torch', CPU) == [('torch', 'cpu')]
    with pytest.raises(ValueError):
        fallback_chain('openvino', CPU)


def test_choose_falls_back_and_logs_why(caplog):
    calls = []

    def failing(reason):
        def factory(component, device):
            calls.append((component, device))
            raise BackendUnavailable(reason)
        return factory

    def torch_factory(component, device):
        calls.append((component, device))
        return (lambda x: x * 2), f'torch {device}'

    factories = {'tensorrt': failing('no engine'), 'onnxruntime': failing('no provider'),
                 'torch': torch_factory}
    with caplog.at_level(logging.INFO, logger='test.backends'):
        runner, choice = choose('unet', 'tensorrt', CUDA, factories,
                                log=logging.getLogger('test.backends'))
    assert calls == [('unet', 'cuda'), ('unet', 'cuda'), ('unet', 'cuda')]
    assert (choice.backend, choice.device) == ('torch', 'cuda')
    assert choice.skipped == ('tensorrt/cuda: BackendUnavailable: no engine',
                              'onnxruntime/cuda: BackendUnavailable: no provider')
    assert runner(3) == 6
    record = caplog.records[-1]
    assert record.levelno == logging.WARNING
    assert 'requested tensorrt' in record.getMessage() and 'no engine' in record.getMessage()


def test_choose_without_any_backend_raises():
    def broken(component, device):
        raise RuntimeError('boom')
    with pytest.raises(BackendUnavailable, match='boom'):
        choose('vae_decoder', 'onnxruntime', CPU, {'onnxruntime': broken, 'torch': broken})


def test_ort_providers_preference_and_filtering():
    available = ['CUDAExecutionProvider', 'CPUExecutionProvider']
    assert ort_providers([], 'cuda', available) == available
    assert ort_providers([], 'cpu', available) == ['CPUExecutionProvider']
    assert ort_providers(['TensorrtExecutionProvider', 'CPUExecutionProvider'], 'cuda',
                         available) == ['CPUExecutionProvider']
    with pytest.raises(BackendUnavailable, match='TensorrtExecutionProvider'):
        ort_providers(['TensorrtExecutionProvider'], 'cuda', available)
    with pytest.raises(ValueError, match='ExecutionProvider'):
        ort_providers(['cuda'], 'cuda', available)


def test_predictor_falls_back_from_tensorrt_without_cuda(checkpoints, tmp_path, caplog):
    """With no CUDA here, tensorrt must end on torch CPU with the same output as torch."""
    from densepred_ros.models.export import export_lotus
    if torch.cuda.is_available():
        pytest.skip('CUDA is present: this checks the CPU-only chain')
    export_lotus(str(checkpoints['lotus_d']), 64, 64, tmp_path, components=['unet'],
                 log=lambda *_: None)
    rgb = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    with caplog.at_level(logging.WARNING, logger='densepred_ros.backends'):
        fallback = load_predictor(str(checkpoints['lotus_d']), PredictorOptions(
            device='cpu', processing_resolution=0, backend='tensorrt',
            export_dir=str(tmp_path), engine_cache_dir=str(tmp_path / 'engines')))
    for choice in fallback.backend_choices.values():
        assert (choice.backend, choice.device) == ('torch', 'cpu')
        assert 'CUDA' in choice.skipped[0]
    assert 'fell back' in caplog.text
    plain = load_predictor(str(checkpoints['lotus_d']), PredictorOptions(
        device='cpu', processing_resolution=0))
    assert np.array_equal(fallback.predict(rgb).values, plain.predict(rgb).values)
    assert not (tmp_path / 'engines').exists() or not any((tmp_path / 'engines').iterdir())


# Engine cache ------------------------------------------------------------------------------

def test_engine_key_round_trip_and_sensitivity():
    key = _key()
    assert EngineKey.from_json(json.loads(json.dumps(key.to_json()))) == key
    assert key.digest() == _key().digest()
    changes = {'gpu_name': 'NVIDIA H100', 'compute_capability': '9.0',
               'trt_version': '8.6.2',
               'input_shapes': (('sample', (1, 8, 96, 128)), ('timestep', (1,))),
               'precision': 'fp32', 'onnx_sha256': 'cd' * 32, 'builder': 'opt5',
               'component': 'vae_decoder'}
    for field, value in changes.items():
        assert _key(**{field: value}).digest() != key.digest(), field
    assert key.file_stem() == 'unet_72x96_fp16_nvidia-orin_sm87'
    # The TensorRT version and the ONNX hash do not change the file: a stale engine is
    # replaced, not kept beside the new one.
    assert _key(trt_version='10.4.0').file_stem() == key.file_stem()


def test_cache_builds_once_and_reuses(tmp_path):
    cache = EngineCache(tmp_path)
    builds = []

    def build():
        builds.append(1)
        return b'engine-bytes'

    path, built = cache.get_or_build(_key(), build)
    assert built and path.read_bytes() == b'engine-bytes'
    path2, built2 = cache.get_or_build(_key(), build)
    assert (path2, built2) == (path, False) and len(builds) == 1
    sidecar = json.loads(path.with_suffix('.json').read_text())
    assert EngineKey.from_json(sidecar['key']) == _key()
    assert not list(tmp_path.glob('*.tmp'))


@pytest.mark.parametrize('change', [{'trt_version': '10.4.0'}, {'onnx_sha256': 'ef' * 32},
                                    {'builder': 'opt5'}])
def test_cache_rebuilds_on_key_mismatch(tmp_path, change, caplog):
    cache = EngineCache(tmp_path)
    cache.get_or_build(_key(), lambda: b'old')
    new = _key(**change)
    assert cache.lookup(new) is None
    with caplog.at_level(logging.WARNING, logger='densepred_ros.backends'):
        path, built = cache.get_or_build(new, lambda: b'new')
    assert built and path.read_bytes() == b'new'
    assert cache.lookup(new) == path and cache.lookup(_key()) is None
    assert next(iter(change)) in caplog.text


def test_other_gpu_gets_its_own_engine(tmp_path):
    cache = EngineCache(tmp_path)
    first, _ = cache.get_or_build(_key(), lambda: b'orin')
    other, built = cache.get_or_build(_key(gpu_name='NVIDIA RTX 4090',
                                           compute_capability='8.9'), lambda: b'ada')
    assert built and other != first
    assert cache.lookup(_key()) == first and first.read_bytes() == b'orin'


def test_cache_force_rebuild_and_damaged_files(tmp_path):
    cache = EngineCache(tmp_path)
    path, _ = cache.get_or_build(_key(), lambda: b'first')
    path, built = cache.get_or_build(_key(), lambda: b'second', force=True)
    assert built and path.read_bytes() == b'second'
    path.write_bytes(b'sec')                       # truncated engine: size differs
    assert cache.lookup(_key()) is None
    path.with_suffix('.json').write_text('{not json')
    assert cache.lookup(_key()) is None
    path, built = cache.get_or_build(_key(), lambda: b'third')
    assert built and cache.lookup(_key()) == path
    cache.invalidate(_key())
    assert not path.exists() and cache.lookup(_key()) is None


def test_failed_build_leaves_no_partial_file(tmp_path):
    cache = EngineCache(tmp_path)

    def fail():
        raise BackendUnavailable('out of memory')
    with pytest.raises(BackendUnavailable):
        cache.get_or_build(_key(), fail)
    assert cache.lookup(_key()) is None
    assert not list(tmp_path.glob('*.plan')) and not list(tmp_path.glob('*.tmp'))
    with pytest.raises(ValueError, match='empty'):
        cache.get_or_build(_key(), lambda: b'')


def test_concurrent_requests_build_once(tmp_path):
    """The flock makes the second caller wait and then reuse the first one's engine."""
    builds = []
    results = []

    def slow_build():
        builds.append(threading.get_ident())
        time.sleep(0.3)
        return b'engine'

    def worker():
        results.append(EngineCache(tmp_path).get_or_build(_key(), slow_build))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1
    assert sorted(built for _, built in results) == [False, False, True]


def test_engine_key_from_export_folder(tmp_path):
    onnx_file = tmp_path / 'unet.onnx'
    onnx_file.write_bytes(b'graph')
    from densepred_ros.models.export import file_sha256
    meta = {'precision': 'fp32', 'components': {'unet': {
        'file': 'unet.onnx', 'sha256': file_sha256(onnx_file), 'bytes': 5,
        'inputs': {'sample': [1, 8, 48, 64], 'timestep': [1]}}}}
    key = engine_key('unet', meta, tmp_path, 'fp16', 'Orin', '8.7', '10.3.0')
    assert key.input_shapes == (('sample', (1, 8, 48, 64)), ('timestep', (1,)))
    assert key.onnx_sha256 == file_sha256(onnx_file)
    onnx_file.write_bytes(b'changed graph')          # re-exported: the hash is recomputed
    assert onnx_hash(tmp_path, meta['components']['unet']) == file_sha256(onnx_file)
    assert engine_key('unet', meta, tmp_path, 'fp16', 'Orin', '8.7',
                      '10.3.0').digest() != key.digest()
    with pytest.raises(BackendUnavailable, match='vae_decoder'):
        engine_key('vae_decoder', meta, tmp_path, 'fp16', 'Orin', '8.7', '10.3.0')
    with pytest.raises(ValueError, match='precision'):
        engine_key('unet', meta, tmp_path, 'int8', 'Orin', '8.7', '10.3.0')


# fp16 overflow guard -----------------------------------------------------------------------

def test_finite_guard_switches_to_fp32_for_good(caplog):
    made = []
    outputs = iter([torch.ones(2), torch.tensor([1.0, float('inf')]), torch.ones(2)])

    def fallback():
        made.append(1)
        return lambda x: x + 10

    guard = FiniteGuard(lambda x: next(outputs), fallback)
    assert torch.equal(guard(torch.zeros(2)), torch.ones(2)) and not guard.tripped
    with caplog.at_level(logging.WARNING, logger='densepred_ros.backends'):
        assert torch.equal(guard(torch.zeros(2)), torch.full((2,), 10.0))
    assert guard.tripped and 'non-finite' in caplog.text
    assert torch.equal(guard(torch.zeros(2)), torch.full((2,), 10.0))
    assert made == [1]


# TensorRT itself (GPU machines only) -------------------------------------------------------

HAS_TRT = importlib.util.find_spec('tensorrt') is not None and torch.cuda.is_available()


@pytest.mark.skipif(not HAS_TRT, reason='needs the tensorrt package and a CUDA GPU')
@pytest.mark.parametrize('precision', ['fp32', 'fp16'])
def test_tensorrt_matches_torch(checkpoints, tmp_path, precision):
    from densepred_ros.models.export import export_lotus
    export_lotus(str(checkpoints['lotus_g']), 64, 96, tmp_path / 'onnx', log=lambda *_: None)
    rgb = (np.random.default_rng(0).random((64, 96, 3)) * 255).astype(np.uint8)
    common = {'device': 'cuda', 'processing_resolution': 0}
    trt = load_predictor(str(checkpoints['lotus_g']), PredictorOptions(
        backend='tensorrt', export_dir=str(tmp_path / 'onnx'), engine_precision=precision,
        engine_cache_dir=str(tmp_path / 'engines'), **common))
    assert all(c.backend == 'tensorrt' for c in trt.backend_choices.values())
    reference = load_predictor(str(checkpoints['lotus_g']), PredictorOptions(**common))
    tolerance = 1e-3 if precision == 'fp32' else 2e-2
    assert np.abs(trt.predict(rgb).values - reference.predict(rgb).values).max() < tolerance
    assert len(list((tmp_path / 'engines').glob('*.plan'))) == 3


# The bench command (tiny architecture: shows that it runs, not how fast) ------------------

def test_bench_command_runs_tiny(tmp_path, capsys):
    from densepred_ros.cli import main
    out = tmp_path / 'bench.json'
    code = main(['bench', '--tiny', '--resolutions', '64,72', '--configs',
                 'ours,ours_onnxruntime', '--warmup', '0', '--json', str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    # ONNX Runtime is exported and run at every size (the torch UNet it frees is kept).
    for size in ('64', '72'):
        assert result['summary'][size]['ours_onnxruntime']['seconds']['unet'] > 0
    assert all(c.startswith(('vae_encoder: onnxruntime', 'unet: onnxruntime',
                             'vae_decoder: onnxruntime'))
               for c in result['components']['ours_onnxruntime'].values())
    row = result['summary']['64']['ours']
    for stage in ('vae_encode', 'unet', 'vae_decode', 'total'):
        assert row['seconds'][stage] > 0
    assert row['peak_gb'] > 0.05
    assert all(result['stage_gflop']['64'][s] > 0 for s in ('vae_encode', 'unet', 'vae_decode'))
    assert '64×64' in capsys.readouterr().out
    assert main(['bench', '--resolutions', '60']) == 2
    assert 'resolutions must be multiples of 8' in capsys.readouterr().err


# The CPU speed settings ---------------------------------------------------------------------

def test_auto_dtype_and_layout_rules():
    from densepred_ros.models.lotus import use_channels_last
    from densepred_ros.models.runtime import cpu_has_bf16, resolve_auto_dtype
    assert resolve_auto_dtype('auto', CUDA) == 'fp16'
    assert resolve_auto_dtype('auto', CPU) == ('bf16' if cpu_has_bf16() else 'fp32')
    assert resolve_auto_dtype('fp32', CPU) == 'fp32'
    assert use_channels_last(None, CPU, 'auto') and use_channels_last(None, CPU, 'bf16')
    assert not use_channels_last(None, CPU, 'fp32')      # explicit fp32 stays exact NCHW
    assert not use_channels_last(None, CUDA, 'auto')
    assert not use_channels_last(False, CPU, 'auto') and use_channels_last(True, CPU, 'fp32')


@pytest.mark.parametrize('native_bf16, picked', [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_follows_the_cpu_capability(checkpoints, monkeypatch, native_bf16, picked):
    # AVX-512-BF16 and AMX machines report native bf16, AVX2-only machines do not.
    from densepred_ros.models import runtime
    monkeypatch.setattr(runtime, 'cpu_has_bf16', lambda: native_bf16)
    predictor = load_predictor(str(checkpoints['lotus_g']), PredictorOptions(
        dtype='auto', device='cpu', processing_resolution=0))
    assert predictor.dtype == picked and predictor.unet.dtype == picked
    assert predictor.channels_last


@pytest.mark.parametrize('name', ['lotus_g', 'lotus_d'])
def test_forced_bf16_as_precise_as_the_authors_autocast(checkpoints, name):
    # bf16 is native on AVX-512-BF16/AMX and emulated on AVX2: forced, it runs everywhere.
    from precision import assert_as_precise_as_autocast, autocast_errors
    rgb = (np.random.default_rng(3).random((64, 96, 3)) * 255).astype(np.uint8)
    common = {'device': 'cpu', 'processing_resolution': 0}
    fast = load_predictor(str(checkpoints[name]), PredictorOptions(dtype='bf16', **common))
    exact = load_predictor(str(checkpoints[name]), PredictorOptions(dtype='fp32', **common))
    assert fast.channels_last and not exact.channels_last
    assert_as_precise_as_autocast(fast.predict(rgb).values, exact.predict(rgb).values,
                                  autocast_errors(str(checkpoints[name]), rgb,
                                                  torch.bfloat16, **common))
