"""Write the parts of a diffusers-layout checkpoint that `load_predictor` reads.

Used by the trainer (checkpoints it saves) and by `densepred_ros.testing` (tiny
random-weight checkpoints): the model index, `densepred.json`, a byte-level CLIP
tokenizer with the small text encoder that goes with it, and Stable Diffusion 2's
DDIM schedule.
"""

import json
from pathlib import Path
from typing import Optional

from densepred_ros.models.base import DENSEPRED_CONFIG

#: Token ids of the byte-level tokenizer: 2 × 256 byte symbols, then start and end.
BYTE_VOCAB_SIZE = 2 * 256 + 2


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


def write_byte_tokenizer(path: Path) -> None:
    """Write a byte-level CLIP tokenizer with no merges (every byte is one token)."""
    path = Path(path)
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


def byte_text_encoder():
    """Return a random-weight 2-layer CLIPTextModel (width 32) for the byte tokenizer.

    Lotus embeds only the empty prompt, so any fixed encoder serves a model trained
    with it; this one is small.
    """
    from transformers import CLIPTextConfig, CLIPTextModel   # heavy optional library
    config = CLIPTextConfig(
        vocab_size=BYTE_VOCAB_SIZE, hidden_size=32, intermediate_size=37,
        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
        projection_dim=32, bos_token_id=BYTE_VOCAB_SIZE - 2,
        eos_token_id=BYTE_VOCAB_SIZE - 1, pad_token_id=BYTE_VOCAB_SIZE - 1)
    return CLIPTextModel(config).eval()


def sd2_ddim_scheduler(prediction_type: str):
    """Return Stable Diffusion 2's DDIM schedule ('sample' for Lotus, 'v_prediction' Marigold)."""
    from diffusers import DDIMScheduler   # heavy optional library
    return DDIMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
        beta_schedule='scaled_linear', clip_sample=False, set_alpha_to_one=False,
        steps_offset=1, prediction_type=prediction_type, timestep_spacing='trailing')


def write_model_index(path: Path, class_name: str) -> None:
    """Write model_index.json of a Lotus-style pipeline named `class_name`."""
    import diffusers   # heavy optional library (only its version is recorded)
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
    (Path(path) / 'model_index.json').write_text(json.dumps(index, indent=2))


def write_densepred_config(path: Path, space: str,
                           processing_resolution: Optional[int] = None) -> None:
    """Record what a checkpoint predicts (read by the loader; ignored by diffusers)."""
    config = {'space': space}
    if processing_resolution is not None:
        config['processing_resolution'] = int(processing_resolution)
    (Path(path) / DENSEPRED_CONFIG).write_text(json.dumps(config, indent=2) + '\n')
