"""The Lotus adaptation protocol (He et al. 2024) for `densepred train`.

What one training step does (after the authors' `train_lotus_g.py`):

1. The frozen VAE encodes the image and its annotation (see `dataset`) to latents,
   × `scaling_factor` (posterior mean; encoded once before training, as the VAE is
   frozen).
2. The UNet runs at the single timestep 999 and predicts x0 ("sample" prediction):
   Lotus-D sees the image latent (C channels); Lotus-G sees the image latent
   concatenated with the target latent noised to t = 999 by the DDIM schedule (2·C).
3. Detail preserver: `preserver_fraction` of the batch is repeated with the task
   switcher sin/cos([0, 1]) and the image latent as the target (the annotation rows use
   sin/cos([1, 0])). Loss = MSE(annotation rows over valid latent cells) + MSE(image rows).
   A latent cell is invalid when any pixel of its 8×8 patch has no ground truth.

Without `--init` the model is built from a config (`configs.py`) and trained from
scratch: first a quick reconstruction training of the VAE on the RGB images and their
annotation images (unless `--vae` names one to reuse), then the UNet with the VAE frozen.
The saved folder is a complete checkpoint in the layout `load_predictor` reads, plus
`training_state.pt` (optimizer, step, clock, RNG) for `--resume` and `training_log.jsonl`.
"""

from dataclasses import dataclass, field, fields
import json
import math
from pathlib import Path
import shutil
import time
from typing import Any, Callable, Dict, Optional, Tuple

from densepred_ros.models.base import DEPTH_SPACES, DISPARITY, NORMALS, PredictorOptions
from densepred_ros.models.base import SPACES
from densepred_ros.models.checkpoint import LOTUS_CLASS_NAMES
from densepred_ros.models.checkpoint_writer import (
    byte_text_encoder, sd2_ddim_scheduler, write_byte_tokenizer, write_densepred_config,
    write_model_index)
from densepred_ros.models.lotus import encode_empty_prompt, task_embedding, TIMESTEP
from densepred_ros.training import dataset
from densepred_ros.training.configs import (
    build_unet, build_vae, config_resolution, load_model_config)
import numpy as np
import torch
import torch.nn.functional as F

STATE_FILE = 'training_state.pt'
LOG_FILE = 'training_log.jsonl'
VAE_KL_WEIGHT = 1e-6
WARMUP_STEPS = 100
FINAL_LR_FRACTION = 0.1
SPARSE_DIRECT_WEIGHT = 0.1  # see LotusTrainer.sparse_losses
MIXED_PRECISION = ('no', 'bf16', 'fp16')
AUTOCAST_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}


@dataclass
class TrainConfig:
    """Everything `densepred train` needs (see `cli.add_arguments` for the meanings)."""

    output: Path
    space: str = DISPARITY
    variant: str = 'd'
    data: Optional[Path] = None
    model_config: str = 'lotus_demo'
    init: Optional[str] = None
    vae: Optional[str] = None
    frames: int = 2000
    cache: Optional[Path] = None
    resolution: Optional[Tuple[int, int]] = None
    steps: int = 2000
    batch_size: int = 16
    lr: float = 3e-4
    time_limit: float = 0.0
    preserver_fraction: float = 0.5
    vae_steps: int = 600
    vae_time_limit: float = 0.0
    vae_batch_size: int = 16
    vae_lr: float = 5e-4
    vae_only: bool = False
    val_every: int = 250
    val_frames: int = 8
    save_every: int = 250
    resume: bool = False
    device: str = 'auto'
    seed: int = 0
    threads: int = 2
    processing_resolution: Optional[int] = None
    progress: bool = True
    # In-memory training data and validation (`densepred train --bag`, see bag_frames).
    frame_set: Optional[dataset.FrameSet] = field(default=None, repr=False)
    validator: Optional[Callable[[str], Dict[str, float]]] = field(default=None, repr=False)
    patience: int = 0
    min_improvement: float = 0.01
    record: Optional[Dict[str, Any]] = None
    mixed_precision: str = 'no'
    gradient_checkpointing: bool = False
    warmup_steps: int = WARMUP_STEPS

    def check(self) -> None:
        """Raise ValueError naming the first invalid setting."""
        if self.space not in SPACES:
            raise ValueError(f'space must be one of {SPACES}, got {self.space!r}')
        if self.variant not in ('g', 'd'):
            raise ValueError(f"variant must be 'g' or 'd', got {self.variant!r}")
        if not 0.0 <= self.preserver_fraction <= 1.0:
            raise ValueError(f'preserver_fraction must be in [0, 1], got '
                             f'{self.preserver_fraction}')
        for name in ('steps', 'batch_size', 'frames', 'threads'):
            if getattr(self, name) < 1:
                raise ValueError(f'{name} must be >= 1, got {getattr(self, name)}')
        for name in ('vae_steps', 'val_every', 'save_every', 'val_frames'):
            if getattr(self, name) < 0:
                raise ValueError(f'{name} must be >= 0, got {getattr(self, name)}')
        if self.time_limit < 0 or self.vae_time_limit < 0:
            raise ValueError('time limits must be >= 0 minutes (0 = none)')
        if self.lr <= 0 or self.vae_lr <= 0:
            raise ValueError(f'learning rates must be positive, got {self.lr}, {self.vae_lr}')
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f'mixed_precision must be one of {MIXED_PRECISION}, got '
                             f'{self.mixed_precision!r}')
        if self.patience < 0 or not 0.0 <= self.min_improvement < 1.0:
            raise ValueError('patience must be >= 0 and min_improvement in [0, 1)')

    def loggable(self) -> Dict[str, Any]:
        """Return the settings as JSON-ready values (without in-memory data)."""
        skip = ('frame_set', 'validator')
        return {f.name: (str(v) if isinstance(v, Path) else v)
                for f in fields(self) if f.name not in skip
                for v in (getattr(self, f.name),)}


