"""The `densepred` command line: predict, evaluate-alignment, demo.

Each subcommand imports what it needs when it runs, so `densepred --help` is instant.
"""

import argparse
from pathlib import Path
import sys
import time
from typing import List, Optional

from densepred_ros.models.base import SPACES
import numpy as np


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image
    with Image.open(path) as image:
        return np.asarray(image.convert('RGB'), dtype=np.uint8)


def _write_png(path: Path, rgb: np.ndarray) -> None:
    from PIL import Image
    Image.fromarray(rgb).save(path)


def picture(values: np.ndarray, space: str) -> np.ndarray:
    """Return an H×W×3 uint8 colour picture of a prediction (near is warm for depth)."""
    from densepred_ros import geometry
    if space == 'normals':
        return geometry.colorize_normals(values)
    if space == 'disparity':
        # Large disparity = near: show 1 - d so that the colours mean the same as for depth.
        return geometry.colorize_depth(1.0 - values)
    return geometry.colorize_depth(values)


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--model', required=True,
                        help='checkpoint folder (diffusers layout) or model-hub id')
    parser.add_argument('--family', default='auto', choices=['auto', 'lotus', 'marigold'])
    parser.add_argument('--space', default=None, choices=SPACES,
                        help='override what the model predicts (default: from the checkpoint)')
    parser.add_argument('--processing-resolution', type=int, default=None,
                        help='longest edge in pixels the model runs at; 0 = native '
                             "(default: the model's)")
    parser.add_argument('--dtype', default='auto', choices=['auto', 'fp32', 'fp16', 'bf16'],
                        help="compute precision; 'auto' = fp16 on CUDA, bf16 on CPUs with "
                             'native bf16, else fp32 with channels-last, as the node (default); '
                             "'fp32' is exact and bit-reproducible")
    parser.add_argument('--backend', default='torch',
                        help='torch, onnxruntime, tensorrt or pairs such as '
                             "'unet=tensorrt,vae_decoder=torch' (Lotus; needs --export-dir)")
    parser.add_argument('--export-dir', default='',
                        help='folder written by `densepred export` for this model and size')
    parser.add_argument('--engine-cache-dir', default='',
                        help='TensorRT engine cache (default ~/.cache/densepred_ros/tensorrt)')
    parser.add_argument('--engine-precision', default='fp16', choices=['fp16', 'fp32'])
    parser.add_argument('--ort-providers', default='',
                        help='ONNX Runtime providers in order of preference, comma separated')
    parser.add_argument('--threads', type=int, default=0,
                        help="CPU threads for torch and ONNX Runtime (0 = the libraries' default)")
    parser.add_argument('--device', default='auto', help="'auto', 'cpu' or 'cuda[:N]'")
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--latent', default='mean', choices=['mean', 'sample'],
                        help="image latent: VAE posterior 'mean' (deterministic) or the "
                             "authors' 'sample'")
    parser.add_argument('--steps', type=int, default=None, help='denoising steps (Marigold)')
    parser.add_argument('--ensemble-size', type=int, default=1, help='ensemble (Marigold)')
    parser.add_argument('--allow-pickle', action='store_true',
                        help='allow pickle-based weights (.bin/.ckpt): only for trusted files')


def _load(args: argparse.Namespace):
    from densepred_ros.models import load_predictor, PredictorOptions
    options = PredictorOptions(
        processing_resolution=args.processing_resolution, dtype=args.dtype,
        device=args.device, seed=args.seed, latent=args.latent, steps=args.steps,
        ensemble_size=args.ensemble_size, backend=args.backend, export_dir=args.export_dir,
        engine_cache_dir=args.engine_cache_dir, engine_precision=args.engine_precision,
        ort_providers=args.ort_providers, threads=args.threads)
    return load_predictor(args.model, options, family=args.family, space=args.space,
                          allow_pickle=args.allow_pickle)


def run_predict(args: argparse.Namespace) -> int:
    """Predict every input image; write DIR/<stem>.npy and DIR/<stem>.png."""
    inputs = [Path(p) for p in args.input]
    missing = [str(p) for p in inputs if not p.is_file()]
    if missing:
        print(f'error: input image(s) not found: {", ".join(missing)}', file=sys.stderr)
        return 2
    predictor = _load(args)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    spec = predictor.spec
    print(f'model: {spec.family}{"-" + spec.variant if spec.variant else ""} '
          f'({spec.space}) from {spec.source}')
    for choice in getattr(predictor, 'backend_choices', {}).values():
        print(f'  {choice.describe()}')
    for path in inputs:
        rgb = _read_rgb(path)
        start = time.perf_counter()
        prediction = predictor.predict(rgb)
        elapsed = time.perf_counter() - start
        np.save(output / f'{path.stem}.npy', prediction.values)
        _write_png(output / f'{path.stem}.png', picture(prediction.values, prediction.space))
        if prediction.uncertainty is not None:
            np.save(output / f'{path.stem}_uncertainty.npy', prediction.uncertainty)
        print(f'{path.name}: {rgb.shape[1]}×{rgb.shape[0]} → {output / path.stem}.npy/.png '
              f'in {elapsed:.2f} s')
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Return the `densepred` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog='densepred',
        description='Single-step diffusion depth and normals, scaled to metres with lidar.')
    sub = parser.add_subparsers(dest='command', required=True)

    predict = sub.add_parser('predict', help='predict depth/disparity/normals for images')
    _add_model_arguments(predict)
    predict.add_argument('--input', nargs='+', required=True, help='image file(s)')
    predict.add_argument('--output', required=True, help='output folder')
    predict.set_defaults(func=run_predict)

    from densepred_ros import demo as demo_module
    demo = sub.add_parser('demo', help='run the depth node on a generated camera + lidar '
                                       'sequence (or real images) and write pictures, metrics')
    demo_module.add_arguments(demo)
    demo.set_defaults(func=demo_module.run)

    try:
        from densepred_ros import evaluation
    except ImportError:
        evaluation = None
    if evaluation is not None:
        evaluate = sub.add_parser(
            'evaluate-alignment',
            help='project lidar, align a relative prediction, compare with ground truth')
        evaluation.add_arguments(evaluate)
        evaluate.set_defaults(func=evaluation.run)

    try:
        from densepred_ros.training import cli as training_cli
    except ImportError:
        training_cli = None
    if training_cli is not None:
        train = sub.add_parser('train', help='train or fine-tune a Lotus model')
        training_cli.add_arguments(train)
        train.set_defaults(func=training_cli.run)

    from densepred_ros.models import export as export_module
    export = sub.add_parser('export', help='export the Lotus UNet and VAE to ONNX')
    export_module.add_arguments(export)
    export.set_defaults(func=export_module.run)

    from densepred_ros import bench
    bench_parser = sub.add_parser('bench', help='time real-size Lotus on this CPU')
    bench.add_arguments(bench_parser)
    bench_parser.set_defaults(func=bench.run)

    from densepred_ros import bag_cli
    bag_cli.register(sub)  # bag, evaluate-bag
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the `densepred` console script."""
    from densepred_ros.models import CheckpointError
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CheckpointError, ValueError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
