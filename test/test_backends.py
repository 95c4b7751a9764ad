"""Backend requests, the fallback chain, the TensorRT engine cache and the fp16 guard.

All of this is plain code and is tested as such; the TensorRT build and runtime are
tested only where `tensorrt` and CUDA are importable (skipped otherwise).
"""

import importlib.util
import json
import logging
import multiprocessing
import os
from pathlib import Path
import subprocess
import sys
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
    # A CUDA request that only the CPU provider could serve is not ONNX Runtime's to take.
    with pytest.raises(BackendUnavailable, match='GPU provider'):
        ort_providers(['TensorrtExecutionProvider', 'CPUExecutionProvider'], 'cuda',
                      available)
    with pytest.raises(BackendUnavailable, match='CPU-only'):
        ort_providers([], 'cuda', ['CPUExecutionProvider'])
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
               'component': 'vae_decoder', 'gpu_memory_mib': 15000, 'sm_count': 16,
               'recipe': 99}
    for field, value in changes.items():
        assert _key(**{field: value}).digest() != key.digest(), field
        # Every field is in the file name (through the digest): no two keys share a file.
        assert _key(**{field: value}).file_stem() != key.file_stem(), field
    assert key.file_stem() == f'unet_72x96_fp16_nvidia-orin_sm87_{key.digest()[:16]}'


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


def test_other_weights_keep_their_engine_and_outdated_builds_go(tmp_path):
    cache = EngineCache(tmp_path)
    first, _ = cache.get_or_build(_key(), lambda: b'model a')
    other = _key(onnx_sha256='ef' * 32)                  # another model, same size
    assert cache.lookup(other) is None
    second, built = cache.get_or_build(other, lambda: b'model b')
    assert built and second != first
    assert cache.load(_key()) == b'model a' and cache.load(other) == b'model b'
    # The same ONNX file built by a newer TensorRT: the old engine can never be used again.
    newer, built = cache.get_or_build(_key(trt_version='10.4.0'), lambda: b'model a, new')
    assert built and not first.exists() and cache.lookup(_key()) is None
    assert cache.load(other) == b'model b' and newer.read_bytes() == b'model a, new'


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


# Caches per export, concurrent writers, providers, guards (issue 21) ----------------------

def _export_unet(checkpoint, folder):
    from densepred_ros.models.export import export_lotus
    return export_lotus(str(checkpoint), 64, 64, folder, components=['unet'],
                        log=lambda *_: None)


def test_two_exports_of_other_weights_at_one_size_get_their_own_caches(checkpoints, tmp_path):
    from densepred_ros.models.backends import ort_trt_cache, provider_options
    from densepred_ros.testing import write_tiny_lotus
    other = write_tiny_lotus(tmp_path / 'other', variant='d', space='disparity', seed=1)
    meta_a = _export_unet(checkpoints['lotus_d'], tmp_path / 'a')
    meta_b = _export_unet(other, tmp_path / 'b')
    # The same file names, tensor names and shapes: what ONNX Runtime would key on.
    assert meta_a['components']['unet']['file'] == meta_b['components']['unet']['file']
    assert meta_a['components']['unet']['inputs'] == meta_b['components']['unet']['inputs']
    facts = {'gpu_name': 'Orin', 'compute_capability': '8.7', 'trt_version': '10.3.0',
             'gpu_memory_mib': 15_000, 'sm_count': 16}
    key_a = engine_key('unet', meta_a, tmp_path / 'a', 'fp16', **facts)
    key_b = engine_key('unet', meta_b, tmp_path / 'b', 'fp16', **facts)
    assert key_a.onnx_sha256 != key_b.onnx_sha256
    assert key_a.file_stem() != key_b.file_stem()
    cache = EngineCache(tmp_path / 'engines')
    cache.get_or_build(key_a, lambda: b'engine of a')
    cache.get_or_build(key_b, lambda: b'engine of b')
    assert cache.load(key_a) == b'engine of a' and cache.load(key_b) == b'engine of b'
    # ONNX Runtime's TensorRT provider: one cache folder and prefix per export.
    folders = [ort_trt_cache(tmp_path, 'unet', k.onnx_sha256, 'fp16') for k in (key_a, key_b)]
    assert folders[0] != folders[1] and folders[0][1] != folders[1][1]
    assert ort_trt_cache(tmp_path, 'unet', key_a.onnx_sha256, 'fp32') != folders[0]
    options = provider_options(['TensorrtExecutionProvider', 'CUDAExecutionProvider',
                                'CPUExecutionProvider'], 1, tmp_path, 'unet',
                               key_a.onnx_sha256, 'fp16', '1.32.0')
    assert options[0]['trt_engine_cache_path'] == str(folders[0][0])
    assert options[0]['trt_engine_cache_prefix'] == folders[0][1]
    assert options[0]['trt_timing_cache_enable'] and options[0]['trt_fp16_enable']
    assert options[0]['device_id'] == 1 and options[1] == {'device_id': 1}
    assert options[2] == {}
    old = provider_options(['TensorrtExecutionProvider'], 0, tmp_path, 'unet',
                           key_a.onnx_sha256, 'fp32', '1.16.3')
    assert 'trt_engine_cache_prefix' not in old[0] and not old[0]['trt_fp16_enable']


