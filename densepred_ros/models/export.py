"""Export the Lotus UNet and VAE to ONNX with static shapes for one processing size.

`densepred export --model CKPT --height H --width W --output DIR` writes, for the
processing size H×W (what the predictor resizes an image to) padded up to a multiple of
`pad_multiple` (edge replication on the bottom and right, cropped off after decoding):

- `vae_encoder.onnx`: image 1×3×Hp×Wp in [-1, 1] → moments 1×8×Hp/8×Wp/8 (posterior mean
  and log-variance; the sample or mean is taken outside the graph, so no random op is in it);
- `unet.onnx`: sample 1×C×h×w (C = 8 for Lotus-G, 4 for Lotus-D), timestep [1] float32,
  encoder_hidden_states 1×T×D (the empty-prompt embedding), class_labels 1×4 (task switcher)
  → x0 1×4×h×w;
- `vae_decoder.onnx`: x0 1×4×h×w (the UNet's output, scaled latent) → image 1×3×Hp×Wp;
- `densepred_export.json`: sizes, padding, precision, opset, file hashes and I/O shapes.

Inputs and outputs are float32 in every precision; an fp16 export casts inside the graph.
The classic TorchScript exporter (`dynamo=False`) and opset 17 are used, which TensorRT
8.6 and 10 both parse (LayerNormalization is native from opset 17).
"""

import argparse
import json
import os
from pathlib import Path
import shutil
import tempfile
import time
from typing import Dict, Iterable, List, Optional, Sequence, Tuple
import warnings

from densepred_ros.models.base import COMPONENTS, ExportError, PredictorOptions
from densepred_ros.models.checkpoint import (
    default_resolution, file_sha256, resolve_checkpoint, weights_fingerprint)
from densepred_ros.models.components import MODULES
from densepred_ros.models.export_format import (
    FORMAT_VERSION, INPUT_NAMES, METADATA, onnx_io, OPSET, OUTPUT_NAMES, padded_size,
    parse_components, PRECISIONS, PROTOBUF_LIMIT, read_metadata)
from densepred_ros.models.loading import load_predictor
from densepred_ros.models.runtime import processing_size
import torch

__all__ = [
    'add_arguments', 'COMPONENTS', 'example_inputs', 'export_component', 'export_lotus',
    'export_size', 'ExportError', 'file_sha256', 'FORMAT_VERSION', 'INPUT_NAMES', 'METADATA',
    'onnx_io', 'OPSET', 'OUTPUT_NAMES', 'padded_size', 'parse_components', 'PRECISIONS',
    'PROTOBUF_LIMIT', 'read_metadata', 'run', 'weights_fingerprint',
]


