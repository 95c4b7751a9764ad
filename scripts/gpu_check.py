"""Check the accelerated path on this machine's GPU: engines, agreement, speed, one table.

For the bundled demo model and a real-size (Stable Diffusion 2) random-weight Lotus-G:
export the components to ONNX, then run torch fp32 on CUDA (TF32 off: the reference),
torch fp16, ONNX Runtime (CUDA provider, and the TensorRT provider when present) and
TensorRT fp32 / fp16 engines, each through `load_predictor` as the node runs them, and
compare the [0, 1] predictions with the reference:

- fp32 paths (ONNX Runtime CUDA, TensorRT fp32, which may use TF32): mean |Δ| <= 2e-3,
  max |Δ| <= 2e-2;
- fp16 paths (torch fp16, TensorRT fp16, ONNX Runtime TensorRT fp16): mean |Δ| <= 1e-2,
  max |Δ| <= 1e-1.

A path that fell back to another backend is a failure (its reason is printed). Exit
status: 0 all rows passed (or no CUDA: nothing to check), 1 otherwise.

    scripts/gpu_check.sh [--work DIR] [--real-size H W] [--runs N] [--skip-real]
"""

import argparse
import json
from pathlib import Path
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

import numpy as np

FP32_TOL = (2e-3, 2e-2)   # (mean |Δ|, max |Δ|) on predictions in [0, 1]
FP16_TOL = (1e-2, 1e-1)
DEMO = Path(__file__).resolve().parent.parent / 'densepred_ros' / 'demo_models' / \
    'lotus-depth-demo'


def no_cuda_message(torch) -> Optional[str]:
    """Return why the check cannot run here, or None when a CUDA device is usable."""
    if torch.cuda.is_available():
        return None
    build = torch.version.cuda or 'none (CPU-only build)'
    return (f'gpu_check: no CUDA device is visible to torch {torch.__version__} (CUDA build: '
            f'{build}); nothing to check. Run this on the GPU machine or Jetson.')


def environment(torch) -> List[str]:
    """Return lines describing the GPU and the libraries."""
    props = torch.cuda.get_device_properties(0)
    lines = [f'GPU: {props.name}, {props.total_memory / 2**30:.1f} GiB, '
             f'{props.multi_processor_count} SMs, sm_{props.major}{props.minor}',
             f'torch {torch.__version__}, CUDA {torch.version.cuda}']
    try:
        import tensorrt
        lines.append(f'TensorRT {tensorrt.__version__}')
    except ImportError as exc:
        lines.append(f'TensorRT: not importable ({exc})')
    try:
        import onnxruntime
        lines.append(f'ONNX Runtime {onnxruntime.__version__}: '
                     f'{", ".join(onnxruntime.get_available_providers())}')
    except ImportError as exc:
        lines.append(f'ONNX Runtime: not importable ({exc})')
    return lines


