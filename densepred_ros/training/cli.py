"""`densepred train` and `densepred evaluate-model`: argument parsing for the trainer.

Errors follow `densepred_ros.cli_errors`: bad options, files and folders are checked before
the run starts and reported in one line (exit 2); Ctrl-C exits 130 and names the folder of
the checkpoints saved so far.

Examples:
    densepred train --output runs/depth --space disparity --time-limit 25
    densepred train --output runs/depth --resume
    densepred train --output runs/normals --space normals --vae runs/depth
    densepred train --output runs/ft --init ~/models/lotus-depth-d-v2-0-disparity \
        --data my_frames/ --space disparity --resolution 384 512 --device cuda
    densepred train --bag drive1 --init densepred_ros/demo_models/lotus-depth-demo \
        --output runs/adapted --steps 300 --val-every 50
"""

import argparse
from pathlib import Path

from densepred_ros.cli_errors import make_folder, user_errors, UserError
from densepred_ros.models.base import SPACES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `train` options to a (sub)parser."""
    parser.add_argument('--output', required=True, type=Path,
                        help='checkpoint folder to write (diffusers layout + densepred.json)')
    parser.add_argument('--space', default=None, choices=SPACES,
                        help='what to predict (log_depth: normalised ln z); default '
                             "disparity, with --bag the --init checkpoint's")
    parser.add_argument('--variant', default=None, choices=('g', 'd'),
                        help='Lotus-G (noise concatenated) or Lotus-D; default d, with --bag '
                             "the --init checkpoint's")
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
    parser.add_argument('--mixed-precision', default='no', choices=('no', 'bf16', 'fp16'),
                        help='autocast of the forward pass on a GPU (weights stay float32)')
    parser.add_argument('--gradient-checkpointing', action='store_true',
                        help='recompute UNet and VAE-decoder activations (less memory)')
    add_bag_arguments(parser.add_argument_group(
        'training from recordings (--bag; see docs/training-from-recordings.md)'))


def add_bag_arguments(group) -> None:
    """Add the `train --bag` options (the input options of `densepred bag` and more)."""
    group.add_argument('--bag', action='append', default=None, metavar='BAG',
                       help='rosbag2 recording to learn from (repeatable); needs --init')
    group.add_argument('--val-bag', action='append', default=None, metavar='BAG',
                       help='held-out recording(s) for validation (default: the last '
                            '--val-fraction of each --bag, after a --val-gap)')
    group.add_argument('--val-fraction', type=float, default=0.2,
                       help="share of each recording's time span held out (default 0.2)")
    group.add_argument('--val-gap', type=float, default=5.0,
                       help='seconds dropped before the held-out part (default 5)')
    from densepred_ros.bag_cli import add_input_arguments
    add_input_arguments(group)
    group.add_argument('--min-points', type=int, default=50,
                       help='skip frames with fewer projected lidar points (default 50)')
    group.add_argument('--train-size', type=int, default=None,
                       help='longest image side for training and validation, pixels '
                            "(default: the --init checkpoint's processing resolution)")
    group.add_argument('--patience', type=int, default=3,
                       help='stop after this many validations without a 1%% gain (0 = never)')
    group.add_argument('--mix-synthetic', type=float, default=0.5, metavar='FRACTION',
                       help='share of generated scenes mixed into the training frames '
                            '(against forgetting), in [0, 1); default 0.5')
    group.add_argument('--forgetting-scenes', type=int, default=8,
                       help='held-out generated scenes scored before and after (0 = skip)')


def check_arguments(args: argparse.Namespace):
    """Return the TrainConfig of `args`; a UserError for a bad option, file or folder.

    Checks what can be checked before the (long) run starts: the numbers, the model config,
    the data folder, the --init/--vae checkpoints and that --output can be written.
    """
    from densepred_ros.models import CheckpointError
    from densepred_ros.models.loading import resolve_checkpoint
    from densepred_ros.training.configs import config_resolution, load_model_config
    from densepred_ros.training.dataset import list_frames
    from densepred_ros.training.trainer import TrainConfig
    cfg = TrainConfig(
        output=args.output, space=args.space or 'disparity', variant=args.variant or 'd',
        data=args.data,
        model_config=args.model_config, init=args.init, vae=args.vae, frames=args.frames,
        cache=args.cache, resolution=tuple(args.resolution) if args.resolution else None,
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, time_limit=args.time_limit,
        preserver_fraction=args.preserver_fraction, vae_steps=args.vae_steps,
        vae_time_limit=args.vae_time_limit, vae_batch_size=args.vae_batch_size,
        vae_lr=args.vae_lr, vae_only=args.vae_only, val_every=args.val_every,
        val_frames=args.val_frames, save_every=args.save_every, resume=args.resume,
        device=args.device, seed=args.seed, threads=args.threads,
        processing_resolution=args.processing_resolution, progress=not args.no_progress,
        mixed_precision=args.mixed_precision,
        gradient_checkpointing=args.gradient_checkpointing)
    with user_errors(ValueError):
        cfg.check()
    if cfg.resolution is not None:
        with user_errors(ValueError, subject=f'--resolution {cfg.resolution[0]} '
                                             f'{cfg.resolution[1]}'):
            config_resolution({'resolution': cfg.resolution})
    if cfg.init is None:
        with user_errors(ValueError, subject=f'--model-config {cfg.model_config}'):
            load_model_config(cfg.model_config)
    if cfg.data is not None:
        with user_errors(ValueError, subject=f'--data {cfg.data}'):
            list_frames(cfg.data)
    if cfg.init is not None:
        with user_errors(CheckpointError, subject=f'--init {cfg.init}'):
            resolve_checkpoint(cfg.init)
    if cfg.vae is not None:
        vae = Path(cfg.vae).expanduser()
        if not ((vae / 'vae' / 'config.json').is_file() or (vae / 'config.json').is_file()):
            raise UserError('not a checkpoint with a VAE (vae/config.json)', f'--vae {cfg.vae}')
    make_folder(cfg.output)
    return cfg


def run(args: argparse.Namespace) -> int:
    """Run the trainer with parsed arguments; return the exit status."""
    from densepred_ros.training.trainer import train
    if getattr(args, 'bag', None) or getattr(args, 'val_bag', None):
        from densepred_ros.training.bag_train import run_bag
        return run_bag(args)   # bad input raises bag.BagError, a UserError
    cfg = check_arguments(args)
    try:
        path = train(cfg)
    except KeyboardInterrupt as exc:
        exc.add_note(f'checkpoints saved before the interruption are in {cfg.output} '
                     '(continue with --resume)')
        raise
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

    from densepred_ros.models import CheckpointError, load_predictor
    from densepred_ros.models.base import PredictorOptions
    from densepred_ros.models.loading import check_layout, resolve_checkpoint
    from densepred_ros.training.evaluate import evaluate, format_metrics, held_out_frames
    with user_errors(CheckpointError, subject=args.model):
        check_layout(resolve_checkpoint(args.model))

    torch.set_num_threads(args.threads)
    predictor = load_predictor(args.model, PredictorOptions(device='cpu', dtype='fp32'))
    frames = held_out_frames(args.scenes, height=args.size[0], width=args.size[1],
                             beams=args.beams)
    metrics = evaluate(predictor, frames)
    print(f'{args.model} ({predictor.spec.space}, Lotus-{predictor.spec.variant.upper()}): '
          f'{format_metrics(metrics)}')
    return 0
