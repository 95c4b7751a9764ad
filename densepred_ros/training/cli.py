"""`densepred train` and `densepred evaluate-model`: argument parsing for the trainer.

Examples:
    densepred train --output runs/depth --space disparity --time-limit 25
    densepred train --output runs/depth --resume
    densepred train --output runs/normals --space normals --vae runs/depth
    densepred train --output runs/ft --init ~/models/lotus-depth-d-v2-0-disparity \
        --data my_frames/ --space disparity --resolution 384 512 --device cuda
"""

import argparse
from pathlib import Path

from densepred_ros.models.base import SPACES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `train` options to a (sub)parser."""
    parser.add_argument('--output', required=True, type=Path,
                        help='checkpoint folder to write (diffusers layout + densepred.json)')
    parser.add_argument('--space', default='disparity',
                        choices=SPACES, help='what to predict (log_depth: normalised ln z)')
    parser.add_argument('--variant', default='d', choices=('g', 'd'),
                        help='Lotus-G (noise concatenated) or Lotus-D')
    parser.add_argument('--data', type=Path, default=None,
                        help='folder of NAME.npz (rgb, depth, normals) or NAME.png with '
                             'NAME_depth.npy / NAME_normals.npy (depth in metres, NaN '
                             'unknown; lidar-only depth is supervised through the VAE '
                             'decoder); default: generated scenes')
    parser.add_argument('--frames', type=int, default=2000,
                        help='number of generated scenes (seeds 0..N-1) without --data')
    parser.add_argument('--cache', type=Path, default=None,
                        help='where generated scenes are cached (default ~/.cache/densepred_ros)')
    parser.add_argument('--model-config', default='lotus_demo',
                        help='JSON model config (path or shipped name) for training from '
                             'scratch')
    parser.add_argument('--init', default=None,
                        help='fine-tune this diffusers checkpoint (Stable Diffusion 2 or Lotus)')
    parser.add_argument('--vae', default=None,
                        help='reuse the (frozen) VAE of this checkpoint instead of training one')
    parser.add_argument('--resolution', type=int, nargs=2, default=None,
                        metavar=('HEIGHT', 'WIDTH'),
                        help="training size, multiples of 8 (default: the model config's)")
    parser.add_argument('--processing-resolution', type=int, default=None,
                        help='longest edge recorded in densepred.json (default: training size)')
    parser.add_argument('--steps', type=int, default=2000, help='UNet optimizer steps')
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--lr', type=float, default=3e-4)
    parser.add_argument('--time-limit', type=float, default=0.0,
                        help='stop the UNet training after this many minutes (0 = none)')
    parser.add_argument('--preserver-fraction', type=float, default=0.5,
                        help='share of each batch repeated as detail-preserver rows')
    parser.add_argument('--vae-steps', type=int, default=600)
    parser.add_argument('--vae-time-limit', type=float, default=0.0,
                        help='stop the VAE training after this many minutes (0 = none)')
    parser.add_argument('--vae-batch-size', type=int, default=16)
    parser.add_argument('--vae-lr', type=float, default=5e-4)
    parser.add_argument('--vae-only', action='store_true',
                        help='train (or load) the VAE, save, and stop before the UNet')
    parser.add_argument('--val-every', type=int, default=250,
                        help='validate (and save) every N steps; 0 = only at the end')
    parser.add_argument('--val-frames', type=int, default=8)
    parser.add_argument('--save-every', type=int, default=250)
    parser.add_argument('--resume', action='store_true',
                        help='continue from the training state in --output')
    parser.add_argument('--device', default='auto', help="'auto', 'cpu' or 'cuda[:N]'")
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--threads', type=int, default=2, help='torch CPU threads')
    parser.add_argument('--no-progress', action='store_true', help='no progress bars')


def run(args: argparse.Namespace) -> int:
    """Run the trainer with parsed arguments; return the exit status."""
    from densepred_ros.training.trainer import train, TrainConfig
    cfg = TrainConfig(
        output=args.output, space=args.space, variant=args.variant, data=args.data,
        model_config=args.model_config, init=args.init, vae=args.vae, frames=args.frames,
        cache=args.cache, resolution=tuple(args.resolution) if args.resolution else None,
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, time_limit=args.time_limit,
        preserver_fraction=args.preserver_fraction, vae_steps=args.vae_steps,
        vae_time_limit=args.vae_time_limit, vae_batch_size=args.vae_batch_size,
        vae_lr=args.vae_lr, vae_only=args.vae_only, val_every=args.val_every,
        val_frames=args.val_frames, save_every=args.save_every, resume=args.resume,
        device=args.device, seed=args.seed, threads=args.threads,
        processing_resolution=args.processing_resolution, progress=not args.no_progress)
    path = train(cfg)
    print(f'checkpoint: {path}')
    return 0


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `evaluate-model` options (accuracy on held-out generated scenes)."""
    parser.add_argument('model', help='checkpoint folder')
    parser.add_argument('--scenes', type=int, default=50,
                        help='held-out generated scenes (seeds 2,000,000 on)')
    parser.add_argument('--size', type=int, nargs=2, default=(240, 320),
                        metavar=('HEIGHT', 'WIDTH'), help='rendered image size')
    parser.add_argument('--beams', type=int, default=32, help='simulated lidar beams')
    parser.add_argument('--threads', type=int, default=2, help='torch CPU threads')


def run_evaluate(args: argparse.Namespace) -> int:
    """Print the accuracy of a model on held-out generated scenes."""
    import torch

    from densepred_ros.models import load_predictor
    from densepred_ros.models.base import PredictorOptions
    from densepred_ros.training.evaluate import evaluate, format_metrics, held_out_frames
    torch.set_num_threads(args.threads)
    predictor = load_predictor(args.model, PredictorOptions(device='cpu', dtype='fp32'))
    frames = held_out_frames(args.scenes, height=args.size[0], width=args.size[1],
                             beams=args.beams)
    metrics = evaluate(predictor, frames)
    print(f'{args.model} ({predictor.spec.space}, Lotus-{predictor.spec.variant.upper()}): '
          f'{format_metrics(metrics)}')
    return 0
