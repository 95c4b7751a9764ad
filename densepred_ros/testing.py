"""Tiny random-weight checkpoints in the real diffusers layout, for tests and benchmarks.

The checkpoints written here load through exactly the code path of real Lotus and
Marigold weights (`densepred_ros.models.load_predictor`), and through the authors'
own pipelines: same folders (`unet/`, `vae/`, `scheduler/`, `text_encoder/`,
`tokenizer/`, `model_index.json`), same classes, safetensors files. Their weights are
random, so their predictions mean nothing: use them for plumbing, shapes and parity.
"""

import json
import os
from pathlib import Path
from typing import Optional

from densepred_ros.models.loading import quiet_libraries
import torch

LOTUS_CLASS_NAMES = {'g': 'LotusGPipeline', 'd': 'LotusDPipeline'}
DENSEPRED_CONFIG = 'densepred.json'


def _bytes_to_unicode() -> dict:
    """Return the byte → printable unicode table of GPT-2/CLIP byte-level BPE."""
    printable = (list(range(ord('!'), ord('~') + 1)) + list(range(ord('¡'), ord('¬') + 1))
                 + list(range(ord('®'), ord('ÿ') + 1)))
    table = {}
    extra = 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def write_tiny_tokenizer(path: Path) -> None:
    """Write a byte-level CLIP tokenizer with no merges (every byte is one token)."""
    path.mkdir(parents=True, exist_ok=True)
    symbols = sorted(set(_bytes_to_unicode().values()))
    vocab = {}
    for s in symbols:
        vocab[s] = len(vocab)
    for s in symbols:
        vocab[s + '</w>'] = len(vocab)
    vocab['<|startoftext|>'] = len(vocab)
    vocab['<|endoftext|>'] = len(vocab)
    (path / 'vocab.json').write_text(json.dumps(vocab))
    (path / 'merges.txt').write_text('#version: 0.2\n')
    (path / 'special_tokens_map.json').write_text(json.dumps({
        'bos_token': '<|startoftext|>', 'eos_token': '<|endoftext|>',
        'unk_token': '<|endoftext|>', 'pad_token': '<|endoftext|>'}))
    (path / 'tokenizer_config.json').write_text(json.dumps({
        'tokenizer_class': 'CLIPTokenizer', 'model_max_length': 77,
        'bos_token': '<|startoftext|>', 'eos_token': '<|endoftext|>',
        'unk_token': '<|endoftext|>', 'pad_token': '<|endoftext|>',
        'do_lower_case': True}))


def _tiny_text_encoder():
    from transformers import CLIPTextConfig, CLIPTextModel
    vocab_size = 2 * 256 + 2
    config = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=32,
        bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1)
    return CLIPTextModel(config).eval()


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


def _ddim_scheduler(prediction_type: str):
    from diffusers import DDIMScheduler
    # Stable Diffusion 2's schedule, as in the Lotus (x0) and Marigold (v) checkpoints.
    return DDIMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
        beta_schedule='scaled_linear', clip_sample=False, set_alpha_to_one=False,
        steps_offset=1, prediction_type=prediction_type, timestep_spacing='trailing')


def _write_model_index(path: Path, class_name: str) -> None:
    import diffusers
    index = {
        '_class_name': class_name,
        '_diffusers_version': diffusers.__version__,
        'feature_extractor': [None, None],
        'image_encoder': [None, None],
        'safety_checker': [None, None],
        'requires_safety_checker': False,
        'scheduler': ['diffusers', 'DDIMScheduler'],
        'text_encoder': ['transformers', 'CLIPTextModel'],
        'tokenizer': ['transformers', 'CLIPTokenizer'],
        'unet': ['diffusers', 'UNet2DConditionModel'],
        'vae': ['diffusers', 'AutoencoderKL'],
    }
    (path / 'model_index.json').write_text(json.dumps(index, indent=2))


def write_densepred_config(path: Path, space: str,
                           processing_resolution: Optional[int] = None) -> None:
    """Record what a checkpoint predicts (read by the loader; ignored by diffusers)."""
    config = {'space': space}
    if processing_resolution is not None:
        config['processing_resolution'] = int(processing_resolution)
    (Path(path) / DENSEPRED_CONFIG).write_text(json.dumps(config, indent=2) + '\n')


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
    _tiny_text_encoder().save_pretrained(path / 'text_encoder', safe_serialization=True)
    write_tiny_tokenizer(path / 'tokenizer')
    _ddim_scheduler('sample').save_pretrained(path / 'scheduler')
    _write_model_index(path, LOTUS_CLASS_NAMES[variant])
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
        'scheduler': _ddim_scheduler('v_prediction'),
        'text_encoder': _tiny_text_encoder(),
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
