"""`densepred bench`: time real-size Lotus (random weights) on this machine's CPU.

The architectures come from the configs shipped in `densepred_ros/configs/` (the
Stable Diffusion 2 UNet, VAE and text encoder); the weights are random, drawn from one
seed, so every configuration runs the same model and no download is needed. Each
configuration runs in its own process (the peak resident memory is a per-process high-water
mark), over the resolutions in increasing order. Configurations:

- `ours`: our default CPU path (`LotusPredictor` with dtype 'auto': bf16 weights where the
  CPU has native bf16, else fp32; channels-last; text encoder dropped after load; posterior
  mean);
- `ours_fp32`: the same predictor in fp32 (exact);
- `authors_fp32` / `authors_autocast`: the Lotus authors' pipeline steps (fp32 weights, text
  encoder kept and run per frame, latent sampled), plain or under `torch.autocast` bf16
  (the setting of their `infer.py`);
- `marigold`: Marigold's defaults on the same architecture (8-channel UNet without class
  embedding, 4 DDIM steps, posterior mode, fp32);
- `ours_fp32_cl`: fp32 with channels-last convolutions;
- `ours_bf16_nchw`: bf16 without channels-last (shows what the layout brings);
- `ours_onnxruntime`: ONNX Runtime CPU fp32 (exports the real-size model first: slow).

Absolute times on a shared CPU are noisy; the ratios between configurations measured in the
same run are the meaningful figures.
"""

import argparse
import json
import os
from pathlib import Path
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

from densepred_ros.cli_errors import (make_folder, output_file, run_command, user_errors,
                                      UserError)

CONFIGS = ('ours', 'ours_fp32', 'authors_fp32', 'authors_autocast', 'marigold')
EXTRA_CONFIGS = ('ours_fp32_cl', 'ours_bf16_nchw', 'ours_onnxruntime')
STAGES = ('text_encoder', 'vae_encode', 'unet', 'vae_decode')
DEFAULT_RESOLUTIONS = (256, 384, 512)
MARIGOLD_STEPS = 4
SEED = 0
BOS, EOS = 49406, 49407


# --------------------------------------------------------------------------------------
# Architectures
# --------------------------------------------------------------------------------------

def load_config(name: str) -> Dict:
    """Return a shipped architecture config (`sd2_unet`, `sd2_vae`, `sd2_text_encoder`)."""
    path = Path(__file__).resolve().parent / 'configs' / f'{name}.json'
    config = json.loads(path.read_text())
    config.pop('_comment', None)
    return config


def unet_config(kind: str, tiny: bool = False) -> Dict:
    """Return the UNet config for 'lotus_g', 'lotus_d' or 'marigold' (real size or tiny)."""
    if tiny:
        config = {'sample_size': 8,
                  'down_block_types': ['CrossAttnDownBlock2D', 'DownBlock2D'],
                  'up_block_types': ['UpBlock2D', 'CrossAttnUpBlock2D'],
                  'block_out_channels': [32, 64], 'layers_per_block': 1,
                  'norm_num_groups': 8, 'cross_attention_dim': 32, 'attention_head_dim': 8,
                  'use_linear_projection': True}
    else:
        config = load_config('sd2_unet')
    config['in_channels'] = 4 if kind == 'lotus_d' else 8
    if kind != 'marigold':
        config.update(class_embed_type='projection', projection_class_embeddings_input_dim=4)
    return config


def vae_config(tiny: bool = False) -> Dict:
    """Return the VAE config (real size or tiny)."""
    if tiny:
        return {'block_out_channels': [8, 16, 16, 16], 'layers_per_block': 1,
                'norm_num_groups': 8, 'down_block_types': ['DownEncoderBlock2D'] * 4,
                'up_block_types': ['UpDecoderBlock2D'] * 4, 'latent_channels': 4,
                'scaling_factor': 0.18215}
    return load_config('sd2_vae')


def text_config(tiny: bool = False) -> Dict:
    """Return the CLIP text encoder config (real size or tiny)."""
    config = load_config('sd2_text_encoder')
    if tiny:
        config.update(hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                      num_attention_heads=4, projection_dim=32)
    return config


