"""The `densepred` command line: predict, export, bench, demo, evaluate-alignment, train.

`densepred --help` lists them; `densepred <command> --help` tells each one's options.
Each subcommand imports what it needs when it runs, so `densepred --help` is instant.

Errors follow one policy (`densepred_ros.cli_errors`): a user mistake or a bad input file
prints one line `densepred <command>: error: <what> (<path or value>)` and exits 2; a bug
keeps its traceback (exit 1); Ctrl-C exits 130; `--debug` or DENSEPRED_DEBUG=1 prints the
traceback of every error. `predict` with several inputs (files, folders, glob patterns)
skips a bad image with one such line, processes the rest and exits 2 if any failed.
"""

import argparse
import contextlib
import glob
import os
from pathlib import Path
import sys
import time
from typing import List, Optional, Sequence

from densepred_ros.cli_errors import (EXIT_USER, make_folder, os_error, output_file,
                                      run_command, user_errors, UserError)
from densepred_ros.models.base import DTYPES, LATENTS
from densepred_ros.spaces import SPACES
import numpy as np

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm')
VIDEO_SUFFIXES = ('.mp4', '.m4v', '.mov', '.avi', '.mkv', '.webm', '.mpg', '.mpeg', '.wmv')
_GLOB_CHARACTERS = '*?['


def _looks_like_video(path: Path) -> bool:
    """Return True for a video container by suffix or by its first bytes."""
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return True
    try:
        with open(path, 'rb') as f:
            head = f.read(16)
    except OSError:
        return False
    return (head[4:8] == b'ftyp' or head[:4] == b'\x1aE\xdf\xa3'
            or (head[:4] == b'RIFF' and head[8:12] == b'AVI '))