def lr_factor(step: int, steps: int, elapsed: float, time_limit_s: float,
              warmup: int = WARMUP_STEPS) -> float:
    """Linear warm-up over ``warmup`` steps, then a cosine decay to 10% over the budget."""
    if step < warmup:
        return (step + 1) / warmup
    progress = step / steps
    if time_limit_s > 0:
        progress = max(progress, elapsed / time_limit_s)
    progress = min(progress, 1.0)
    return FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * progress))


# --- data -------------------------------------------------------------------------------

def load_training_frames(cfg: TrainConfig, height: int, width: int,
                         log: Callable[[str], None]) -> dataset.FrameSet:
    """Return `cfg.frame_set`, load `cfg.data`, or render (cached) generated scenes."""
    if cfg.frame_set is not None:
        return cfg.frame_set
    if cfg.data is not None:
        files = dataset.list_frames(Path(cfg.data))
        with _bar(cfg, len(files), 'loading frames') as bar:
            return dataset.load_frames(Path(cfg.data), height, width, files, bar.update)
    cache_root = Path(cfg.cache) if cfg.cache else Path.home() / '.cache' / 'densepred_ros'
    cache = cache_root / f'synthetic_{height}x{width}'
    log(f'generated scenes: seeds 0..{cfg.frames - 1} at {width}×{height}, cache {cache}')
    bar = _bar(cfg, cfg.frames, 'rendering scenes')
    dataset.render_synthetic(cache, range(cfg.frames), height, width, bar.update)
    bar.close()
    files = [cache / f'{dataset.synthetic_name(s)[1]}.npz' for s in range(cfg.frames)]
    return dataset.load_frames(cache, height, width, files)


def _bar(cfg: TrainConfig, total: int, desc: str):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, disable=not cfg.progress, dynamic_ncols=True,
                mininterval=5.0)


# --- VAE --------------------------------------------------------------------------------

def vae_training_images(frames: dataset.FrameSet) -> torch.Tensor:
    """Return the VAE's training pool: RGB plus every dense annotation the data allows."""
    pool = [dataset.rgb_images(frames)]
    spaces = []
    if frames.depth is not None and frames.sparse is None:
        spaces += list(DEPTH_SPACES)
    if frames.normals is not None:
        spaces.append(NORMALS)
    for space in spaces:
        pool.append(dataset.annotations(frames, space)[0])
    return torch.from_numpy(np.concatenate(pool))


def train_vae(vae, images: torch.Tensor, steps: int, batch_size: int, lr: float,
              time_limit_s: float, device: torch.device, seed: int,
              crop: Optional[Tuple[int, int]] = None, progress: bool = True) -> Dict[str, float]:
    """Train an AutoencoderKL to reconstruct `images` (N×3×H×W in [-1, 1]).

    Loss: L1 reconstruction of a posterior sample + 1e-6 · KL, on random crops (default
    half the image size; the VAE is convolutional). Afterwards the scaling factor is set
    to 1 / std of the latents, as for Stable Diffusion.

    Returns:
        {'steps', 'l1' (mean of the last 50 steps), 'scaling_factor', 'seconds'}.
    """
    from tqdm import tqdm
    generator = torch.Generator().manual_seed(seed)
    height, width = images.shape[-2:]
    ch, cw = crop or (max(8, height // 2 // 8 * 8), max(8, width // 2 // 8 * 8))
    vae.to(device).train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    start = time.monotonic()
    recent = []
    step = 0
    bar = tqdm(total=steps, desc='VAE', disable=not progress, dynamic_ncols=True,
               mininterval=5.0)
    while step < steps and not (time_limit_s and time.monotonic() - start > time_limit_s):
        idx = torch.randint(len(images), (batch_size,), generator=generator)
        top = int(torch.randint(height - ch + 1, (1,), generator=generator))
        left = int(torch.randint(width - cw + 1, (1,), generator=generator))
        x = images[idx, :, top:top + ch, left:left + cw].to(device)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator=None)).sample
        l1 = (recon - x).abs().mean()
        loss = l1 + VAE_KL_WEIGHT * posterior.kl().mean()
        for group in optimizer.param_groups:
            group['lr'] = lr * lr_factor(step, steps, time.monotonic() - start, time_limit_s)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        recent = (recent + [l1.item()])[-50:]
        step += 1
        bar.update(1)
        bar.set_postfix(l1=f'{np.mean(recent):.4f}', refresh=False)
    bar.close()
    vae.eval()
    with torch.no_grad():
        sample = images[torch.randperm(len(images), generator=generator)[:256]]
        latents = torch.cat([vae.encode(chunk.to(device)).latent_dist.mean
                             for chunk in sample.split(32)])
    scaling = float(1.0 / latents.std())
    vae.register_to_config(scaling_factor=scaling)
    return {'steps': step, 'l1': float(np.mean(recent)) if recent else math.nan,
            'scaling_factor': scaling, 'seconds': time.monotonic() - start}