def build_text_encoder(tiny: bool, device: str = 'cpu'):
    """Return the CLIP text encoder with random weights drawn from SEED (float32)."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel
    with torch.device(device):
        torch.manual_seed(SEED)
        return CLIPTextModel(CLIPTextConfig(**text_config(tiny))).eval()


def build_models(kind: str, tiny: bool, device: str = 'cpu', text: bool = True):
    """Return (text_encoder or None, unet, vae) with random weights from SEED (float32)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    text = build_text_encoder(tiny, device) if text else None
    with torch.device(device):
        torch.manual_seed(SEED + 1)
        unet = UNet2DConditionModel(**unet_config(kind, tiny)).eval()
        torch.manual_seed(SEED + 2)
        vae = AutoencoderKL(**vae_config(tiny)).eval()
    return text, unet, vae


def scheduler(prediction_type: str):
    """Return Stable Diffusion 2's DDIM schedule (x0 for Lotus, v for Marigold)."""
    from diffusers import DDIMScheduler
    return DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                         beta_schedule='scaled_linear', clip_sample=False,
                         set_alpha_to_one=False, steps_offset=1,
                         prediction_type=prediction_type, timestep_spacing='trailing')


def empty_prompt(text_encoder):
    """Embed the empty prompt as the authors do (start and end tokens, no padding)."""
    import torch
    ids = torch.tensor([[BOS, EOS]]) % text_encoder.config.vocab_size
    return text_encoder(ids)[0]


def test_image(size: int):
    """Return a deterministic size×size×3 uint8 image with structure at several scales."""
    import numpy as np
    v, u = np.mgrid[0:size, 0:size] / size
    rgb = np.stack([0.5 + 0.5 * np.sin(9 * u + 3 * v), 0.5 + 0.5 * np.cos(5 * v * u + 2 * v),
                    (u + v) / 2], axis=-1)
    noise = np.random.default_rng(0).random((size, size, 3)) * 0.1
    return (np.clip(rgb + noise, 0, 1) * 255).astype(np.uint8)


# --------------------------------------------------------------------------------------
# Memory and throughput
# --------------------------------------------------------------------------------------

def reset_peak_rss() -> bool:
    """Reset this process's peak resident set (Linux `clear_refs` 5); False if refused."""
    try:
        with open('/proc/self/clear_refs', 'w') as handle:
            handle.write('5')
        return True
    except OSError:
        return False


def peak_rss_gb() -> float:
    """Return this process's peak resident set in GB (VmHWM, else ru_maxrss)."""
    try:
        for line in Path('/proc/self/status').read_text().splitlines():
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def matmul_gflops(dtype_name: str, size: int = 2048, seconds: float = 1.5) -> float:
    """Measure the best square-matmul throughput in GFLOP/s for 'fp32' or 'bf16'."""
    import torch
    dtype = torch.bfloat16 if dtype_name == 'bf16' else torch.float32
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    torch.mm(a, b)
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * size ** 3 / (time.perf_counter() - start) / 1e9)
    return best


