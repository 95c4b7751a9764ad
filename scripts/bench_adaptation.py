#!/usr/bin/env python3
"""Measure `densepred train --bag` on generated recordings of another style.

Three recordings of the 'dusk' style (low sun, warm grade, haze, camera 1 m higher, 90°
lens; `synthetic.styles`), different streets (seeds): one to train on, one held out for
validation and early stopping (--val-bag), one to test on. The bundled log-depth demo
model (trained on the default style) is adapted on the first and scored on the test
recording against its exact depth after lidar alignment (`training.evaluate.evaluate`),
before and after; its score on held-out generated scenes of the default style is
reported beside it (forgetting), for each --mix-synthetic share.

    python scripts/bench_adaptation.py --work /tmp/adapt
"""

import argparse
import json
from pathlib import Path
import sys
import time

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DEMO = REPO / 'densepred_ros' / 'demo_models' / 'lotus-depth-demo'


def write_recording(path: Path, seed: int, frames: int, args):
    """Write a dusk recording as a rosbag2 (once) and return its frames."""
    from densepred_ros import bag
    from densepred_ros.synthetic import make_sequence
    sequence = make_sequence(seed, frames, kind='outdoor', width=args.size[1],
                             height=args.size[0], beams=32, rate_hz=args.rate,
                             start_stamp=1.7e9, style=args.style)
    if not path.exists():
        bag.write_sequence_bag(path, sequence)
    return sequence


def score(checkpoint: str, frames) -> dict:
    """Return evaluate() of a checkpoint on frames (exact depth after lidar alignment)."""
    from densepred_ros.training.bag_train import generated_score
    metrics = generated_score(checkpoint, frames)
    return {k: round(metrics[k], 4) for k in ('abs_rel', 'delta1', 'failed', 'n')}


def main() -> int:
    """Generate the recordings, adapt, score, print a Markdown table and JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--work', type=Path, required=True, help='folder for bags and models')
    parser.add_argument('--style', default='dusk')
    parser.add_argument('--size', type=int, nargs=2, default=(192, 256),
                        metavar=('HEIGHT', 'WIDTH'))
    parser.add_argument('--rate', type=float, default=2.0, help='recording rate, Hz')
    parser.add_argument('--train-frames', type=int, default=40)
    parser.add_argument('--val-frames', type=int, default=8)
    parser.add_argument('--test-frames', type=int, default=12)
    parser.add_argument('--generated-scenes', type=int, default=8)
    parser.add_argument('--steps', type=int, default=80)
    parser.add_argument('--val-every', type=int, default=20)
    parser.add_argument('--batch-size', type=int, default=4)
    parser.add_argument('--lr', type=float, default=1e-4)
    parser.add_argument('--mix', type=float, nargs='+', default=(0.0, 0.25, 0.5),
                        help='--mix-synthetic shares to compare')
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args()

    import torch
    torch.set_num_threads(args.threads)
    from densepred_ros import cli
    from densepred_ros.training.evaluate import held_out_frames
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    write_recording(args.work / 'train', 101, args.train_frames, args)
    write_recording(args.work / 'val', 202, args.val_frames, args)
    test = write_recording(args.work / 'test', 303, args.test_frames, args)
    generated = held_out_frames(args.generated_scenes, height=args.size[0], width=args.size[1])
    print(f'recordings and scenes generated in {time.monotonic() - started:.0f} s')
    results = {'settings': {k: (str(v) if isinstance(v, Path) else v)
                            for k, v in vars(args).items()},
               'before': {'test': score(str(DEMO), test),
                          'generated': score(str(DEMO), generated)}}
    print(f'before: {results["before"]}')
    for mix in args.mix:
        output = args.work / f'adapted_mix{mix:g}'
        began = time.monotonic()
        code = cli.main([
            'train', '--bag', str(args.work / 'train'), '--val-bag', str(args.work / 'val'),
            '--init', str(DEMO), '--output', str(output), '--steps', str(args.steps),
            '--val-every', str(args.val_every), '--batch-size', str(args.batch_size),
            '--lr', str(args.lr), '--mix-synthetic', str(mix), '--forgetting-scenes', '0',
            '--threads', str(args.threads), '--no-progress'])
        if code:
            return code
        record = json.loads((output / 'densepred.json').read_text())['adapted_on']
        results[f'mix {mix:g}'] = {
            'seconds': round(time.monotonic() - began), 'best_step': record['validation'][
                'best_step'], 'validation': record['validation']['after'],
            'test': score(str(output), test), 'generated': score(str(output), generated)}
        print(f'mix {mix:g}: {results[f"mix {mix:g}"]}')
    base = results['before']
    print('\n| model | test recording AbsRel | δ1 | generated scenes (default style) AbsRel '
          '| δ1 | train time |')
    print('| --- | --- | --- | --- | --- | --- |')
    print(f'| demo model | {base["test"]["abs_rel"]:.4f} | {base["test"]["delta1"]:.3f} | '
          f'{base["generated"]["abs_rel"]:.4f} | {base["generated"]["delta1"]:.3f} | |')
    for mix in args.mix:
        row = results[f'mix {mix:g}']
        gain = 1 - row['test']['abs_rel'] / base['test']['abs_rel']
        print(f'| adapted, --mix-synthetic {mix:g} (best step {row["best_step"]}) | '
              f'{row["test"]["abs_rel"]:.4f} ({gain:.0%} lower) | {row["test"]["delta1"]:.3f} | '
              f'{row["generated"]["abs_rel"]:.4f} | {row["generated"]["delta1"]:.3f} | '
              f'{row["seconds"]} s |')
    name = 'results_mix' + '_'.join(f'{mix:g}' for mix in args.mix) + '.json'
    (args.work / name).write_text(json.dumps(results, indent=2) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
