"""Model configurations for `densepred train`: the VAE and UNet of a miniature Lotus.

A model config is a JSON object with `vae` (AutoencoderKL keyword arguments), `unet`
(UNet2DConditionModel keyword arguments without `in_channels` and `out_channels`,
which follow from the VAE's latent channels and the Lotus variant) and `resolution`
([height, width] of the training images). The configs
shipped with the package live in `densepred_ros/configs/` (`lotus_demo.json`,
`lotus_tiny.json`) and can be named without a path.
"""

import json
from pathlib import Path
from typing import Any, Dict, Tuple

CONFIG_DIR = Path(__file__).resolve().parent.parent / 'configs'


def load_model_config(name_or_path: str) -> Dict[str, Any]:
    """Read a model config by path or by the name of a shipped config (e.g. 'lotus_demo').

    Raises:
        ValueError: the file does not exist, is not JSON, or lacks `vae`/`unet`.
    """
    path = Path(name_or_path)
    if not path.is_file():
        shipped = CONFIG_DIR / f'{name_or_path}.json'
        if not shipped.is_file():
            available = ', '.join(sorted(p.stem for p in CONFIG_DIR.glob('lotus_*.json')))
            raise ValueError(f'model config {name_or_path!r} is neither a file nor one of the '
                             f'shipped configs ({available})')
        path = shipped
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f'{path} is not valid JSON: {exc}') from exc
    for key in ('vae', 'unet'):
        if not isinstance(config.get(key), dict):
            raise ValueError(f'{path} lacks the object {key!r}')
    for key in ('in_channels', 'out_channels'):
        if key in config['unet']:
            raise ValueError(f'{path}: unet.{key} follows from the VAE and the variant; '
                             'remove it')
    return config


def config_resolution(config: Dict[str, Any]) -> Tuple[int, int]:
    """Return the config's training (height, width), multiples of 8."""
    height, width = (int(v) for v in config.get('resolution', (96, 128)))
    if height % 8 or width % 8 or height < 8 or width < 8:
        raise ValueError(f'resolution must be positive multiples of 8, got {height}×{width}')
    return height, width


def build_vae(config: Dict[str, Any]):
    """Return a randomly initialised AutoencoderKL from the config's `vae` object."""
    from diffusers import AutoencoderKL
    kwargs = {k: v for k, v in config['vae'].items() if not k.startswith('_')}
    return AutoencoderKL(**kwargs)


def build_unet(config: Dict[str, Any], variant: str, latent_channels: int):
    """Return a randomly initialised Lotus UNet: 2·C inputs for 'g', C for 'd'."""
    from diffusers import UNet2DConditionModel
    if variant not in ('g', 'd'):
        raise ValueError(f"variant must be 'g' or 'd', got {variant!r}")
    kwargs = {k: v for k, v in config['unet'].items() if not k.startswith('_')}
    kwargs.update(class_embed_type='projection', projection_class_embeddings_input_dim=4,
                  out_channels=latent_channels)
    in_channels = 2 * latent_channels if variant == 'g' else latent_channels
    return UNet2DConditionModel(in_channels=in_channels, **kwargs)