def stage_flops(resolutions: Sequence[int], tiny: bool) -> Dict[str, Dict[str, float]]:
    """Count each stage's FLOPs per resolution with torch.utils.flop_counter (meta tensors)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from diffusers import AutoencoderKL, UNet2DConditionModel
    result = {}
    with torch.device('meta'), torch.no_grad():
        unet = UNet2DConditionModel(**unet_config('lotus_g', tiny)).eval()
        marigold = UNet2DConditionModel(**unet_config('marigold', tiny)).eval()
        vae = AutoencoderKL(**vae_config(tiny)).eval()
        dim = unet.config.cross_attention_dim
        for size in resolutions:
            latent = torch.zeros(1, 4, size // 8, size // 8)
            calls = {
                'vae_encode': lambda: vae.encode(torch.zeros(1, 3, size, size)),
                'unet': lambda: unet(torch.zeros(1, 8, size // 8, size // 8),
                                     torch.tensor([999.0]), torch.zeros(1, 2, dim),
                                     class_labels=torch.zeros(1, 4)),
                'marigold_unet': lambda: marigold(torch.zeros(1, 8, size // 8, size // 8),
                                                  torch.tensor([999.0]),
                                                  torch.zeros(1, 2, dim)),
                'vae_decode': lambda: vae.decode(latent),
            }
            counts = {}
            for name, call in calls.items():
                with FlopCounterMode(display=False) as counter:
                    call()
                counts[name] = counter.get_total_flops() / 1e9
            result[str(size)] = counts
    return result


# --------------------------------------------------------------------------------------
# One configuration (runs in its own process)
# --------------------------------------------------------------------------------------

def _timed(fn, timings: Dict[str, float], name: str):
    start = time.perf_counter()
    out = fn()
    timings[name] = timings.get(name, 0.0) + time.perf_counter() - start
    return out


def _ours_frame(predictor, rgb):
    """Run `LotusPredictor.predict` with each component timed; return (depth, timings)."""
    timings: Dict[str, float] = {}
    original = dict(predictor.components)
    stage = {'vae_encoder': 'vae_encode', 'unet': 'unet', 'vae_decoder': 'vae_decode'}
    try:
        for name, runner in original.items():
            predictor.components[name] = (
                lambda *t, _r=runner, _n=stage[name]: _timed(lambda: _r(*t), timings, _n))
        start = time.perf_counter()
        depth = predictor.predict(rgb).values
        timings['total'] = time.perf_counter() - start
    finally:
        predictor.components.update(original)
    return depth, timings


def _authors_frame(parts, rgb, autocast: bool, seed: int = SEED):
    """One frame of the authors' Lotus-G pipeline: prompt encoded per frame, latent sampled."""
    import numpy as np
    import torch
    text, unet, vae, task_emb = parts
    timings: Dict[str, float] = {}
    generator = torch.Generator('cpu').manual_seed(seed)
    image = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    context = torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast)
    start = time.perf_counter()
    with torch.no_grad(), context:
        prompt = _timed(lambda: empty_prompt(text), timings, 'text_encoder')
        latent = _timed(lambda: vae.encode(image).latent_dist.sample(generator),
                        timings, 'vae_encode') * vae.config.scaling_factor
        noise = torch.randn(latent.shape, generator=generator)
        x0 = _timed(lambda: unet(torch.cat([latent, noise], 1), 999, encoder_hidden_states=prompt,
                                 class_labels=task_emb, return_dict=False)[0],
                    timings, 'unet')
        decoded = _timed(lambda: vae.decode(x0 / vae.config.scaling_factor,
                                            return_dict=False)[0], timings, 'vae_decode')
    timings['total'] = time.perf_counter() - start
    depth = (decoded.float() / 2 + 0.5).clamp(0, 1)[0].mean(0).numpy()
    return depth.astype(np.float32), timings


def _marigold_frame(parts, rgb, steps: int = MARIGOLD_STEPS):
    """One frame of Marigold's defaults: posterior mode, `steps` DDIM steps, fp32."""
    import numpy as np
    import torch
    unet, vae, prompt, sched = parts
    timings: Dict[str, float] = {}
    generator = torch.Generator('cpu').manual_seed(SEED)
    image = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    start = time.perf_counter()
    with torch.no_grad():
        latent = _timed(lambda: vae.encode(image).latent_dist.mode(), timings,
                        'vae_encode') * vae.config.scaling_factor
        pred = torch.randn(latent.shape, generator=generator)
        sched.set_timesteps(steps)
        for t in sched.timesteps:
            out = _timed(lambda: unet(torch.cat([latent, pred], 1), t,
                                      encoder_hidden_states=prompt, return_dict=False)[0],
                         timings, 'unet')
            pred = sched.step(out, t, pred, generator=generator).prev_sample
        decoded = _timed(lambda: vae.decode(pred / vae.config.scaling_factor,
                                            return_dict=False)[0], timings, 'vae_decode')
    timings['total'] = time.perf_counter() - start
    depth = (decoded / 2 + 0.5).clamp(0, 1)[0].mean(0).numpy()
    return depth.astype(np.float32), timings


