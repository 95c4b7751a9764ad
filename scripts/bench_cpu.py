#!/usr/bin/env python3
"""Compare CPU runtimes on one real-size Lotus stage, side by side in one process.

For the VAE decoder (the dominant cost of single-step Lotus), the VAE encoder or the UNet
with random weights from the shipped SD 2 configs, this times, alternating so that a shared
CPU's load hits every variant alike: torch fp32 (NCHW), torch fp32 channels-last, torch
bf16 channels-last (only where the CPU has native bf16), and ONNX Runtime CPU fp32 on the
same module exported with `densepred_ros.models.export`; with `--int8`, ONNX Runtime with
the weights quantized to int8 (`onnxruntime.quantization.quantize_dynamic`); with
`--compile`, `torch.compile` (inductor, fp32, channels-last; its compile time is printed);
with `--emulated-bf16`, torch bf16 also where the CPU lacks native bf16. It prints the
median seconds, the speed-up and the max abs difference to torch fp32 (for the VAE decoder
half of it is the largest change of a [0, 1] depth value).

    python scripts/bench_cpu.py --stage vae_decoder --size 256 --repeats 3 --int8 --compile
"""

import argparse
from pathlib import Path
import statistics
import tempfile
import time

from densepred_ros import bench
from densepred_ros.models import backends, export
from densepred_ros.models.runtime import cpu_has_bf16
import torch


def _module(stage: str):
    _, unet, vae = bench.build_models('lotus_g', tiny=False)
    if stage == 'unet':
        del vae
        return backends.UNetModule(unet)
    del unet
    if stage == 'vae_encoder':
        return backends.VaeEncoderModule(vae)
    return backends.VaeDecoderModule(vae)


def _inputs(stage: str, size: int):
    generator = torch.Generator('cpu').manual_seed(0)
    latent = (size // 8, size // 8)
    if stage == 'vae_encoder':
        return (torch.rand((1, 3, size, size), generator=generator) * 2 - 1,)
    if stage == 'vae_decoder':
        return (torch.randn((1, 4) + latent, generator=generator),)
    return (torch.randn((1, 8) + latent, generator=generator), torch.tensor([999.0]),
            torch.randn(1, 2, 1024, generator=generator), torch.randn(1, 4, generator=generator))


def main() -> int:
    """Run the comparison and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--stage', default='vae_decoder', choices=backends.COMPONENTS)
    parser.add_argument('--size', type=int, default=256)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--int8', action='store_true', help='also ONNX Runtime int8 weights')
    parser.add_argument('--compile', action='store_true', help='also torch.compile (inductor)')
    parser.add_argument('--emulated-bf16', action='store_true',
                        help='also torch bf16 where the CPU has no native bf16 (slow)')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    module = _module(args.stage).eval()
    inputs = _inputs(args.stage, args.size)
    variants = {}

    def torch_variant(layout, dtype):
        def run():
            tensors = [t.contiguous(memory_format=layout) if t.ndim == 4 else t for t in inputs]
            with torch.no_grad():
                return module(*tensors)
        return run, layout, dtype

    variants['torch fp32 nchw'] = torch_variant(torch.contiguous_format, torch.float32)
    variants['torch fp32 channels_last'] = torch_variant(torch.channels_last, torch.float32)
    if cpu_has_bf16() or args.emulated_bf16:
        variants['torch bf16 channels_last'] = torch_variant(torch.channels_last,
                                                             torch.bfloat16)
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        names = export.INPUT_NAMES[args.stage]
        path = export.export_component(module, inputs, Path(scratch) / 'm.onnx', names,
                                       export.OUTPUT_NAMES[args.stage])
        out_shape = list(module(*inputs).shape)
        runner = backends.OrtRunner(args.stage, path, ['CPUExecutionProvider'],
                                    {n: list(t.shape) for n, t in zip(names, inputs)},
                                    {export.OUTPUT_NAMES[args.stage][0]: out_shape},
                                    threads=args.threads)
        print(f'ONNX export + session: {time.perf_counter() - start:.1f} s')
        variants['onnxruntime fp32'] = ((lambda: runner(*inputs)), None, torch.float32)
        shapes = ({n: list(t.shape) for n, t in zip(names, inputs)},
                  {export.OUTPUT_NAMES[args.stage][0]: out_shape})
        if args.int8:
            from onnxruntime.quantization import quantize_dynamic, QuantType
            start = time.perf_counter()
            quantized = Path(scratch) / 'm_int8.onnx'
            quantize_dynamic(str(path), str(quantized), weight_type=QuantType.QInt8)
            int8 = backends.OrtRunner(args.stage, quantized, ['CPUExecutionProvider'],
                                      *shapes, threads=args.threads)
            print(f'int8 quantization + session: {time.perf_counter() - start:.1f} s')
            variants['onnxruntime int8 weights'] = ((lambda: int8(*inputs)), None,
                                                    torch.float32)
        if args.compile:
            module.to(memory_format=torch.channels_last)
            compiled = torch.compile(module)
            start = time.perf_counter()
            with torch.no_grad():
                compiled(*[t.contiguous(memory_format=torch.channels_last) if t.ndim == 4
                           else t for t in inputs])
            print(f'torch.compile (first call): {time.perf_counter() - start:.1f} s')

            def run_compiled():
                with torch.no_grad():
                    return compiled(*[t.contiguous(memory_format=torch.channels_last)
                                      if t.ndim == 4 else t for t in inputs])
            variants['torch.compile fp32 cl'] = (run_compiled, torch.channels_last,
                                                 torch.float32)
        times = {name: [] for name in variants}
        outputs = {}
        for round_ in range(args.repeats + 1):          # round 0 is the warm-up
            for name, (run, layout, dtype) in variants.items():
                module.to(dtype=dtype)
                module.dtype = dtype
                if layout is not None:
                    module.to(memory_format=layout)
                begin = time.perf_counter()
                outputs[name] = run().float()
                if round_:
                    times[name].append(time.perf_counter() - begin)
    reference = outputs['torch fp32 nchw']
    base = statistics.median(times['torch fp32 nchw'])
    print(f'{args.stage} at {args.size}×{args.size}, {args.threads} threads, '
          f'median of {args.repeats}:')
    for name in variants:
        median = statistics.median(times[name])
        diff = (outputs[name] - reference).abs().max().item()
        print(f'  {name:26s} {median:7.2f} s  ×{base / median:4.2f}  max|Δ| {diff:.1e}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
