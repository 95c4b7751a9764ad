"""`densepred train --bag BAG --init CKPT --output DIR`: adapt a depth model to recordings.

The frames are the recordings' images with their paired lidar scans projected into them
(`bag_frames.read_bag_frames`, the node's pairing and projection), supervised as sparse
depth by the Lotus trainer (`trainer.train`). A held-out part (``--val-bag``, or the last
``--val-fraction`` of each recording after a ``--val-gap``) is scored against lidar points
the alignment did not use, before training and every ``--val-every`` steps; the output
keeps the best weights and training stops after ``--patience`` validations without gain.
The generated-scene score (`evaluate.evaluate` on held-out generated scenes) is taken
before and after, so that forgetting shows; ``--mix-synthetic`` rehearses generated
scenes against it. Bad input raises `bag.BagError` (a ValueError) with one line.
"""

import argparse
import math
from pathlib import Path
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from densepred_ros.bag import BagError
from densepred_ros.training import bag_frames

MIN_TRAIN_FRAMES = 2


def init_checkpoint(init: Optional[str], space: Optional[str],
                    variant: Optional[str]) -> Tuple[str, str, Optional[int]]:
    """Return (space, variant, processing resolution) of the checkpoint to adapt.

    Raises:
        BagError: no --init, a missing or non-Lotus checkpoint, a normals model, or a
            --space/--variant that contradicts the checkpoint.
    """
    from densepred_ros.models.base import DEPTH_SPACES
    from densepred_ros.models.loading import (
        CheckpointError, DENSEPRED_CONFIG, detect_space, read_json)
    if not init:
        raise BagError('train --bag adapts an existing model: give --init CHECKPOINT')
    path = Path(init)
    unet = read_json(path / 'unet' / 'config.json')
    vae = read_json(path / 'vae' / 'config.json')
    if not unet or not vae:
        raise BagError(f'--init {init} is not a diffusers checkpoint folder with unet/ and '
                       'vae/ (a Lotus checkpoint, or one written by densepred train)')
    try:
        found = detect_space(path, str(init))
    except CheckpointError as exc:
        raise BagError(str(exc)) from exc
    if found not in DEPTH_SPACES:
        raise BagError(f'--init {init} predicts {found}; train --bag supervises depth with '
                       f'lidar and adapts {", ".join(DEPTH_SPACES)} models only')
    if space is not None and space != found:
        raise BagError(f'--space {space} contradicts --init {init}, which predicts {found}; '
                       "the space of an adapted model is its checkpoint's (drop --space)")
    latent = int(vae.get('latent_channels', 4))
    found_variant = 'g' if int(unet.get('in_channels', latent)) == 2 * latent else 'd'
    if variant is not None and variant != found_variant:
        raise BagError(f'--variant {variant} contradicts --init {init}, which is Lotus-'
                       f'{found_variant.upper()}')
    processing = read_json(path / DENSEPRED_CONFIG).get('processing_resolution')
    return found, found_variant, (int(processing) if processing else None)


def bag_options(args: argparse.Namespace, longest_side: int) -> bag_frames.BagOptions:
    """Return the bag reading options of parsed `train` arguments."""
    return bag_frames.BagOptions(
        image_topic=args.image_topic, camera_info_topic=args.camera_info_topic,
        lidar_topic=args.lidar_topic,
        extrinsic=tuple(args.extrinsic) if args.extrinsic else None, params=args.params,
        start=args.start, duration=args.duration, every=args.every,
        min_points=args.min_points, longest_side=longest_side)