def _prepare(config: str, tiny: bool, scratch: Path):
    """Build a configuration's models the way its pipeline would hold them."""
    import torch
    from densepred_ros.models.base import PredictorOptions
    from densepred_ros.models.lotus import LotusPredictor, task_embedding
    if config == 'marigold':
        text, unet, vae = build_models('marigold', tiny)
        with torch.no_grad():
            prompt = empty_prompt(text)
        del text
        return _marigold_frame, (unet, vae, prompt, scheduler('v_prediction'))
    if config.startswith('authors'):
        text, unet, vae = build_models('lotus_g', tiny)
        return ((lambda parts, rgb: _authors_frame(parts, rgb, config == 'authors_autocast')),
                (text, unet, vae, task_embedding(True)))
    # As LotusPredictor loads: embed the prompt and drop the text encoder first.
    text = build_text_encoder(tiny)
    with torch.no_grad():
        prompt = empty_prompt(text)
    del text
    _, unet, vae = build_models('lotus_g', tiny, text=False)
    options = {'ours': {'dtype': 'auto'}, 'ours_fp32': {'dtype': 'fp32'},
               'ours_fp32_cl': {'dtype': 'fp32', 'channels_last': True},
               'ours_bf16_nchw': {'dtype': 'bf16', 'channels_last': False},
               'ours_onnxruntime': {'dtype': 'fp32'}}[config]
    predictor = LotusPredictor.from_modules(
        unet, vae, scheduler('sample'), prompt, 'depth',
        PredictorOptions(device='cpu', processing_resolution=0, **options))
    return _ours_frame, predictor


def _export_for_ort(predictor, size: int, folder: Path):
    """Export the predictor's components for one size and switch it to ONNX Runtime."""
    import dataclasses
    import torch
    from densepred_ros.models import backends, export
    folder.mkdir(parents=True, exist_ok=True)
    # Running the UNet on ONNX Runtime frees the predictor's torch UNet; the next size is
    # exported from the copy kept here.
    predictor.unet = predictor.__dict__.setdefault('bench_torch_unet', predictor.unet)
    meta = {'format': export.FORMAT_VERSION, 'variant': predictor.spec.variant,
            'height': size, 'width': size, 'pad_multiple': 8, 'padded_height': size,
            'padded_width': size, 'precision': 'fp32', 'components': {}}
    for component in backends.COMPONENTS:
        inputs = export.example_inputs(component, predictor, (size, size))
        module = export._module(component, predictor, torch.float32)
        path = export.export_component(module, inputs, folder / f'{component}.onnx',
                                       export.INPUT_NAMES[component],
                                       export.OUTPUT_NAMES[component])
        meta['components'][component] = {
            'file': path.name, 'inputs': {n: list(t.shape) for n, t in
                                          zip(export.INPUT_NAMES[component], inputs)},
            'outputs': {export.OUTPUT_NAMES[component][0]: list(module(*inputs).shape)}}
    (folder / export.METADATA).write_text(json.dumps(meta))
    predictor.options = dataclasses.replace(predictor.options, backend='onnxruntime',
                                            export_dir=str(folder))
    predictor.components, predictor.backend_choices = predictor._open_components(
        backends.parse_backend_spec('onnxruntime'))