def example_inputs(component: str, predictor, padded: Tuple[int, int]) -> tuple:
    """Return float32 CPU example torch tensors of the exported shapes for one component."""
    latent = (padded[0] // 8, padded[1] // 8)
    channels = predictor.vae.config.latent_channels
    generator = torch.Generator('cpu').manual_seed(0)
    if component == 'vae_encoder':
        return (torch.rand((1, 3) + padded, generator=generator) * 2 - 1,)
    if component == 'vae_decoder':
        return (torch.randn((1, channels) + latent, generator=generator),)
    sample = torch.randn((1, predictor.unet.config.in_channels) + latent, generator=generator)
    return (sample, torch.tensor([999.0]), predictor.prompt_embeds.float().cpu(),
            predictor.task_emb.float().cpu())


def _module(component: str, predictor, dtype):
    weights = predictor.unet if component == 'unet' else predictor.vae
    return MODULES[component](weights.to('cpu', dtype)).eval()


def export_component(module, inputs: Sequence, path: Path,
                     input_names: List[str], output_names: List[str],
                     opset: int = OPSET) -> Path:
    """Export one module to a single ONNX file (plus `<file>.data` above 2 GB).

    The classic exporter writes every weight to its own file when the model exceeds the
    protobuf limit; the graph is therefore exported to a scratch folder and saved again
    with at most one external-data file next to it.
    """
    import onnx   # heavy optional library
    path = Path(path)
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        raw = Path(scratch) / path.name
        with torch.inference_mode(), warnings.catch_warnings():
            # The tracer warns about every shape-dependent branch: with static shapes
            # each is taken exactly as at run time.
            warnings.simplefilter('ignore', torch.jit.TracerWarning)
            # torch >= 2.9 marks the TorchScript exporter deprecated; it is still the one
            # that TensorRT 8.6/10 read best (static shapes, opset 17).
            warnings.filterwarnings('ignore', category=DeprecationWarning)
            warnings.filterwarnings('ignore', message='Constant folding')
            torch.onnx.export(module, tuple(inputs), str(raw), input_names=input_names,
                              output_names=output_names, opset_version=opset,
                              do_constant_folding=True, dynamo=False)
        if not any(p.name != raw.name for p in Path(scratch).iterdir()):
            shutil.move(str(raw), str(path))
        else:
            model = onnx.load(str(raw), load_external_data=True)
            for stale in (path, Path(str(path) + '.data')):
                stale.unlink(missing_ok=True)
            onnx.save_model(model, str(path), save_as_external_data=True,
                            all_tensors_to_one_file=True, location=path.name + '.data',
                            size_threshold=1024)
    return path


def export_lotus(checkpoint: str, height: int, width: int, output: os.PathLike,
                 components: Iterable[str] = COMPONENTS, precision: str = 'fp32',
                 pad_multiple: int = 8, opset: int = OPSET,
                 allow_pickle: bool = False, log=print) -> Dict:
    """Export a Lotus checkpoint's components to ONNX for one processing size.

    Args:
        checkpoint: local folder or hub id of a Lotus checkpoint (diffusers layout).
        height, width: processing size in pixels (before padding).
        output: folder to write; created if needed, existing files of the same names are
            replaced and the metadata is merged (components exported earlier are kept when
            their sizes and precision match).
        components: any of 'vae_encoder', 'unet', 'vae_decoder'.
        precision: 'fp32' or 'fp16' (weights and compute inside the graph; I/O stays fp32).
        pad_multiple: pad the processing size up to this multiple (8 matches the torch
            predictor exactly; 64 gives whole latents at every UNet level).
        opset: ONNX opset (17: readable by TensorRT 8.6 and 10).

    Returns:
        The metadata written to `output/densepred_export.json`.
    """
    if precision not in PRECISIONS:
        raise ValueError(f'precision must be one of {PRECISIONS}, got {precision!r}')
    components = parse_components(','.join(components))
    padded = padded_size(int(height), int(width), int(pad_multiple))
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    predictor = load_predictor(str(checkpoint), PredictorOptions(device='cpu', dtype='fp32'),
                               allow_pickle=allow_pickle)
    if predictor.spec.family != 'lotus':
        raise ExportError(f'{checkpoint} is a {predictor.spec.family} checkpoint; '
                          'export supports Lotus')
    dtype = torch.float16 if precision == 'fp16' else torch.float32
    meta = {
        'format': FORMAT_VERSION, 'family': 'lotus', 'variant': predictor.spec.variant,
        'space': predictor.spec.space, 'checkpoint': str(checkpoint),
        'weights': predictor.weights_fingerprint,
        'height': int(height), 'width': int(width), 'pad_multiple': int(pad_multiple),
        'padded_height': padded[0], 'padded_width': padded[1],
        'pad_bottom': padded[0] - int(height), 'pad_right': padded[1] - int(width),
        'precision': precision, 'opset': int(opset),
        'scaling_factor': float(predictor.vae.config.scaling_factor),
        'torch_version': torch.__version__, 'components': {},
    }
    previous = read_metadata(output) if (output / METADATA).is_file() else None
    if previous is not None and all(previous.get(k) == meta[k] for k in
                                    ('variant', 'padded_height', 'padded_width', 'precision',
                                     'height', 'width', 'opset')):
        meta['components'].update(previous.get('components', {}))
    for component in components:
        start = time.perf_counter()
        inputs = example_inputs(component, predictor, padded)
        module = _module(component, predictor, dtype)
        path = export_component(module, inputs, output / f'{component}.onnx',
                                INPUT_NAMES[component], OUTPUT_NAMES[component], opset)
        with torch.inference_mode():
            outputs = module(*[t.clone() for t in inputs])
        meta['components'][component] = {
            'file': path.name,
            'sha256': file_sha256(path),
            'bytes': sum(p.stat().st_size for p in (path, Path(str(path) + '.data'))
                         if p.is_file()),
            'inputs': {n: list(t.shape) for n, t in zip(INPUT_NAMES[component], inputs)},
            'outputs': {OUTPUT_NAMES[component][0]: list(outputs.shape)},
        }
        log(f'exported {component} ({precision}, {padded[1]}×{padded[0]}) to {path} '
            f'in {time.perf_counter() - start:.1f} s')
    text = json.dumps(meta, indent=2) + '\n'
    tmp = output / (METADATA + '.tmp')
    tmp.write_text(text)
    os.replace(tmp, output / METADATA)
    predictor.close()
    return meta


def export_size(model: str, height: Optional[int], width: Optional[int],
                image_size: Optional[Sequence[int]] = None,
                processing_resolution: Optional[int] = None) -> Tuple[int, int]:
    """Return the (height, width) to export: given directly, or derived from a camera size.

    Args:
        model: checkpoint folder or hub id (read for its default processing resolution).
        height, width: the processing size, or None when `image_size` is given.
        image_size: (width, height) of the camera images.
        processing_resolution: longest processing edge; None = the checkpoint's default.
    """
    if image_size is None:
        if height is None or width is None:
            raise ValueError('give --height and --width (the processing size) or '
                             '--image-size WIDTH HEIGHT (the camera size)')
        return int(height), int(width)
    if height is not None or width is not None:
        raise ValueError('give either --height/--width or --image-size, not both')
    if processing_resolution is None:
        processing_resolution = default_resolution(resolve_checkpoint(model))
    return processing_size(int(image_size[1]), int(image_size[0]), processing_resolution)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `densepred export` options to a parser."""
    parser.add_argument('--model', required=True, help='Lotus checkpoint folder or hub id')
    parser.add_argument('--height', type=int, default=None,
                        help='processing height in pixels (before padding)')
    parser.add_argument('--width', type=int, default=None,
                        help='processing width in pixels (before padding)')
    parser.add_argument('--image-size', type=int, nargs=2, metavar=('WIDTH', 'HEIGHT'),
                        default=None,
                        help='instead of --height/--width: the camera image size; the '
                             'processing size is derived as the node derives it')
    parser.add_argument('--processing-resolution', type=int, default=None,
                        help='with --image-size: longest processing edge (default: the '
                             "checkpoint's, as the node's model.processing_resolution -1)")
    parser.add_argument('--output', required=True, help='folder for the ONNX files')
    parser.add_argument('--components', default=','.join(COMPONENTS),
                        help='comma list of unet, vae_encoder, vae_decoder')
    parser.add_argument('--precision', default='fp32', choices=PRECISIONS)
    parser.add_argument('--pad-multiple', type=int, default=8, choices=[8, 16, 32, 64],
                        help='pad the processing size to this multiple (8 = as the torch '
                             'predictor)')
    parser.add_argument('--opset', type=int, default=OPSET)
    parser.add_argument('--allow-pickle', action='store_true',
                        help='allow pickle-based weights (.bin/.ckpt): only for trusted files')


def run(args: argparse.Namespace) -> int:
    """Run `densepred export`."""
    height, width = export_size(args.model, args.height, args.width, args.image_size,
                                args.processing_resolution)
    print(f'processing size {width}×{height}')
    export_lotus(args.model, height, width, args.output,
                 components=parse_components(args.components), precision=args.precision,
                 pad_multiple=args.pad_multiple, opset=args.opset,
                 allow_pickle=args.allow_pickle)
    print(f'wrote {Path(args.output) / METADATA}')
    return 0