def read_recordings(paths: List[str], options: bag_frames.BagOptions, init: str,
                    role: str) -> Tuple[List[bag_frames.BagFrame], List[Dict[str, Any]]]:
    """Read every recording; print one line each; return (frames, readings as dicts).

    Raises:
        BagError: a recording cannot be used at all (see `read_bag_frames`), or none of
            its frames has enough lidar points.
    """
    frames, readings = [], []
    for path in paths:
        reading = bag_frames.read_bag_frames(path, options, init)
        skipped = ', '.join(f'{reason}: {n}' for reason, n in reading.skipped.most_common())
        print(f'{role} {path}: {reading.frames_selected} images, {len(reading.frames)} used'
              f'{f", skipped {skipped}" if skipped else ""}'
              f'{f" (input ended early: {reading.input_error})" if reading.input_error else ""}')
        if not reading.frames:
            raise BagError(f'{path}: none of its {reading.frames_selected} selected images is '
                           f'usable ({skipped or "no images in the window"})')
        frames += reading.frames
        readings.append(reading.as_dict())
    return frames, readings


def generated_score(checkpoint: str, frames: List[Any]) -> Dict[str, float]:
    """Return `evaluate.evaluate` of a checkpoint on generated frames (CPU, fp32)."""
    from densepred_ros.models import load_predictor
    from densepred_ros.models.base import PredictorOptions
    from densepred_ros.training.evaluate import evaluate
    predictor = load_predictor(checkpoint, PredictorOptions(device='cpu', dtype='fp32'))
    try:
        return evaluate(predictor, frames)
    finally:
        predictor.close()


def _validator(frames: List[bag_frames.BagFrame], device: str):
    from densepred_ros.models import load_predictor, runtime
    from densepred_ros.models.base import PredictorOptions

    def validate(checkpoint: str) -> Dict[str, float]:
        options = PredictorOptions(device=str(runtime.resolve_device(device)), dtype='fp32')
        predictor = load_predictor(checkpoint, options)
        try:
            return bag_frames.score_frames(predictor, frames)
        finally:
            predictor.close()
    return validate


def _figures(metrics: Dict[str, float]) -> Dict[str, float]:
    return {k: metrics[k] for k in ('abs_rel', 'delta1', 'n', 'failed') if k in metrics}