def run_worker(config: str, resolutions: Sequence[int], repeats: int, warmup: int,
               tiny: bool, threads: int, output: Path) -> Dict:
    """Time one configuration over the resolutions (ascending) and write the results."""
    import numpy as np
    import torch
    from densepred_ros.models.loading import quiet_libraries
    torch.set_num_threads(threads)
    quiet_libraries()
    start = time.perf_counter()
    frame, state = _prepare(config, tiny, output.parent)
    result = {'config': config, 'load_s': time.perf_counter() - start,
              'load_peak_gb': peak_rss_gb(), 'threads': torch.get_num_threads(),
              'resolutions': {}}
    result['dtype'] = str(getattr(state, 'dtype', 'torch.float32')).replace('torch.', '')
    if config == 'authors_autocast':
        result['dtype'] = 'bfloat16 autocast'
    for size in sorted(resolutions):
        if config == 'ours_onnxruntime':
            _export_for_ort(state, size, output.parent / f'onnx_{size}')
        if hasattr(state, 'backend_choices'):
            result['components'] = {k: v.describe() for k, v in state.backend_choices.items()}
        rgb = test_image(size)
        reset_peak_rss()
        for _ in range(warmup):
            frame(state, rgb)
        runs = [frame(state, rgb) for _ in range(repeats)]
        depth = runs[-1][0]
        timings = {k: float(np.median([r[1].get(k, 0.0) for r in runs]))
                   for k in runs[0][1]}
        np.save(output.parent / f'{config}_{size}.npy', depth)
        result['resolutions'][str(size)] = {
            'seconds': timings, 'peak_gb': peak_rss_gb(),
            'depth_file': str(output.parent / f'{config}_{size}.npy')}
        # After every size, so that a configuration stopped by --config-timeout keeps
        # the sizes it finished.
        output.write_text(json.dumps(result))
    return result


# --------------------------------------------------------------------------------------
# The whole run
# --------------------------------------------------------------------------------------

def run_config(config: str, args: argparse.Namespace, scratch: Path) -> Optional[Dict]:
    """Run one configuration in a fresh Python process; return its results or None."""
    out = scratch / f'{config}.json'
    command = [sys.executable, '-m', 'densepred_ros.bench', '--worker', config,
               '--resolutions', ','.join(map(str, args.resolutions)),
               '--repeats', str(args.repeats), '--warmup', str(args.warmup),
               '--threads', str(args.threads), '--worker-output', str(out)]
    if args.tiny:
        command.append('--tiny')
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True,
                              timeout=args.config_timeout or None)
    except subprocess.TimeoutExpired:
        partial = json.loads(out.read_text()) if out.is_file() else None
        done_sizes = sorted(partial['resolutions'], key=int) if partial else []
        print(f'{config}: stopped after {args.config_timeout} s (--config-timeout); '
              f'finished sizes: {", ".join(done_sizes) or "none"}', file=sys.stderr)
        return partial
    if done.returncode != 0 or not out.is_file():
        print(f'{config}: failed (exit {done.returncode})\n{done.stderr[-2000:]}',
              file=sys.stderr)
        return None
    return json.loads(out.read_text())


def summarize(results: Dict[str, Dict], flops: Dict, peaks: Dict[str, float]) -> Dict:
    """Derive speed-ups, memory savings, output differences and machine-limit fractions."""
    import numpy as np
    summary = {}
    for size in sorted({s for r in results.values() for s in r['resolutions']}, key=int):
        row = {}
        ours = results.get('ours', {}).get('resolutions', {}).get(size)
        depth = {c: np.load(r['resolutions'][size]['depth_file'])
                 for c, r in results.items() if size in r['resolutions']}
        for config, result in results.items():
            entry = result['resolutions'].get(size)
            if entry is None:
                continue
            seconds = entry['seconds']
            f = flops.get(size, {})
            unet_flops = f.get('marigold_unet' if config == 'marigold' else 'unet', 0.0)
            steps = MARIGOLD_STEPS if config == 'marigold' else 1
            work = {'vae_encode': f.get('vae_encode', 0.0), 'unet': unet_flops * steps,
                    'vae_decode': f.get('vae_decode', 0.0)}
            bf16 = 'bfloat16' in result.get('dtype', '')
            peak = peaks['bf16' if bf16 else 'fp32']
            fraction = {k: work[k] / seconds[k] / peak for k in work
                        if seconds.get(k, 0.0) > 0}
            row[config] = {
                'seconds': seconds,
                'peak_gb': max(entry['peak_gb'], result['load_peak_gb']),
                'inference_peak_gb': entry['peak_gb'],
                'gflop_per_s': sum(work.values()) / seconds['total'],
                'fraction_of_peak': fraction,
                'speedup_of_ours': (seconds['total'] / ours['seconds']['total']
                                    if ours else None),
                'ours_saves_gb': (max(entry['peak_gb'], result['load_peak_gb'])
                                  - max(ours['peak_gb'], results['ours']['load_peak_gb'])
                                  if ours else None),
            }
        pairs = [('ours', 'ours_fp32'), ('ours', 'authors_fp32'),
                 ('authors_autocast', 'authors_fp32'), ('ours_bf16_nchw', 'ours_fp32'),
                 ('ours_onnxruntime', 'ours_fp32'), ('ours_fp32_cl', 'ours_fp32'),
                 ('authors_autocast', 'ours_fp32')]
        row['max_abs_diff'] = {f'{a} vs {b}': float(np.abs(depth[a] - depth[b]).max())
                               for a, b in pairs if a in depth and b in depth}
        summary[size] = row
    return summary


