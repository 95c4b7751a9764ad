"""Single-step Lotus inference (He et al. 2024) on diffusers components, no ROS.

Lotus fine-tunes Stable Diffusion 2 to predict the annotation latent directly (x0, the
scheduler's "sample" prediction) in one step at timestep 999. The UNet takes a task
switcher as its class label: sin/cos of [1, 0] asks for the annotation, [0, 1] for the
reconstruction of the input (the "detail preserver" used in training). Lotus-G also
concatenates Gaussian noise to the image latent (8 input channels); Lotus-D does not (4).

The steps follow the authors' pipeline and `infer.py` (EnVision-Research/Lotus):
empty prompt tokenised without padding, image in [-1, 1], latent × scaling factor,
UNet at t = 999, decode, map [-1, 1] → [0, 1], channel mean for depth.
"""

from pathlib import Path

from densepred_ros.models import runtime
from densepred_ros.models.base import ModelSpec, NORMALS, Prediction, PredictorOptions
from densepred_ros.models.loading import CheckpointError, default_resolution
import numpy as np
import torch

TIMESTEP = 999
VAE_MULTIPLE = 8


def task_embedding(annotation: bool = True) -> torch.Tensor:
    """Return the 1×4 task switcher: sin/cos of [1, 0] (annotation) or [0, 1] (image)."""
    switch = torch.tensor([[1.0, 0.0]] if annotation else [[0.0, 1.0]])
    return torch.cat([torch.sin(switch), torch.cos(switch)], dim=-1)


def encode_empty_prompt(tokenizer, text_encoder) -> torch.Tensor:
    """Return the 1×T×D text embedding of the empty prompt, as the Lotus authors build it.

    The prompt is tokenised without padding (so T = 2: start and end tokens) and the
    encoder's last hidden state is used.
    """
    tokens = tokenizer('', padding='do_not_pad', max_length=tokenizer.model_max_length,
                       truncation=True, return_tensors='pt')
    mask = None
    if getattr(text_encoder.config, 'use_attention_mask', False):
        mask = tokens.attention_mask
    with torch.no_grad():
        return text_encoder(tokens.input_ids, attention_mask=mask)[0]