def run_bag(args: argparse.Namespace) -> int:
    """Run `densepred train --bag`; print the before/after summary; return 0.

    Raises:
        BagError: bad input (see the module docstring).
    """
    from densepred_ros.training.trainer import record_adaptation, train, TrainConfig
    if not args.bag:
        raise BagError('--val-bag needs at least one --bag to train on')
    if args.data is not None:
        raise BagError('give either --data or --bag, not both')
    if args.resume:
        raise BagError('--resume is not supported with --bag; start a new --output')
    if not 0.0 <= args.mix_synthetic < 1.0:
        raise BagError(f'--mix-synthetic must be in [0, 1), got {args.mix_synthetic}')
    if args.forgetting_scenes < 0 or args.min_points < 1:
        raise BagError('--forgetting-scenes must be >= 0 and --min-points >= 1')
    space, variant, processing = init_checkpoint(args.init, args.space, args.variant)
    longest = args.train_size or processing or 512
    if longest < 8:
        raise BagError(f'--train-size must be >= 8 pixels, got {longest}')
    if Path(args.output).exists() and any(Path(args.output).iterdir()):
        raise BagError(f'--output {args.output} exists and is not empty; choose a new folder')
    options = bag_options(args, longest)
    started = time.monotonic()
    frames, readings = read_recordings(args.bag, options, args.init, 'training')
    if args.val_bag:
        train_frames, dropped = frames, 0
        val_frames, val_readings = read_recordings(args.val_bag, options, args.init,
                                                   'validation')
        held_out = {'source': 'val_bag', 'bags': val_readings}
    else:
        try:
            train_frames, val_frames, dropped = bag_frames.split_held_out(
                frames, args.val_fraction, args.val_gap)
        except ValueError as exc:
            raise BagError(str(exc)) from exc
        held_out = {'source': 'split', 'fraction': args.val_fraction, 'gap_s': args.val_gap,
                    'dropped_in_gap': dropped, **bag_frames.time_range(val_frames)}
    if len(train_frames) < MIN_TRAIN_FRAMES:
        raise BagError(f'only {len(train_frames)} usable training frame(s) after the held-out '
                       f'split; at least {MIN_TRAIN_FRAMES} are needed')
    try:
        training_set = bag_frames.frame_set(train_frames, args.mix_synthetic)
    except ValueError as exc:
        raise BagError(str(exc)) from exc
    height, width = training_set.rgb.shape[1:3]
    print(f'{len(train_frames)} training frames ({bag_frames.mean_points(train_frames):.0f} '
          f'lidar points each on average) + {len(training_set) - len(train_frames)} '
          f'generated, {len(val_frames)} held out ({dropped} dropped in the gap), at '
          f'{width}×{height}; read in {time.monotonic() - started:.1f} s')
    record: Dict[str, Any] = {
        'init': str(args.init), 'bags': readings,
        'frames': len(train_frames), 'generated_frames': len(training_set) - len(train_frames),
        **bag_frames.time_range(train_frames), 'size': [height, width],
        'held_out': {**held_out, 'frames': len(val_frames)},
        'options': {'every': args.every, 'start': args.start, 'duration': args.duration,
                    'min_points': args.min_points, 'mix_synthetic': args.mix_synthetic}}

    generated = []
    if args.forgetting_scenes:
        from densepred_ros.training.evaluate import held_out_frames
        generated = held_out_frames(args.forgetting_scenes, height=2 * height,
                                    width=2 * width)
        before = generated_score(args.init, generated)
        record['generated_scenes'] = {'scenes': len(generated), 'size': [2 * height, 2 * width],
                                      'before': _figures(before)}

    cfg = TrainConfig(
        output=args.output, space=space, variant=variant, init=args.init,
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, time_limit=args.time_limit,
        preserver_fraction=args.preserver_fraction, val_every=args.val_every, val_frames=0,
        save_every=args.save_every, device=args.device, seed=args.seed, threads=args.threads,
        processing_resolution=args.processing_resolution or processing,
        progress=not args.no_progress, frame_set=training_set,
        validator=_validator(val_frames, args.device), patience=args.patience, record=record,
        mixed_precision=args.mixed_precision,
        gradient_checkpointing=args.gradient_checkpointing,
        warmup_steps=min(100, max(1, args.steps // 10)))
    path = train(cfg)
    if generated:
        after = generated_score(str(path), generated)
        record['generated_scenes']['after'] = _figures(after)
        record_adaptation(path, record)
    print_summary(record, path)
    return 0


def _change(before: float, after: float) -> str:
    if not (math.isfinite(before) and before > 0):
        return ''
    return f' ({(after - before) / before:+.0%})'


def print_summary(record: Dict[str, Any], path: Path, file: Any = None) -> None:
    """Print the before/after figures of an adaptation."""
    file = sys.stdout if file is None else file
    validation = record.get('validation', {})
    before, after = validation.get('before', {}), validation.get('after', {})
    if before and after:
        print(f'held-out recording ({record["held_out"]["frames"]} frames, scored on lidar '
              f'points not used for the alignment): AbsRel {before["abs_rel"]:.4f} -> '
              f'{after["abs_rel"]:.4f}{_change(before["abs_rel"], after["abs_rel"])}, '
              f'δ1 {before["delta1"]:.4f} -> {after["delta1"]:.4f} (best step '
              f'{validation.get("best_step", 0)})', file=file)
    generated = record.get('generated_scenes', {})
    if 'after' in generated:
        b, a = generated['before'], generated['after']
        print(f'generated scenes ({generated["scenes"]}, forgetting check): AbsRel '
              f'{b["abs_rel"]:.4f} -> {a["abs_rel"]:.4f}{_change(b["abs_rel"], a["abs_rel"])}, '
              f'δ1 {b["delta1"]:.4f} -> {a["delta1"]:.4f}', file=file)
    if validation.get('best_step', 0) == 0:
        print('no training step improved the held-out score: the checkpoint holds the '
              'initial weights', file=file)
    print(f'checkpoint: {path}', file=file)