@torch.no_grad()
def encode_latents(vae, images: np.ndarray, device: torch.device,
                   batch: int = 32) -> torch.Tensor:
    """Encode N×3×H×W images in [-1, 1] to N×C×h×w latents (posterior mean × scaling)."""
    out = []
    for start in range(0, len(images), batch):
        chunk = torch.from_numpy(images[start:start + batch]).to(device)
        out.append(vae.encode(chunk).latent_dist.mean * vae.config.scaling_factor)
    return torch.cat(out)


def latent_valid(valid: np.ndarray, factor: int = 8) -> torch.Tensor:
    """Return N×1×h×w bool: latent cells whose factor×factor pixels all have ground truth."""
    invalid = torch.from_numpy(~valid).float()[:, None]
    return ~F.max_pool2d(invalid, factor, factor).bool()


@torch.no_grad()
def vae_annotation_check(vae, frames: dataset.FrameSet, space: str, device: torch.device,
                         count: int = 64) -> Dict[str, float]:
    """Measure how well the VAE reconstructs annotations (an upper bound for the UNet).

    Depth spaces: the decoded annotation is fitted to the true depth by the oracle fit
    (`metrics.oracle_depth`, far limit `evaluate.MAX_DEPTH`) and compared by
    `metrics.depth_metrics`. Normals: `metrics.normal_metrics`.
    """
    from densepred_ros.metrics import depth_metrics, mean_over_frames, normal_metrics
    from densepred_ros.metrics import oracle_depth
    from densepred_ros.models import runtime
    from densepred_ros.training.evaluate import MAX_DEPTH
    n = min(count, len(frames))
    subset = dataset.FrameSet(frames.rgb[:n],
                              None if frames.depth is None else frames.depth[:n],
                              None if frames.normals is None else frames.normals[:n],
                              frames.names[:n])
    images, _ = dataset.annotations(subset, space)
    latents = encode_latents(vae, images, device)
    decoded = torch.cat([vae.decode(chunk / vae.config.scaling_factor).sample
                         for chunk in latents.split(32)]).clamp(-1, 1).cpu().numpy()
    rows = []
    for i in range(n):
        if space == NORMALS:
            normals = runtime.unit_normals(decoded[i].transpose(1, 2, 0))
            rows.append(normal_metrics(runtime.model_normals_to_optical(normals),
                                       subset.normals[i]))
            continue
        rel = decoded[i].mean(axis=0) / 2 + 0.5
        gt = subset.depth[i]
        rows.append(depth_metrics(oracle_depth(rel, space, gt, MAX_DEPTH, near_limit=0.05),
                                  gt, MAX_DEPTH))
    return mean_over_frames(rows)


# --- UNet -------------------------------------------------------------------------------

def scale_shift_invariant_mse(pred: torch.Tensor, target: torch.Tensor,
                              mask: torch.Tensor) -> torch.Tensor:
    """Mean over images of min over (a, b) of the masked MSE of a·pred + b to target.

    Args:
        pred, target: B×H×W float; mask: B×H×W bool. Images with fewer than two masked
            pixels are left out (zero loss when none has two).
    """
    m = mask.to(pred.dtype)
    n = m.sum(dim=(1, 2))
    usable = n >= 2
    if not usable.any():
        return pred.sum() * 0.0
    pred, target, m, n = pred[usable], target[usable], m[usable], n[usable]
    mean_p = (m * pred).sum(dim=(1, 2)) / n
    mean_t = (m * target).sum(dim=(1, 2)) / n
    dp = (pred - mean_p[:, None, None]) * m
    dt = (target - mean_t[:, None, None]) * m
    scale = (dp * dt).sum(dim=(1, 2)) / (dp.square().sum(dim=(1, 2)) + 1e-6)
    residual = scale[:, None, None] * dp - dt
    return (residual.square().sum(dim=(1, 2)) / n).mean()