def _fetch_worker(root, key_json, payload, force, delay, queue):
    def build():
        with open(Path(root) / 'builds.txt', 'a') as log:
            log.write(f'{os.getpid()}\n')
        time.sleep(delay)
        return payload
    key = EngineKey.from_json(key_json)
    _, data, built = EngineCache(root).fetch(key, build, force=force)
    queue.put(('fetch', bytes(data), built))


def _read_worker(root, key_json, reads, queue):
    key = EngineKey.from_json(key_json)
    cache = EngineCache(root)
    for _ in range(reads):
        queue.put(('read', cache.load(key), False))
        time.sleep(0.01)


def test_engine_cache_under_concurrent_writer_processes(tmp_path):
    """Processes, not threads: flock excludes across processes; readers see whole engines."""
    context = multiprocessing.get_context('fork')
    queue = context.Queue()
    key = _key().to_json()
    first = b'A' * 200_000
    workers = [context.Process(target=_fetch_worker,
                               args=(tmp_path, key, first, False, 0.5, queue))
               for _ in range(4)]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    assert len((tmp_path / 'builds.txt').read_text().split()) == 1   # built once
    assert sorted(built for *_, built in results) == [False, False, False, True]
    assert all(data == first for _, data, _ in results)
    # Two writers replace the engine while three readers read it: every read is whole.
    payloads = [b'B' * 300_000, b'C' * 100_000]
    procs = [context.Process(target=_fetch_worker, args=(tmp_path, key, p, True, 0.2, queue))
             for p in payloads]
    procs += [context.Process(target=_read_worker, args=(tmp_path, key, 40, queue))
              for _ in range(3)]
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=60) for _ in range(2 + 3 * 40)]
    for proc in procs:
        proc.join(timeout=60)
    reads = [data for kind, data, _ in results if kind == 'read']
    assert len(reads) == 120 and all(data in [first] + payloads for data in reads)
    assert EngineCache(tmp_path).load(_key()) in payloads
    assert not list(tmp_path.glob('*.tmp'))


def test_cpu_only_onnxruntime_and_a_cuda_request_fall_through_to_torch_cuda(
        checkpoints, tmp_path):
    from densepred_ros.models.backends import open_onnxruntime, open_tensorrt
    meta = _export_unet(checkpoints['lotus_d'], tmp_path)
    cache = EngineCache(tmp_path / 'engines')

    def torch_factory(component, device):
        return (lambda x: x), f'torch {device}'

    def factories(available):
        return {'tensorrt': lambda c, d: open_tensorrt(
                    c, d, tmp_path, meta, 'fp16', cache, CUDA),
                'onnxruntime': lambda c, d: open_onnxruntime(c, d, tmp_path, meta,
                                                             available=available),
                'torch': torch_factory}

    _, choice = choose('unet', 'tensorrt', CUDA, factories(['CPUExecutionProvider']))
    assert (choice.backend, choice.device) == ('torch', 'cuda')
    assert 'onnxruntime/cuda' in choice.skipped[1] and 'CPU-only' in choice.skipped[1]
    _, choice = choose('unet', 'onnxruntime', CUDA, factories(['CPUExecutionProvider']))
    assert (choice.backend, choice.device) == ('torch', 'cuda')
    # A CPU request takes the CPU provider (a real session here).
    runner, choice = choose('unet', 'onnxruntime', CPU,
                            factories(['CUDAExecutionProvider', 'CPUExecutionProvider']))
    assert (choice.backend, choice.device) == ('onnxruntime', 'cpu')
    assert runner.providers == ['CPUExecutionProvider']