def print_report(summary: Dict, flops: Dict, peaks: Dict[str, float], elapsed: float,
                 results_dtypes: Dict[str, str]) -> None:
    """Print the tables of a run."""
    print(f'\nmatmul throughput measured in this run: bf16 {peaks["bf16"]:.1f} GFLOP/s '
          f'({"native" if peaks["native_bf16"] else "NOT native here: emulated"}), '
          f'fp32 {peaks["fp32"]:.0f} GFLOP/s ({peaks["size"]}², this process)')
    for size, row in summary.items():
        f = flops.get(size, {})
        print(f'\n{size}×{size}: GFLOP per stage: encode {f.get("vae_encode", 0):.0f}, '
              f'UNet {f.get("unet", 0):.0f}, decode {f.get("vae_decode", 0):.0f}')
        print(f'{"config":18s} {"dtype":>8s} {"text":>6s} {"encode":>7s} {"unet":>7s} '
              f'{"decode":>7s} {"total":>7s} {"peak GB":>8s} {"infer GB":>8s} {"ours x":>7s} '
              f'{"saves GB":>8s}  fraction of matmul peak (enc/unet/dec)')
        for config, r in row.items():
            if config == 'max_abs_diff':
                continue
            s = r['seconds']
            frac = '/'.join(f'{r["fraction_of_peak"].get(k, 0):.2f}'
                            for k in ('vae_encode', 'unet', 'vae_decode'))
            speed = f'{r["speedup_of_ours"]:.2f}' if r['speedup_of_ours'] else '-'
            saves = f'{r["ours_saves_gb"]:.2f}' if r['ours_saves_gb'] is not None else '-'
            dtype = results_dtypes.get(config, '')[:8]
            print(f'{config:18s} {dtype:>8s} {s.get("text_encoder", 0):6.2f} '
                  f'{s.get("vae_encode", 0):7.2f} {s.get("unet", 0):7.2f} '
                  f'{s.get("vae_decode", 0):7.2f} {s["total"]:7.2f} '
                  f'{r["peak_gb"]:8.2f} {r["inference_peak_gb"]:8.2f} {speed:>7s} '
                  f'{saves:>8s}  {frac}')
        for pair, diff in row['max_abs_diff'].items():
            print(f'  max |Δdepth| {pair}: {diff:.2e}')
    print(f'\nwhole run {elapsed:.0f} s. Times are wall-clock on a possibly shared CPU: '
          'compare configurations within this run, not across runs.')


def parse_resolutions(text: str) -> List[int]:
    """Parse '256,384,512' into sizes (multiples of 8, at least 64)."""
    try:
        sizes = sorted({int(s) for s in str(text).split(',') if s.strip()})
    except ValueError as exc:
        raise ValueError(f'resolutions must be a comma list of integers, got {text!r}') from exc
    bad = [s for s in sizes if s < 64 or s % 8]
    if bad or not sizes:
        raise ValueError(f'resolutions must be multiples of 8 and >= 64, got {text!r}')
    return sizes


