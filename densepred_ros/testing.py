"""Tiny random-weight checkpoints in the real diffusers layout, for tests and benchmarks.

The checkpoints written here load through exactly the code path of real Lotus and
Marigold weights (`densepred_ros.models.load_predictor`), and through the authors'
own pipelines: same folders (`unet/`, `vae/`, `scheduler/`, `text_encoder/`,
`tokenizer/`, `model_index.json`), same classes, safetensors files. Their weights are
random, so their predictions mean nothing: use them for plumbing, shapes and parity.
"""

import os
from pathlib import Path

from densepred_ros.models.checkpoint import LOTUS_CLASS_NAMES, quiet_libraries
from densepred_ros.models.checkpoint_writer import (
    byte_text_encoder, sd2_ddim_scheduler, write_byte_tokenizer, write_densepred_config,
    write_model_index)
import torch

__all__ = ['write_densepred_config', 'write_tiny_lotus', 'write_tiny_marigold',
           'write_tiny_tokenizer']

#: Old names, still imported by tests.
write_tiny_tokenizer = write_byte_tokenizer
_ddim_scheduler = sd2_ddim_scheduler


def _tiny_vae():
    from diffusers import AutoencoderKL
    # Four blocks give the real 8× downsampling of the Stable Diffusion VAE.
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=('DownEncoderBlock2D',) * 4,
        up_block_types=('UpDecoderBlock2D',) * 4,
        block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=8,
        sample_size=64, scaling_factor=0.18215).eval()


def _tiny_unet(in_channels: int, class_embedding: bool):
    from diffusers import UNet2DConditionModel
    kwargs = {}
    if class_embedding:
        kwargs = {'class_embed_type': 'projection', 'projection_class_embeddings_input_dim': 4}
    return UNet2DConditionModel(
        sample_size=8, in_channels=in_channels, out_channels=4,
        down_block_types=('CrossAttnDownBlock2D', 'DownBlock2D'),
        up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D'),
        block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8,
        cross_attention_dim=32, attention_head_dim=8, use_linear_projection=True,
        **kwargs).eval()


def write_tiny_lotus(path: os.PathLike, variant: str = 'g', space: str = 'depth',
                     seed: int = 0, processing_resolution: int = 64) -> Path:
    """Write a random-weight Lotus-G or Lotus-D checkpoint in the diffusers layout.

    Args:
        path: folder to create (parents too).
        variant: 'g' (UNet input: image latent + noise, 8 channels) or 'd' (4 channels).
        space: 'depth', 'disparity' or 'normals', recorded in `densepred.json`.
        seed: torch seed for the random weights.
        processing_resolution: default longest edge recorded for the predictor.

    Returns:
        The checkpoint folder.
    """
    if variant not in LOTUS_CLASS_NAMES:
        raise ValueError(f"variant must be 'g' or 'd', got {variant!r}")
    quiet_libraries()
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    _tiny_unet(8 if variant == 'g' else 4, class_embedding=True).save_pretrained(
        path / 'unet', safe_serialization=True)
    _tiny_vae().save_pretrained(path / 'vae', safe_serialization=True)
    byte_text_encoder().save_pretrained(path / 'text_encoder', safe_serialization=True)
    write_tiny_tokenizer(path / 'tokenizer')
    sd2_ddim_scheduler('sample').save_pretrained(path / 'scheduler')
    write_model_index(path, LOTUS_CLASS_NAMES[variant])
    write_densepred_config(path, space, processing_resolution)
    return path


def write_tiny_marigold(path: os.PathLike, task: str = 'depth', seed: int = 0,
                        processing_resolution: int = 64, denoising_steps: int = 2) -> Path:
    """Write a random-weight Marigold depth or normals checkpoint with diffusers' own pipeline.

    Args:
        path: folder to create.
        task: 'depth' or 'normals'.
        seed: torch seed for the random weights.
        processing_resolution: the pipeline's default processing resolution.
        denoising_steps: the pipeline's default number of denoising steps.

    Returns:
        The checkpoint folder.
    """
    from diffusers import MarigoldDepthPipeline, MarigoldNormalsPipeline
    from transformers import CLIPTokenizer
    quiet_libraries()
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    write_tiny_tokenizer(path / 'tokenizer')
    components = {
        'unet': _tiny_unet(8, class_embedding=False),
        'vae': _tiny_vae(),
        'scheduler': sd2_ddim_scheduler('v_prediction'),
        'text_encoder': byte_text_encoder(),
        'tokenizer': CLIPTokenizer.from_pretrained(path / 'tokenizer'),
    }
    if task == 'depth':
        pipe = MarigoldDepthPipeline(
            **components, prediction_type='depth', scale_invariant=True, shift_invariant=True,
            default_denoising_steps=denoising_steps,
            default_processing_resolution=processing_resolution)
    elif task == 'normals':
        pipe = MarigoldNormalsPipeline(
            **components, prediction_type='normals', use_full_z_range=True,
            default_denoising_steps=denoising_steps,
            default_processing_resolution=processing_resolution)
    else:
        raise ValueError(f"task must be 'depth' or 'normals', got {task!r}")
    pipe.save_pretrained(path, safe_serialization=True)
    return path