def read_rgb(path: Path) -> np.ndarray:
    """Read an image file as H×W×3 uint8 RGB; a UserError naming `path` if it cannot be."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert('RGB'), dtype=np.uint8)
    except UnidentifiedImageError as exc:
        if _looks_like_video(path):
            raise UserError('a video, not an image: extract its frames first', path) from exc
        raise UserError('not an image file PIL can read', path) from exc
    except Image.DecompressionBombError as exc:
        raise UserError('image too large (decompression bomb guard)', path) from exc
    except OSError as exc:
        if exc.errno is None:   # PIL's decoder errors: truncated or corrupt data
            raise UserError(f'broken image: {exc}', path) from exc
        raise os_error(exc, 'read', path) from exc


def expand_inputs(items: Sequence[str]) -> List[Path]:
    """Return the image files named by `items`: files, folders (their images) or patterns.

    Raises:
        UserError: a name that is none of these, a folder without images, a pattern that
            matches nothing, or two inputs whose outputs would have the same name.
    """
    paths: List[Path] = []
    for item in items:
        path = Path(os.path.expanduser(item))
        if path.is_dir():
            try:
                found = sorted(p for p in path.iterdir()
                               if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            except OSError as exc:
                raise os_error(exc, 'read', item) from exc
            if not found:
                raise UserError(f'no images ({", ".join(IMAGE_SUFFIXES)}) in the folder', item)
            paths += found
        elif path.is_file():
            paths.append(path)
        elif any(c in item for c in _GLOB_CHARACTERS):
            found = sorted(Path(p) for p in glob.glob(os.path.expanduser(item))
                           if Path(p).is_file())
            if not found:
                raise UserError('no file matches the pattern', item)
            paths += found
        elif path.exists():
            raise UserError('not a file or folder', item)
        else:
            raise UserError('input image not found', item)
    unique, stems = [], {}
    for path in paths:
        other = stems.setdefault(path.stem, path)
        if other.resolve() == path.resolve():
            if other is path:
                unique.append(path)
            continue
        raise UserError(f'would write the same outputs as {other}', path)
    return unique


def picture(values: np.ndarray, space: str) -> np.ndarray:
    """Return an H×W×3 uint8 colour picture of a prediction (near is warm for depth)."""
    from densepred_ros import geometry
    from densepred_ros.pipeline import depth_order
    if space == 'normals':
        return geometry.colorize_normals(values)
    return geometry.colorize_depth(depth_order(values, space))


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--model', required=True,
                        help='checkpoint folder (diffusers layout) or model-hub id')
    parser.add_argument('--family', default='auto', choices=['auto', 'lotus', 'marigold'])
    parser.add_argument('--space', default=None, choices=SPACES,
                        help='override what the model predicts (default: from the checkpoint)')
    parser.add_argument('--processing-resolution', type=int, default=None,
                        help='longest edge in pixels the model runs at; 0 = native '
                             "(default: the model's)")
    parser.add_argument('--dtype', default='auto', choices=DTYPES,
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
    parser.add_argument('--engine-precision', default='fp16',
                        help='TensorRT precision: fp16, fp32 or pairs such as '
                             'unet=fp16,vae_decoder=fp32')
    parser.add_argument('--ort-providers', default='',
                        help='ONNX Runtime providers in order of preference, comma separated')
    parser.add_argument('--threads', type=int, default=0,
                        help="CPU threads for torch and ONNX Runtime (0 = the libraries' default)")
    parser.add_argument('--device', default='auto', help="'auto', 'cpu' or 'cuda[:N]'")
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--latent', default='mean', choices=LATENTS,
                        help="image latent: VAE posterior 'mean' (deterministic) or the "
                             "authors' 'sample'")
    parser.add_argument('--steps', type=int, default=None, help='denoising steps (Marigold)')
    parser.add_argument('--ensemble-size', type=int, default=1, help='ensemble (Marigold)')
    parser.add_argument('--allow-pickle', action='store_true',
                        help='allow pickle-based weights (.bin/.ckpt): only for trusted files')


def _load(args: argparse.Namespace):
    """Load the predictor the arguments name; a UserError for a bad model or option."""
    from densepred_ros.models import CheckpointError, load_predictor, options_from
    from densepred_ros.models.backends import BackendUnavailable
    from densepred_ros.models.export import ExportError
    with user_errors(ValueError, TypeError):
        options = options_from(args, 'cli')
    if args.processing_resolution is not None and args.processing_resolution < 0:
        raise UserError('--processing-resolution must be >= 0 (0 = native)',
                        args.processing_resolution)
    _check_family_and_space(args)
    # Loading reads only the user's checkpoint and export folder and checks the options:
    # each of these exception types means one of them is wrong (a ValueError names the
    # option's value or the export folder itself).
    with user_errors(ValueError), user_errors(CheckpointError, ExportError,
                                              BackendUnavailable, subject=args.model):
        return load_predictor(args.model, options, family=args.family, space=args.space,
                              allow_pickle=args.allow_pickle)


def _check_family_and_space(args: argparse.Namespace) -> None:
    """Raise a UserError when --family or --space contradicts what the checkpoint says."""
    from densepred_ros.models import CheckpointError
    from densepred_ros.models.base import NORMALS
    from densepred_ros.models.loading import (check_layout, detect_family, detect_space,
                                              resolve_checkpoint)
    with user_errors(CheckpointError, subject=args.model):
        path = resolve_checkpoint(args.model)
        check_layout(path, allow_pickle=args.allow_pickle)
    try:
        family = detect_family(path)
    except CheckpointError:
        family = None   # undecidable from the files: --family is the user's answer
    if args.family != 'auto' and family is not None and family != args.family:
        raise UserError(f'a {family} checkpoint, not --family {args.family}', args.model)
    if args.space is None:
        return
    with user_errors(CheckpointError, subject=args.model):
        declared = detect_space(path, args.model)
    if (declared == NORMALS) != (args.space == NORMALS):
        raise UserError(f'a {declared} checkpoint cannot predict --space {args.space}',
                        args.model)


def _check_image(predictor, rgb: np.ndarray, path: Path) -> None:
    """Raise a UserError if the model cannot run on this image (size, export size)."""
    from densepred_ros.models import runtime
    with user_errors(ValueError, subject=path):
        runtime.check_rgb(rgb)
    export_size = getattr(predictor, 'export_size', None)
    if export_size is None or not hasattr(predictor, 'processing_resolution'):
        return
    size = runtime.processing_size(rgb.shape[0], rgb.shape[1], predictor.processing_resolution)
    if tuple(size) != tuple(export_size):
        raise UserError(
            f'processed at {size[1]}×{size[0]}, but --export-dir {predictor.options.export_dir} '
            f'was exported for {export_size[1]}×{export_size[0]}: export for this size or '
            'change --processing-resolution', path)


def _output_paths(output: Path, stem: str) -> List[Path]:
    """Return the files `predict` writes for an input named <stem>."""
    return [output / f'{stem}.npy', output / f'{stem}.png', output / f'{stem}_uncertainty.npy']


def _save(output: Path, stem: str, prediction) -> None:
    """Write <stem>.npy, <stem>.png (and <stem>_uncertainty.npy); renamed once all are written."""
    from PIL import Image
    npy, png, uncertainty = _output_paths(output, stem)
    with contextlib.ExitStack() as stack:
        np.save(stack.enter_context(output_file(npy)), prediction.values)
        Image.fromarray(picture(prediction.values, prediction.space)).save(
            stack.enter_context(output_file(png)))
        if prediction.uncertainty is not None:
            np.save(stack.enter_context(output_file(uncertainty)), prediction.uncertainty)


def run_predict(args: argparse.Namespace) -> int:
    """Predict every input image; write DIR/<stem>.npy and DIR/<stem>.png.

    Returns 0 when every input was written, 2 when some could not be read (each reported
    in one line and skipped; a last line counts them).
    """
    inputs = expand_inputs(args.input)
    output = make_folder(args.output)
    predictor = _load(args)
    spec = predictor.spec
    print(f'model: {spec.family}{"-" + spec.variant if spec.variant else ""} '
          f'({spec.space}) from {spec.source}')
    for choice in getattr(predictor, 'backend_choices', {}).values():
        print(f'  {choice.describe()}')
    failed: List[Path] = []
    unfinished: List[Path] = []
    done = 0
    try:
        for path in inputs:
            try:
                rgb = read_rgb(path)
                _check_image(predictor, rgb, path)
            except UserError as exc:
                if len(inputs) == 1:
                    raise
                print(exc.line('predict'), file=sys.stderr, flush=True)
                failed.append(path)
                continue
            start = time.perf_counter()
            prediction = predictor.predict(rgb)
            elapsed = time.perf_counter() - start
            unfinished = _output_paths(output, path.stem)
            _save(output, path.stem, prediction)
            unfinished = []
            done += 1
            print(f'{path.name}: {rgb.shape[1]}×{rgb.shape[0]} → {output / path.stem}.npy/.png '
                  f'in {elapsed:.2f} s', flush=True)
    except KeyboardInterrupt as exc:
        for partial in unfinished:   # interrupted between the renames of one input's files
            partial.unlink(missing_ok=True)
        exc.add_note(f'{done} of {len(inputs)} inputs written to {output} (every file there '
                     'is complete)')
        raise
    if len(inputs) > 1:
        print(f'{done} of {len(inputs)} inputs written to {output}, {len(failed)} skipped')
    if failed:
        raise UserError(f'{len(failed)} of {len(inputs)} inputs skipped (each reported above), '
                        'the first', failed[0])
    return 0


def _run_export(args: argparse.Namespace) -> int:
    """`densepred export` with the user's checkpoint and sizes checked first."""
    from densepred_ros.models import CheckpointError
    from densepred_ros.models import export as export_module
    from densepred_ros.models.export import ExportError
    from densepred_ros.models.loading import check_layout, detect_family, resolve_checkpoint
    with user_errors(CheckpointError, subject=args.model):
        path = resolve_checkpoint(args.model)
        check_layout(path, allow_pickle=args.allow_pickle)
        family = detect_family(path)
    if family != 'lotus':
        raise UserError(f'a {family} checkpoint: export supports Lotus', args.model)
    with user_errors(ValueError, subject=f'--components {args.components}'):
        export_module.parse_components(args.components)
    with user_errors(ValueError, CheckpointError):
        height, width = export_module.export_size(
            args.model, args.height, args.width, args.image_size, args.processing_resolution)
        export_module.padded_size(height, width, args.pad_multiple)
    make_folder(args.output)
    with user_errors(CheckpointError, ExportError, subject=args.model):
        return export_module.run(args)