def write_real_size_lotus(folder: Path) -> Path:
    """Write a Lotus-G checkpoint with the SD2 UNet and VAE, random weights (seeded)."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    from densepred_ros import bench
    from densepred_ros.models.checkpoint import LOTUS_CLASS_NAMES
    from densepred_ros.models.checkpoint_writer import (
        BYTE_VOCAB_SIZE, sd2_ddim_scheduler, write_byte_tokenizer, write_densepred_config,
        write_model_index)
    if (folder / 'model_index.json').is_file():
        return folder
    _, unet, vae = bench.build_models('lotus_g', tiny=False, text=False)
    unet.save_pretrained(folder / 'unet', safe_serialization=True)
    vae.save_pretrained(folder / 'vae', safe_serialization=True)
    del unet, vae
    torch.manual_seed(0)
    # The prompt embedding only has to have the UNet's width (1024); one layer will do.
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=BYTE_VOCAB_SIZE, hidden_size=1024, intermediate_size=64,
        num_hidden_layers=1, num_attention_heads=16, max_position_embeddings=77,
        projection_dim=64, bos_token_id=BYTE_VOCAB_SIZE - 2,
        eos_token_id=BYTE_VOCAB_SIZE - 1, pad_token_id=BYTE_VOCAB_SIZE - 1))
    text.save_pretrained(folder / 'text_encoder', safe_serialization=True)
    write_byte_tokenizer(folder / 'tokenizer')
    sd2_ddim_scheduler('sample').save_pretrained(folder / 'scheduler')
    write_model_index(folder, LOTUS_CLASS_NAMES['g'])
    write_densepred_config(folder, 'depth', 768)
    return folder


def paths_to_check(export_dir: Path, cache: Path) -> Dict[str, tuple]:
    """Return {row label: (PredictorOptions fields, tolerance, requested backend)}."""
    common = {'device': 'cuda', 'processing_resolution': 0, 'engine_cache_dir': str(cache)}
    onnx = dict(common, export_dir=str(export_dir))
    return {
        'torch fp16': (dict(common, dtype='fp16'), FP16_TOL, 'torch'),
        'ORT CUDA fp32': (dict(onnx, backend='onnxruntime',
                               ort_providers='CUDAExecutionProvider'), FP32_TOL,
                          'onnxruntime'),
        'ORT TensorRT-EP fp16': (dict(onnx, backend='onnxruntime', engine_precision='fp16',
                                      ort_providers='TensorrtExecutionProvider'), FP16_TOL,
                                 'onnxruntime'),
        'TensorRT fp32': (dict(onnx, backend='tensorrt', engine_precision='fp32'), FP32_TOL,
                          'tensorrt'),
        'TensorRT fp16': (dict(onnx, backend='tensorrt', engine_precision='fp16'), FP16_TOL,
                          'tensorrt'),
    }


def timed(predictor, images, runs: int, torch) -> Tuple[List[np.ndarray], float]:
    """Return the predictions of `images` and the median ms per frame over `runs` passes."""
    predictor.predict(images[0])   # warm-up
    times, outputs = [], []
    for _ in range(runs):
        for image in images:
            torch.cuda.synchronize()
            start = time.perf_counter()
            outputs.append(predictor.predict(image).values)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return outputs[:len(images)], 1000 * float(np.median(times))


def check_model(name: str, checkpoint: Path, size, work: Path, runs: int, torch) -> List[dict]:
    """Export, run every path, compare with torch fp32; return one row per path."""
    from densepred_ros.models import load_predictor, PredictorOptions
    from densepred_ros.models.backends import FiniteGuard
    from densepred_ros.models.export import export_lotus
    export_dir = work / f'{name}_export'
    start = time.perf_counter()
    export_lotus(str(checkpoint), size[0], size[1], export_dir, log=lambda *_: None)
    print(f'{name}: exported {size[1]}×{size[0]} in {time.perf_counter() - start:.0f} s',
          flush=True)
    rng = np.random.default_rng(0)
    images = [(rng.random((size[0], size[1], 3)) * 255).astype(np.uint8) for _ in range(3)]
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    start = time.perf_counter()
    reference = load_predictor(str(checkpoint), PredictorOptions(
        device='cuda', dtype='fp32', processing_resolution=0))
    load_s = time.perf_counter() - start
    expected, ms = timed(reference, images, runs, torch)
    reference.close()
    rows = [{'model': name, 'path': 'torch fp32 (reference)', 'load_s': load_s, 'ms': ms,
             'mean': 0.0, 'max': 0.0, 'verdict': 'ref'}]
    for label, (fields, tol, backend) in paths_to_check(export_dir, work / 'engines').items():
        row = {'model': name, 'path': label, 'load_s': float('nan'), 'ms': float('nan'),
               'mean': float('nan'), 'max': float('nan')}
        try:
            start = time.perf_counter()
            predictor = load_predictor(str(checkpoint), PredictorOptions(**fields))
            row['load_s'] = time.perf_counter() - start
            fell = [c.describe() for c in getattr(predictor, 'backend_choices', {}).values()
                    if c.backend != backend or c.device != 'cuda']
            outputs, row['ms'] = timed(predictor, images, runs, torch)
            diffs = [np.abs(o - e) for o, e in zip(outputs, expected)]
            row['mean'] = float(np.mean([d.mean() for d in diffs]))
            row['max'] = float(max(d.max() for d in diffs))
            tripped = [n for n, r in predictor.components.items()
                       if isinstance(r, FiniteGuard) and r.tripped] \
                if hasattr(predictor, 'components') else []
            predictor.close()
            ok = row['mean'] <= tol[0] and row['max'] <= tol[1] and np.isfinite(row['max'])
            row['verdict'] = 'PASS' if ok and not fell else 'FAIL'
            if fell:
                row['note'] = 'fell back: ' + ' | '.join(fell)
            if tripped:
                row['note'] = row.get('note', '') + f' guard tripped: {tripped}'
            row['tol'] = f'{tol[0]:g}/{tol[1]:g}'
        except Exception as exc:  # a path that cannot run is a row, not the end of the check
            row['verdict'] = 'FAIL'
            row['note'] = f'{type(exc).__name__}: {exc}'
        torch.cuda.empty_cache()
        rows.append(row)
        print(f'  {label}: {row["verdict"]}', flush=True)
    return rows


def table(rows: List[dict]) -> str:
    """Return the rows as one Markdown table."""
    lines = ['| model | path | load+build s | ms/frame | mean abs diff | max abs diff | '
             'tolerance mean/max | verdict |', '|---|---|---:|---:|---:|---:|---|---|']
    for r in rows:
        lines.append(f'| {r["model"]} | {r["path"]} | {r["load_s"]:.1f} | {r["ms"]:.1f} | '
                     f'{r["mean"]:.2e} | {r["max"]:.2e} | {r.get("tol", "")} | '
                     f'{r["verdict"]} |')
    notes = [f'- {r["model"]} / {r["path"]}: {r["note"]}' for r in rows if r.get('note')]
    return '\n'.join(lines + ([''] + notes if notes else []))


def main(argv: Optional[List[str]] = None) -> int:
    """Run the check; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--work', default=None, help='folder for exports, engines and the '
                        'real-size checkpoint (default: a temporary folder)')
    parser.add_argument('--real-size', type=int, nargs=2, default=(512, 512),
                        metavar=('H', 'W'), help='processing size of the real-size model')
    parser.add_argument('--runs', type=int, default=5, help='timed passes over 3 images')
    parser.add_argument('--skip-real', action='store_true',
                        help='only the demo model (minutes less; Jetson with 8 GB)')
    parser.add_argument('--require-gpu', action='store_true',
                        help='exit 1 instead of 0 when no CUDA device is present')
    parser.add_argument('--json', default=None, help='also write the rows to this file')
    args = parser.parse_args(argv)
    import torch
    reason = no_cuda_message(torch)
    if reason is not None:
        print(reason)
        return 1 if args.require_gpu else 0
    for line in environment(torch):
        print(line)
    with tempfile.TemporaryDirectory(prefix='densepred_gpu_check_') as scratch:
        work = Path(args.work or scratch)
        work.mkdir(parents=True, exist_ok=True)
        demo_size = json.loads((DEMO / 'densepred.json').read_text())['processing_resolution']
        rows = check_model('demo', DEMO, (demo_size, demo_size), work, args.runs, torch)
        if not args.skip_real:
            checkpoint = write_real_size_lotus(work / 'lotus_g_sd2_random')
            rows += check_model('sd2-size random', checkpoint, tuple(args.real_size), work,
                                args.runs, torch)
    print()
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + '\n')
    return 0 if all(r['verdict'] in ('PASS', 'ref') for r in rows) else 1


if __name__ == '__main__':
    sys.exit(main())