class LotusTrainer:
    """One UNet being adapted with the Lotus protocol; the VAE and prompt are frozen.

    Attributes:
        unet, vae, scheduler: the diffusers components.
        variant: 'g' or 'd'.
        step: optimizer steps taken so far (continues after a resume).
    """

    def __init__(self, unet, vae, scheduler, prompt_embeds: torch.Tensor, variant: str,
                 lr: float, device: torch.device, seed: int = 0,
                 preserver_fraction: float = 0.5, mixed_precision: str = 'no') -> None:
        self.unet = unet.to(device).train()
        self.vae = vae.to(device).eval()
        self.vae.requires_grad_(False)
        self.scheduler = scheduler
        self.variant = variant
        self.device = device
        self.prompt_embeds = prompt_embeds.to(device)
        self.preserver_fraction = preserver_fraction
        self.lr = lr
        self.optimizer = torch.optim.AdamW(self.unet.parameters(), lr=lr, weight_decay=1e-2)
        self.generator = torch.Generator().manual_seed(seed)
        self.step = 0
        self.elapsed = 0.0
        # bf16/fp16 autocast of the forward pass (weights and optimizer stay float32);
        # fp16 scales the loss against gradient underflow.
        self.autocast_dtype = AUTOCAST_DTYPES.get(mixed_precision)
        self.scaler = torch.amp.GradScaler(device.type, enabled=mixed_precision == 'fp16')

    def _noised(self, target: torch.Tensor) -> torch.Tensor:
        """Lotus-G's second input: the target noised to t = 999 (DDIM schedule)."""
        noise = torch.randn(target.shape, generator=self.generator).to(self.device)
        timesteps = torch.full((target.shape[0],), TIMESTEP, dtype=torch.long)
        return self.scheduler.add_noise(target, noise, timesteps.to(self.device))

    def _forward(self, rgb_latent: torch.Tensor,
                 ann_latent: Optional[torch.Tensor]) -> Tuple[torch.Tensor, int]:
        """Run the UNet on B annotation rows and k detail-preserver rows; return (x0, k).

        The first k = round(preserver_fraction · B) images also form the detail-preserver
        rows (task [0, 1], target = their image latent). Lotus-G's noised target is pure
        noise where no annotation latent is given (sparse supervision).
        """
        batch = rgb_latent.shape[0]
        k = int(round(self.preserver_fraction * batch))
        inputs = torch.cat([rgb_latent, rgb_latent[:k]])
        if self.variant == 'g':
            ann = ann_latent if ann_latent is not None else torch.zeros_like(rgb_latent)
            inputs = torch.cat([inputs, self._noised(torch.cat([ann, rgb_latent[:k]]))], dim=1)
        task = torch.cat([task_embedding(True).repeat(batch, 1),
                          task_embedding(False).repeat(k, 1)]).to(self.device)
        prompt = self.prompt_embeds.expand(batch + k, -1, -1)
        timesteps = torch.full((batch + k,), TIMESTEP, dtype=torch.long, device=self.device)
        pred = self.unet(inputs, timesteps, encoder_hidden_states=prompt,
                         class_labels=task, return_dict=False)[0]
        return pred, k

    def _with_preserver(self, ann_loss: torch.Tensor, pred: torch.Tensor, k: int,
                        rgb_latent: torch.Tensor) -> Dict[str, torch.Tensor]:
        out = {'annotation': ann_loss, 'loss': ann_loss}
        if k:
            image_loss = F.mse_loss(pred[rgb_latent.shape[0]:], rgb_latent[:k])
            out['image'] = image_loss
            out['loss'] = ann_loss + image_loss
        return out

    def losses(self, rgb_latent: torch.Tensor, ann_latent: torch.Tensor,
               valid: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Return {'loss', 'annotation', 'image'} for one batch (B×C×h×w latents).

        annotation: MSE to the annotation latents over the valid latent cells (B×1×h×w).
        """
        pred, k = self._forward(rgb_latent, ann_latent)
        mask = valid.expand_as(ann_latent)
        ann_loss = F.mse_loss(pred[:rgb_latent.shape[0]][mask], ann_latent[mask])
        return self._with_preserver(ann_loss, pred, k, rgb_latent)

    def sparse_losses(self, rgb_latent: torch.Tensor, target: torch.Tensor,
                      known: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Return {'loss', 'annotation', 'image'} for sparse (lidar) depth supervision.

        The predicted annotation latents are decoded by the frozen VAE (gradients flow
        through it to the UNet); the channel mean, B×H×W in [-1, 1], is fitted per image
        to the normalised target by least squares (scale and shift) and the annotation
        loss is the mean squared residual over the known pixels, plus
        SPARSE_DIRECT_WEIGHT × the unfitted squared error, which keeps the prediction in
        the annotation range.

        Args:
            rgb_latent: B×C×h×w image latents.
            target: B×H×W annotation values (the model space normalised per image from
                the known points, see `dataset.depth_annotation`).
            known: B×H×W bool, the pixels with a lidar point.
        """
        pred, k = self._forward(rgb_latent, None)
        batch = rgb_latent.shape[0]
        decoded = self.vae.decode(pred[:batch] / self.vae.config.scaling_factor).sample
        values = decoded.mean(dim=1)
        ann_loss = scale_shift_invariant_mse(values, target, known)
        direct = (values - target)[known].square().mean()
        return self._with_preserver(ann_loss + SPARSE_DIRECT_WEIGHT * direct, pred, k,
                                    rgb_latent)

    def train_step(self, rgb_latent: torch.Tensor, target: torch.Tensor,
                   valid: torch.Tensor, lr_scale: float = 1.0,
                   sparse: bool = False) -> Dict[str, float]:
        """Take one optimizer step on a batch; return the loss values.

        Dense: target = annotation latents, valid = latent mask (see `losses`). Sparse:
        target = annotation values in pixels, valid = known pixels (see `sparse_losses`).
        """
        for group in self.optimizer.param_groups:
            group['lr'] = self.lr * lr_scale
        loss_fn = self.sparse_losses if sparse else self.losses
        with torch.autocast(self.device.type, dtype=self.autocast_dtype,
                            enabled=self.autocast_dtype is not None):
            losses = loss_fn(rgb_latent.to(self.device), target.to(self.device),
                             valid.to(self.device))
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses['loss']).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.unet.parameters(), 1.0)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        return {k: v.item() for k, v in losses.items()}

    def state_dict(self) -> dict:
        """Return what a resume needs besides the UNet weights."""
        return {'optimizer': self.optimizer.state_dict(), 'step': self.step,
                'elapsed': self.elapsed, 'generator': self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict()` output."""
        self.optimizer.load_state_dict(state['optimizer'])
        self.step = int(state['step'])
        self.elapsed = float(state['elapsed'])
        self.generator.set_state(state['generator'])


# --- checkpoints ------------------------------------------------------------------------

def save_checkpoint(path: Path, unet, vae, text_encoder, tokenizer, scheduler, variant: str,
                    space: str, processing_resolution: int,
                    state: Optional[dict] = None) -> Path:
    """Write a complete Lotus checkpoint (safetensors) that `load_predictor` reads.

    The checkpoint is written to a hidden sibling folder `.<name>.saving-<pid>` that is then
    renamed to `path` (see `_swap_into_place`): an interrupted or failed save (Ctrl-C, a
    full disk) removes it and leaves the previous checkpoint in `path` as it was. Files of
    `path` that a checkpoint does not hold (training_log.jsonl, the user's) are kept. When
    the parent folder cannot be written, the checkpoint is written in place instead.
    """
    import os
    import shutil
    path = Path(path)
    target = path.resolve()   # a symlinked output folder keeps its link
    staging: Optional[Path] = target.with_name(f'.{target.name}.saving-{os.getpid()}')
    try:
        staging.mkdir(parents=True)
    except FileExistsError:   # left by an earlier interrupted save of this process id
        shutil.rmtree(staging)
        staging.mkdir()
    except PermissionError:
        staging = None
        target.mkdir(parents=True, exist_ok=True)
    folder = staging or target
    try:
        unet.save_pretrained(folder / 'unet', safe_serialization=True)
        vae.save_pretrained(folder / 'vae', safe_serialization=True)
        text_encoder.save_pretrained(folder / 'text_encoder', safe_serialization=True)
        tokenizer.save_pretrained(folder / 'tokenizer')
        scheduler.save_pretrained(folder / 'scheduler')
        write_model_index(folder, LOTUS_CLASS_NAMES[variant])
        write_densepred_config(folder, space, processing_resolution)
        if state is not None:
            partial = folder / (STATE_FILE + '.partial')
            torch.save(state, partial)
            partial.replace(folder / STATE_FILE)
    except BaseException:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    if staging is not None:
        _swap_into_place(staging, target)
    return path


def _swap_into_place(staging: Path, target: Path) -> None:
    """Rename the complete folder `staging` to `target`, moving the rest of `target` along.

    Entries of `target` missing from `staging` are moved into it, `target` is renamed
    aside and `staging` renamed to `target`; the old folder is then deleted. Ctrl-C
    (SIGINT) is held back during the renames (microseconds) and delivered after them, so
    `target` holds either the old or the new checkpoint, never a mix; a failed rename puts
    everything back (and deletes `staging`; if putting back fails, nothing is deleted).
    """
    import os
    import shutil
    import signal
    import threading
    old = target.with_name(f'.{target.name}.replaced-{os.getpid()}')
    shutil.rmtree(old, ignore_errors=True)   # left by an earlier save killed after its swap
    held: list = []
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.getsignal(signal.SIGINT)
        if previous is not None:
            signal.signal(signal.SIGINT, lambda *_: held.append(True))
    moved, set_aside = [], False
    try:
        if target.is_dir():
            for entry in target.iterdir():
                if not (staging / entry.name).exists():
                    os.rename(entry, staging / entry.name)
                    moved.append(entry.name)
            os.rename(target, old)
            set_aside = True
        os.rename(staging, target)
    except BaseException:
        try:
            if set_aside and not target.exists():
                os.rename(old, target)
            for name in moved:
                os.rename(staging / name, target / name)
        except OSError:
            pass   # both folders stay on disk: nothing of the user's is deleted
        else:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    shutil.rmtree(old, ignore_errors=True)
    if held:
        signal.raise_signal(signal.SIGINT)   # to the handler the process had before


def _load_vae(source: str):
    from diffusers import AutoencoderKL
    path = Path(source)
    sub = 'vae' if (path / 'vae').is_dir() else None
    return AutoencoderKL.from_pretrained(path, subfolder=sub, use_safetensors=True)


def _prompt_parts(source: Optional[Path], tmp: Path):
    """Return (tokenizer, text_encoder): from a checkpoint, else the tiny byte-level pair."""
    from transformers import CLIPTextModel, CLIPTokenizer
    if source is not None:
        return (CLIPTokenizer.from_pretrained(source, subfolder='tokenizer'),
                CLIPTextModel.from_pretrained(source, subfolder='text_encoder',
                                              use_safetensors=True))
    write_byte_tokenizer(tmp / 'tokenizer')
    return CLIPTokenizer.from_pretrained(tmp / 'tokenizer'), byte_text_encoder()


def _lotus_scheduler(source: Optional[Path]):
    from diffusers import DDIMScheduler
    if source is None:
        return sd2_ddim_scheduler('sample')
    base = DDIMScheduler.from_pretrained(source, subfolder='scheduler')
    return DDIMScheduler.from_config(base.config, prediction_type='sample')


def adapt_unet(unet, variant: str, latent_channels: int):
    """Give a Stable Diffusion / Marigold UNet Lotus's inputs and task switcher.

    Missing projection class embedding: added (new weights, zero-initialised output so
    the pretrained behaviour is kept at first). Input channels: 4 → 8 for Lotus-G by
    duplicating the first convolution's weights at half value (the image latent and the
    noise share them), as Marigold and Lotus do.
    """
    from diffusers import UNet2DConditionModel
    wanted = 2 * latent_channels if variant == 'g' else latent_channels
    config = {k: v for k, v in unet.config.items() if not k.startswith('_')}
    changed = False
    if config.get('class_embed_type') != 'projection':
        config.update(class_embed_type='projection', projection_class_embeddings_input_dim=4)
        changed = True
    have = config['in_channels']
    if have != wanted:
        if not (variant == 'g' and have == latent_channels):
            raise ValueError(f'cannot adapt a UNet with {have} input channels to Lotus-'
                             f'{variant.upper()} ({wanted} channels)')
        config['in_channels'] = wanted
        changed = True
    if not changed:
        return unet
    state = unet.state_dict()
    if have != wanted:
        weight = state['conv_in.weight']
        state['conv_in.weight'] = torch.cat([weight, weight], dim=1) / 2
    new = UNet2DConditionModel.from_config(config)
    missing, unexpected = new.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith('class_embedding') for k in missing):
        raise ValueError(f'UNet adaptation lost weights: missing {missing}, '
                         f'unexpected {unexpected}')
    with torch.no_grad():
        new.class_embedding.linear_2.weight.zero_()
        new.class_embedding.linear_2.bias.zero_()
    return new


# --- the run ----------------------------------------------------------------------------

def train(cfg: TrainConfig, log: Callable[[str], None] = print) -> Path:
    """Run `densepred train`; return the checkpoint folder (also on a time limit)."""
    import tempfile

    from diffusers import UNet2DConditionModel

    from densepred_ros.models import load_predictor, runtime
    from densepred_ros.models.loading import quiet_libraries
    from densepred_ros.training.evaluate import evaluate, format_metrics, VALIDATION_SEED
    cfg.check()
    quiet_libraries()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = runtime.resolve_device(cfg.device)
    output = Path(cfg.output)
    resuming = cfg.resume and (output / STATE_FILE).is_file()
    if cfg.resume and not resuming and (output / 'vae').is_dir() and cfg.vae is None:
        cfg.vae = str(output)
    model_config = load_model_config(cfg.model_config) if cfg.init is None else None
    if cfg.frame_set is not None:
        height, width = cfg.frame_set.rgb.shape[1:3]
    elif cfg.resolution is not None:
        height, width = cfg.resolution
    elif model_config is not None:
        height, width = config_resolution(model_config)
    else:
        height, width = 384, 512
    processing = cfg.processing_resolution or max(height, width)
    frames = load_training_frames(cfg, height, width, log)
    log(f'{len(frames)} training frames at {width}×{height} on {device}')
    source = Path(cfg.init) if cfg.init else None
    if resuming:
        source = output
    tmp = Path(tempfile.mkdtemp(prefix='densepred-train-'))
    tokenizer, text_encoder = _prompt_parts(source, tmp)
    scheduler = _lotus_scheduler(source)

    # 1. VAE: reuse, load, or train from scratch.
    if source is not None:
        vae = _load_vae(str(source))
    elif cfg.vae is not None:
        vae = _load_vae(cfg.vae)
        log(f'VAE from {cfg.vae} (frozen)')
    else:
        vae = build_vae(model_config)
        stats = train_vae(vae, vae_training_images(frames), cfg.vae_steps, cfg.vae_batch_size,
                          cfg.vae_lr, cfg.vae_time_limit * 60, device, cfg.seed,
                          progress=cfg.progress)
        log(f'VAE trained: {json.dumps(stats)}')
    vae.to(device).eval()
    check = vae_annotation_check(vae, frames, cfg.space, device)
    log(f'VAE reconstruction of {cfg.space} annotations: {json.dumps(check)}')

    # 2. UNet.
    if resuming:
        unet = UNet2DConditionModel.from_pretrained(output, subfolder='unet',
                                                    use_safetensors=True)
    elif source is not None:
        unet = adapt_unet(UNet2DConditionModel.from_pretrained(
            source, subfolder='unet', use_safetensors=True), cfg.variant,
            vae.config.latent_channels)
    else:
        unet = build_unet(model_config, cfg.variant, vae.config.latent_channels)
    variant = 'g' if unet.config.in_channels == 2 * vae.config.latent_channels else 'd'
    if variant != cfg.variant:
        raise ValueError(f'{output}: the checkpoint is Lotus-{variant.upper()}, '
                         f'not {cfg.variant.upper()}')
    prompt = encode_empty_prompt(tokenizer, text_encoder)
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        vae.enable_gradient_checkpointing()   # the sparse loss backpropagates the decoder
    trainer = LotusTrainer(unet, vae, scheduler, prompt, variant, cfg.lr, device, cfg.seed,
                           cfg.preserver_fraction, cfg.mixed_precision)
    if resuming:
        trainer.load_state_dict(torch.load(output / STATE_FILE, weights_only=True))
        log(f'resumed at step {trainer.step}')

    def save(path: Path = output, state: bool = True) -> Path:
        saved = save_checkpoint(path, trainer.unet, vae, text_encoder, tokenizer, scheduler,
                                variant, cfg.space, processing,
                                trainer.state_dict() if state else None)
        if cfg.record is not None:
            record_adaptation(saved, cfg.record)
        return saved

    def write_log(entry: dict) -> None:
        output.mkdir(parents=True, exist_ok=True)
        with open(output / LOG_FILE, 'a') as f:
            f.write(json.dumps(entry) + '\n')

    if cfg.vae_only:
        path = save()
        log(f'VAE-only run: checkpoint with an untrained UNet written to {path}')
        return path

    rgb_latents = encode_latents(vae, dataset.rgb_images(frames), device)
    images, valid = dataset.annotations(frames, cfg.space)
    sparse = frames.sparse is not None and cfg.space != NORMALS
    if sparse:
        log(f'{int(frames.sparse.sum())} of {len(frames)} frames have sparse depth: '
            'pixel-space scale-and-shift-invariant loss through the VAE decoder for all')
        targets, target_valid = torch.from_numpy(images[:, 0].copy()), torch.from_numpy(valid)
    else:
        targets = encode_latents(vae, images, device)
        target_valid = latent_valid(valid)
    del images
    val_frames = []
    if cfg.val_frames:
        from densepred_ros.training.evaluate import held_out_frames
        val_frames = held_out_frames(cfg.val_frames, VALIDATION_SEED, 2 * height, 2 * width)
    write_log({'event': 'start', 'step': trainer.step, 'config': cfg.loggable()})
    tracker = _EarlyStop(cfg, log)

    def validate() -> bool:
        """Validate (and save); return True when training should stop early."""
        if cfg.validator is not None:
            return tracker.validate(trainer.step, save, tmp / 'candidate', write_log,
                                    lambda: trainer.unet.train())
        path = save()
        trainer.unet.train()
        if not val_frames:
            return False
        predictor = load_predictor(str(path), PredictorOptions(device=str(device), dtype='fp32'))
        metrics = evaluate(predictor, val_frames)
        predictor.close()
        log(f'step {trainer.step}: validation {format_metrics(metrics)}')
        write_log({'event': 'validation', 'step': trainer.step, 'elapsed': trainer.elapsed,
                   **metrics})
        return False

    if cfg.validator is not None and not resuming:
        tracker.before(save, write_log)
    from tqdm import tqdm
    time_limit_s = cfg.time_limit * 60
    bar = tqdm(total=cfg.steps, initial=trainer.step, desc=f'UNet ({cfg.space})',
               disable=not cfg.progress, dynamic_ncols=True, mininterval=5.0)
    recent = []
    run_start, elapsed_before = time.monotonic(), trainer.elapsed
    while trainer.step < cfg.steps:
        trainer.elapsed = elapsed_before + time.monotonic() - run_start
        if time_limit_s and trainer.elapsed >= time_limit_s:
            log(f'time limit of {cfg.time_limit} min reached at step {trainer.step}')
            break
        idx = torch.randint(len(frames), (cfg.batch_size,), generator=trainer.generator)
        scale = lr_factor(trainer.step, cfg.steps, trainer.elapsed, time_limit_s,
                          max(1, cfg.warmup_steps))
        losses = trainer.train_step(rgb_latents[idx], targets[idx], target_valid[idx],
                                    scale, sparse)
        recent = (recent + [losses['annotation']])[-50:]
        bar.update(1)
        bar.set_postfix(loss=f'{np.mean(recent):.4f}', refresh=False)
        if trainer.step % 50 == 0:
            write_log({'event': 'train', 'step': trainer.step, 'elapsed': trainer.elapsed,
                       'lr': cfg.lr * scale, **losses})
        if cfg.val_every and trainer.step % cfg.val_every == 0:
            if validate():
                break
        elif cfg.save_every and trainer.step % cfg.save_every == 0 and cfg.validator is None:
            save()   # with a validator the output holds the best weights only
    bar.close()
    if not (cfg.val_every and trainer.step % cfg.val_every == 0 and trainer.step):
        validate()
    if cfg.validator is not None:
        tracker.finish(output)
    shutil.rmtree(tmp, ignore_errors=True)
    return output


def record_adaptation(path: Path, record: Dict[str, Any]) -> None:
    """Add ``record`` to the checkpoint's densepred.json under 'adapted_on'."""
    from densepred_ros.models.loading import DENSEPRED_CONFIG, read_json
    config_path = Path(path) / DENSEPRED_CONFIG
    config = read_json(config_path)
    config['adapted_on'] = record
    config_path.write_text(json.dumps(config, indent=2) + '\n')


class _EarlyStop:
    """Validation by `cfg.validator`, keeping the best checkpoint in the output folder.

    The initial weights are scored (and saved) first; each later validation scores a
    candidate saved aside and replaces the output only when its AbsRel is lower by more
    than `cfg.min_improvement` (relative); after `cfg.patience` validations without that,
    training stops. `cfg.record['validation']` gets the before, best and history figures.
    """

    def __init__(self, cfg: TrainConfig, log: Callable[[str], None]) -> None:
        self.cfg = cfg
        self.log = log
        self.best: Optional[Dict[str, float]] = None
        self.best_step = 0
        self.misses = 0
        self.history = []

    def _note(self, step: int, metrics: Dict[str, float], write_log: Callable) -> None:
        self.history.append({'step': step, 'abs_rel': metrics['abs_rel'],
                             'delta1': metrics['delta1']})
        write_log({'event': 'validation', 'step': step, **metrics})
        self._update_record()

    def _update_record(self) -> None:
        if self.cfg.record is None:
            return
        validation = self.cfg.record.setdefault('validation', {})
        validation.update(best_step=self.best_step, history=self.history,
                          after={k: self.best[k] for k in ('abs_rel', 'delta1', 'n')})

    def before(self, save: Callable, write_log: Callable) -> None:
        path = save()
        metrics = self.cfg.validator(str(path))
        self.best = metrics
        if self.cfg.record is not None:
            self.cfg.record.setdefault('validation', {})['before'] = {
                k: metrics[k] for k in ('abs_rel', 'delta1', 'n')}
        self._note(0, metrics, write_log)
        self.log(f'step 0 (initial weights): held-out AbsRel {metrics["abs_rel"]:.4f} '
                 f'δ1 {metrics["delta1"]:.4f} over {int(metrics["n"])} frames')
        save()   # with the record

    def validate(self, step: int, save: Callable, candidate: Path, write_log: Callable,
                 resume_training: Callable) -> bool:
        path = save(candidate, state=False)
        metrics = self.cfg.validator(str(path))
        resume_training()
        improved = (self.best is None or metrics['abs_rel']
                    < self.best['abs_rel'] * (1.0 - self.cfg.min_improvement))
        if improved:
            self.best, self.best_step, self.misses = metrics, step, 0
        else:
            self.misses += 1
        self._note(step, metrics, write_log)
        if improved:
            save()
        self.log(f'step {step}: held-out AbsRel {metrics["abs_rel"]:.4f} δ1 '
                 f'{metrics["delta1"]:.4f}' + (' (best)' if improved else
                                               f' (no gain {self.misses}/{self.cfg.patience})'))
        if self.cfg.patience and self.misses >= self.cfg.patience:
            self.log(f'early stop at step {step}: the best stays step {self.best_step}')
            return True
        return False

    def finish(self, output: Path) -> None:
        """Write the final record into the kept (best) checkpoint."""
        if self.cfg.record is not None:
            record_adaptation(output, self.cfg.record)