def _run_evaluate_alignment(args: argparse.Namespace) -> int:
    """`densepred evaluate-alignment` (it checks its folders and numbers first)."""
    from densepred_ros import evaluation
    return evaluation.run(args)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, as every other error."""

    def error(self, message: str):
        """Print `<prog>: error: <message>` and exit 2."""
        self.exit(2, f'{self.prog}: error: {message} (see {self.prog} --help)\n')


def build_parser() -> argparse.ArgumentParser:
    """Return the `densepred` argument parser with every subcommand."""
    parser = _Parser(
        prog='densepred',
        description='Single-step diffusion depth and normals, scaled to metres with lidar.')
    parser.add_argument('--debug', action='store_true',
                        help='print the traceback of every error (also: DENSEPRED_DEBUG=1)')
    sub = parser.add_subparsers(dest='command', required=True)

    predict = sub.add_parser('predict', help='predict depth/disparity/normals for images')
    _add_model_arguments(predict)
    predict.add_argument('--input', nargs='+', required=True,
                         help='image files, folders of images or glob patterns')
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
        evaluate.set_defaults(func=_run_evaluate_alignment)

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
    export.set_defaults(func=_run_export)

    from densepred_ros import bench
    bench_parser = sub.add_parser('bench', help='time real-size Lotus on this CPU')
    bench.add_arguments(bench_parser)
    bench_parser.set_defaults(func=bench.run)

    from densepred_ros import bag_cli
    bag_cli.register(sub)  # bag, evaluate-bag
    for command in sub.choices.values():
        # Also accepted after the subcommand; SUPPRESS keeps a --debug given before it.
        command.add_argument('--debug', action='store_true', default=argparse.SUPPRESS,
                             help='print the traceback of every error')
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the `densepred` console script; returns the exit code.

    0: done; 1: a bug (traceback printed); 2: a user mistake or bad input (one line);
    130: interrupted (Ctrl-C).
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:   # --help (0) or a usage error (2, one line printed)
        return exc.code if isinstance(exc.code, int) else EXIT_USER
    return run_command(args.command, args.func, args)


if __name__ == '__main__':
    sys.exit(main())