def test_guards_blame_the_unet_for_a_nan_latent(caplog):
    from densepred_ros.models.backends import NonFiniteError
    nan_latent = torch.full((1, 4, 2, 2), float('nan'))
    unet = FiniteGuard(lambda x: nan_latent, lambda: (lambda x: torch.zeros(1, 4, 2, 2)),
                       name='unet')
    decoder = FiniteGuard(lambda x: x + 1.0, lambda: (lambda x: x - 1.0), name='vae_decoder')
    with caplog.at_level(logging.WARNING, logger='densepred_ros.backends'):
        out = decoder(unet(torch.zeros(1, 8, 2, 2)))
    assert torch.equal(out, torch.ones(1, 4, 2, 2))
    assert unet.tripped and not decoder.tripped
    assert 'unet produced 16 non-finite values from finite inputs' in caplog.text
    assert 'vae_decoder' not in caplog.text
    # Fed a NaN latent directly, the decoder refuses the blame and does not switch.
    decoder = FiniteGuard(lambda x: x + 1.0, lambda: (lambda x: x - 1.0), name='vae_decoder')
    with pytest.raises(NonFiniteError, match='earlier component') as info:
        decoder(nan_latent)
    assert info.value.component == 'upstream' and not decoder.tripped
    # No safe runner: a clear error naming the component, never NaN passed on.
    bare = FiniteGuard(lambda x: nan_latent, None, name='unet')
    with pytest.raises(NonFiniteError, match='no fp32 fallback') as info:
        bare(torch.zeros(1))
    assert info.value.component == 'unet'


def test_fp16_predictor_guards_unet_and_decoder(checkpoints, caplog):
    predictor = load_predictor(str(checkpoints['lotus_g']), PredictorOptions(
        device='cpu', dtype='fp16', processing_resolution=0))
    unet, decoder = predictor.components['unet'], predictor.components['vae_decoder']
    assert isinstance(unet, FiniteGuard) and isinstance(decoder, FiniteGuard)
    assert not isinstance(predictor.components['vae_encoder'], FiniteGuard)
    rgb = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    unet.primary = lambda *tensors: torch.full((1, 4, 4, 4), float('nan'))
    with caplog.at_level(logging.WARNING, logger='densepred_ros.backends'):
        values = predictor.predict(rgb).values
    assert np.isfinite(values).all()
    assert unet.tripped and not decoder.tripped and 'unet produced' in caplog.text


def test_per_component_engine_precision_and_plain_helpers():
    from densepred_ros.models.backends import (
        built_precision, check_alignment, parse_precision_spec, workspace_bytes)
    assert parse_precision_spec('unet=fp16,vae_decoder=fp32') == {
        'vae_encoder': 'fp16', 'unet': 'fp16', 'vae_decoder': 'fp32'}
    assert set(parse_precision_spec('').values()) == {'fp16'}
    for bad in ('int8', 'unet=int8', 'text=fp16', 'unet=fp16,unet=fp32'):
        with pytest.raises(ValueError, match='engine_precision'):
            PredictorOptions(engine_precision=bad)
    gib = 1 << 30
    assert workspace_bytes(8 * gib) == gib                 # 8 GB Jetson: an eighth
    assert workspace_bytes(80 * gib) == 4 * gib            # capped
    assert workspace_bytes(gib) == 256 << 20               # floor
    assert built_precision(10, 'fp16', 'fp32') == 'fp16'
    assert built_precision(11, 'fp16', 'fp32') == 'fp32'   # strongly typed: the ONNX's
    check_alignment('unet', 'x0', 512)
    with pytest.raises(RuntimeError, match='256-byte'):
        check_alignment('unet', 'x0', 512 + 64)


@pytest.mark.parametrize('require, code', [([], 0), (['--require-gpu'], 1)])
def test_gpu_check_without_cuda_says_so_and_exits_cleanly(require, code):
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='', PYTHON=sys.executable)
    result = subprocess.run(['bash', str(root / 'scripts' / 'gpu_check.sh')] + require,
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == code, result.stderr[-2000:]
    assert 'no CUDA device is visible to torch' in result.stdout
    assert 'Traceback' not in result.stderr