class LotusPredictor:
    """Lotus-G / Lotus-D depth, disparity or normals predictor.

    Attributes:
        spec: what the checkpoint predicts and its defaults.
        options: the run-time options in force.
        device, dtype: where and how the UNet and VAE run.
    """

    def __init__(self, path: Path, space: str, options: PredictorOptions, source: str = '',
                 allow_pickle: bool = False) -> None:
        from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        if options.latent not in ('mean', 'sample'):
            raise ValueError(f"latent must be 'mean' or 'sample', got {options.latent!r}")
        self.options = options
        self.device = runtime.resolve_device(options.device)
        self.dtype = runtime.resolve_dtype(options.dtype)
        safetensors = not allow_pickle
        try:
            self.unet = UNet2DConditionModel.from_pretrained(
                path, subfolder='unet', use_safetensors=safetensors)
            self.vae = AutoencoderKL.from_pretrained(
                path, subfolder='vae', use_safetensors=safetensors)
            self.scheduler = DDIMScheduler.from_pretrained(path, subfolder='scheduler')
            tokenizer = CLIPTokenizer.from_pretrained(path, subfolder='tokenizer')
            text_encoder = CLIPTextModel.from_pretrained(
                path, subfolder='text_encoder', use_safetensors=safetensors)
        except (OSError, ValueError, KeyError) as exc:
            raise CheckpointError(f'cannot load Lotus components from {path}: {exc}') from exc

        in_channels = self.unet.config.in_channels
        latent_channels = self.vae.config.latent_channels
        if in_channels == 2 * latent_channels:
            variant = 'g'
        elif in_channels == latent_channels:
            variant = 'd'
        else:
            raise CheckpointError(
                f'{path}: UNet in_channels {in_channels} fits neither Lotus-G '
                f'({2 * latent_channels}) nor Lotus-D ({latent_channels})')
        if self.unet.config.class_embed_type != 'projection':
            raise CheckpointError(f'{path}: the UNet has no projection class embedding, '
                                  'so it is not a Lotus checkpoint')

        # The prompt never changes: embed it once and drop the text encoder (~1.4 GB fp32).
        self.prompt_embeds = encode_empty_prompt(tokenizer, text_encoder).to(
            self.device, self.dtype)
        del text_encoder, tokenizer
        self.task_emb = task_embedding(True).to(self.device, self.dtype)
        self.unet.to(self.device, self.dtype).eval()
        self.vae.to(self.device, self.dtype).eval()
        self.spec = ModelSpec(family='lotus', variant=variant, space=space,
                              default_processing_resolution=default_resolution(path),
                              source=source or str(path))

    @property
    def processing_resolution(self) -> int:
        """Longest edge in pixels the model runs at (0 = native)."""
        if self.options.processing_resolution is None:
            return self.spec.default_processing_resolution
        return self.options.processing_resolution

    def _generator(self) -> torch.Generator:
        return torch.Generator('cpu').manual_seed(self.options.seed)

    @torch.no_grad()
    def predict_latent(self, image: torch.Tensor) -> torch.Tensor:
        """Run the single step on a 1×3×H×W image in [-1, 1] (H, W multiples of 8).

        Returns:
            The 1×C×H×W decoded annotation in [-1, 1], float32, on the model's device.
        """
        from diffusers.utils.torch_utils import randn_tensor

        image = image.to(self.device, self.dtype)
        posterior = self.vae.encode(image).latent_dist
        if self.options.latent == 'sample':
            # The authors draw the posterior sample from torch's global RNG seeded with
            # the run's seed; a fresh generator seeded alike gives the same draw.
            noise = randn_tensor(posterior.mean.shape, generator=self._generator(),
                                 device=self.device, dtype=self.dtype)
            rgb_latent = posterior.mean + posterior.std * noise
        else:
            rgb_latent = posterior.mean
        rgb_latent = rgb_latent * self.vae.config.scaling_factor          # 1×4×h×w

        timestep = torch.tensor(TIMESTEP, device=self.device, dtype=torch.long)
        if self.spec.variant == 'g':
            noise = randn_tensor(rgb_latent.shape, generator=self._generator(),
                                 device=self.device, dtype=self.dtype)
            noise = self.scheduler.scale_model_input(
                noise * self.scheduler.init_noise_sigma, timestep)
            unet_input = torch.cat([rgb_latent, noise], dim=1)          # 1×8×h×w
        else:
            unet_input = rgb_latent                                       # 1×4×h×w
        x0 = self.unet(unet_input, timestep, encoder_hidden_states=self.prompt_embeds,
                       class_labels=self.task_emb, return_dict=False)[0]  # 1×4×h×w
        decoded = self.vae.decode(x0 / self.vae.config.scaling_factor, return_dict=False)[0]
        return decoded.float()                                            # 1×3×H×W

    @torch.no_grad()
    def predict(self, rgb: np.ndarray) -> Prediction:
        """Predict depth, disparity or normals for one image.

        Args:
            rgb: H×W×3 uint8 RGB image.

        Returns:
            A Prediction at H×W: depth/disparity in [0, 1] (float32), or unit normals in
            the camera optical frame.
        """
        runtime.check_rgb(rgb)
        height, width = rgb.shape[:2]
        image = runtime.rgb_to_tensor(rgb)                                # 1×3×H×W
        size = runtime.processing_size(height, width, self.processing_resolution)
        image = runtime.resize(image, size)
        padded = runtime.pad_to_multiple(image, VAE_MULTIPLE)
        decoded = self.predict_latent(padded)[:, :, :size[0], :size[1]]
        annotation = (decoded / 2.0 + 0.5).clamp(0.0, 1.0)                 # 1×3×h×w
        annotation = runtime.resize(annotation.cpu(), (height, width))
        values = annotation[0].permute(1, 2, 0).numpy()                   # H×W×3
        if self.spec.space == NORMALS:
            normals = runtime.unit_normals(values * 2.0 - 1.0)
            return Prediction(NORMALS, runtime.model_normals_to_optical(normals))
        return Prediction(self.spec.space, values.mean(axis=-1).astype(np.float32))

    def close(self) -> None:
        """Drop the model's weights."""
        for name in ('unet', 'vae', 'prompt_embeds'):
            if hasattr(self, name):
                delattr(self, name)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