def parse_configs(text: str) -> List[str]:
    """Parse a comma list of configuration names ('ours' is always included)."""
    names = [s.strip() for s in str(text).split(',') if s.strip()]
    unknown = [n for n in names if n not in CONFIGS + EXTRA_CONFIGS]
    if unknown:
        raise ValueError(f'unknown bench configuration(s) {unknown}; known: '
                         f'{list(CONFIGS + EXTRA_CONFIGS)}')
    return ['ours'] + [n for n in names if n != 'ours']


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `densepred bench` options to a parser."""
    parser.add_argument('--resolutions', default=','.join(map(str, DEFAULT_RESOLUTIONS)),
                        help='comma list of square processing sizes')
    parser.add_argument('--repeats', type=int, default=1, help='timed frames per size')
    parser.add_argument('--warmup', type=int, default=1, help='untimed frames per size')
    parser.add_argument('--configs', default=','.join(CONFIGS),
                        help=f'comma list from {", ".join(CONFIGS + EXTRA_CONFIGS)}')
    parser.add_argument('--threads', type=int, default=2, help='torch CPU threads')
    parser.add_argument('--tiny', action='store_true',
                        help='tiny architecture (checks that the command works; no timing '
                             'meaning)')
    parser.add_argument('--config-timeout', type=float, default=0,
                        help='stop a configuration after this many seconds, keeping the sizes '
                             'it finished (0 = never)')
    parser.add_argument('--json', default='', help='also write the results to this file')


def run(args: argparse.Namespace) -> int:
    """Run `densepred bench`."""
    import torch
    with user_errors(ValueError, subject=f'--resolutions {args.resolutions}'):
        args.resolutions = parse_resolutions(args.resolutions)
    with user_errors(ValueError, subject=f'--configs {args.configs}'):
        configs = parse_configs(args.configs)
    for flag, value, least in (('--repeats', args.repeats, 1), ('--warmup', args.warmup, 0),
                               ('--threads', args.threads, 1),
                               ('--config-timeout', args.config_timeout, 0)):
        if value < least:
            raise UserError(f'{flag} must be >= {least}', value)
    if args.json:
        if Path(args.json).is_dir():
            raise UserError('--json names a folder, not a file', args.json)
        make_folder(Path(args.json).expanduser().resolve().parent)
    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    from densepred_ros.models.runtime import cpu_has_bf16
    native = cpu_has_bf16()
    # Without native bf16 a 2048² bf16 product takes minutes: measure a smaller one.
    size = 256 if args.tiny else 2048
    seconds = 0.2 if args.tiny else 1.5
    peaks = {'bf16': matmul_gflops('bf16', size if native else min(size, 384), seconds),
             'fp32': matmul_gflops('fp32', size, seconds), 'native_bf16': native,
             'size': size}
    flops = stage_flops(args.resolutions, args.tiny)
    results = {}
    with tempfile.TemporaryDirectory(prefix='densepred_bench_') as scratch:
        for config in configs:
            t0 = time.perf_counter()
            result = run_config(config, args, Path(scratch))
            if result is not None:
                results[config] = result
                print(f'{config}: done in {time.perf_counter() - t0:.0f} s', flush=True)
        if 'ours' not in results:
            print('densepred bench: error: the default configuration failed (see its output '
                  'above)', file=sys.stderr)
            return 1
        summary = summarize(results, flops, peaks)
    elapsed = time.perf_counter() - start
    print_report(summary, flops, peaks, elapsed,
                 {c: r.get('dtype', '') for c, r in results.items()})
    if args.json:
        with output_file(Path(args.json)) as tmp:
            tmp.write_text(json.dumps(
                {'matmul_gflops': peaks, 'stage_gflop': flops, 'summary': summary,
                 'components': {c: r.get('components') for c, r in results.items()},
                 'load': {c: {'seconds': r['load_s'], 'peak_gb': r['load_peak_gb']}
                          for c, r in results.items()},
                 'seconds': elapsed, 'tiny': args.tiny}, indent=2))
    return 0


def _main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument('--worker', default='', help=argparse.SUPPRESS)
    parser.add_argument('--worker-output', default='', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args.worker, parse_resolutions(args.resolutions), args.repeats,
                   args.warmup, args.tiny, args.threads, Path(args.worker_output))
        return 0
    return run_command('bench', run, args)


if __name__ == '__main__':
    sys.exit(_main())
