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

import copy
import os
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from densepred_ros.models import backends, runtime
from densepred_ros.models.base import (
    CheckpointError, COMPONENTS, ModelSpec, NORMALS, parse_backend_spec,
    parse_precision_spec, Prediction, PredictorOptions)
from densepred_ros.models.checkpoint import default_resolution, weights_fingerprint
from densepred_ros.models.components import MODULES
from densepred_ros.models.export_format import read_metadata
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

        device, dtype = self._check_options(options)
        safetensors = not allow_pickle
        try:
            # The prompt never changes: embed it once and drop the text encoder (~1.4 GB
            # fp32) before the UNet is loaded, which keeps the load peak low.
            tokenizer = CLIPTokenizer.from_pretrained(path, subfolder='tokenizer')
            text_encoder = CLIPTextModel.from_pretrained(
                path, subfolder='text_encoder', use_safetensors=safetensors)
            prompt_embeds = encode_empty_prompt(tokenizer, text_encoder)
            del text_encoder, tokenizer
            # Loading in the compute dtype casts tensor by tensor: no fp32 copy of the UNet.
            unet = UNet2DConditionModel.from_pretrained(
                path, subfolder='unet', use_safetensors=safetensors, torch_dtype=dtype)
            vae = AutoencoderKL.from_pretrained(
                path, subfolder='vae', use_safetensors=safetensors, torch_dtype=dtype)
            scheduler = DDIMScheduler.from_pretrained(path, subfolder='scheduler')
        except (OSError, ValueError, KeyError) as exc:
            raise CheckpointError(f'cannot load Lotus components from {path}: {exc}') from exc
        self.weights_fingerprint = weights_fingerprint(path)
        self._checkpoint: Optional[Path] = Path(path)   # to reload an fp32 UNet if needed
        self._safetensors = safetensors
        self._setup(unet, vae, scheduler, prompt_embeds, space, options, device, dtype,
                    source or str(path), default_resolution(path), str(path))

    @classmethod
    def from_modules(cls, unet, vae, scheduler, prompt_embeds: torch.Tensor, space: str,
                     options: PredictorOptions, source: str = 'in-memory modules',
                     default_processing_resolution: int = 768) -> 'LotusPredictor':
        """Build a predictor from diffusers modules already in memory (benchmarks, tests).

        Args:
            unet, vae, scheduler: UNet2DConditionModel, AutoencoderKL, DDIMScheduler.
            prompt_embeds: 1×T×D empty-prompt embedding (see `encode_empty_prompt`).
            space: 'depth', 'disparity' or 'normals'.
            options: run-time options; the modules are moved to its device and dtype.
        """
        self = cls.__new__(cls)
        device, dtype = self._check_options(options)
        self.weights_fingerprint = ''
        self._checkpoint, self._safetensors = None, True
        self._setup(unet, vae, scheduler, prompt_embeds, space, options, device, dtype,
                    source, default_processing_resolution, source)
        return self

    def _check_options(self, options: PredictorOptions) -> Tuple[torch.device, torch.dtype]:
        # The options checked themselves; what remains depends on this machine.
        device = runtime.resolve_device(options.device)
        return device, runtime.resolve_dtype(runtime.resolve_auto_dtype(options.dtype, device))

    def _setup(self, unet, vae, scheduler, prompt_embeds: torch.Tensor, space: str,
               options: PredictorOptions, device: torch.device, dtype: torch.dtype,
               source: str, default_processing_resolution: int, where: str) -> None:
        self.options, self.device, self.dtype = options, device, dtype
        if options.threads > 0:
            torch.set_num_threads(options.threads)   # process-wide
        self.unet, self.vae, self.scheduler = unet, vae, scheduler
        in_channels = unet.config.in_channels
        latent_channels = vae.config.latent_channels
        if in_channels == 2 * latent_channels:
            variant = 'g'
        elif in_channels == latent_channels:
            variant = 'd'
        else:
            raise CheckpointError(
                f'{where}: UNet in_channels {in_channels} fits neither Lotus-G '
                f'({2 * latent_channels}) nor Lotus-D ({latent_channels})')
        if unet.config.class_embed_type != 'projection':
            raise CheckpointError(f'{where}: the UNet has no projection class embedding, '
                                  'so it is not a Lotus checkpoint')
        # float32: each component casts its inputs to its own dtype.
        self.prompt_embeds = prompt_embeds.to(self.device, torch.float32)
        self.task_emb = task_embedding(True).to(self.device, torch.float32)
        self.unet.to(self.device, self.dtype).eval()
        self.vae.to(self.device, self.dtype).eval()
        self.channels_last = use_channels_last(options.channels_last, self.device,
                                               options.dtype)
        if self.channels_last:
            self.unet.to(memory_format=torch.channels_last)
            self.vae.to(memory_format=torch.channels_last)
        self.unet_config = self.unet.config
        self.spec = ModelSpec(family='lotus', variant=variant, space=space,
                              default_processing_resolution=default_processing_resolution,
                              source=source)
        self.pad_multiple = VAE_MULTIPLE
        self.export_size: Optional[Tuple[int, int]] = None
        self.components, self.backend_choices = self._open_components(
            parse_backend_spec(options.backend))

    @property
    def processing_resolution(self) -> int:
        """Longest edge in pixels the model runs at (0 = native)."""
        if self.options.processing_resolution is None:
            return self.spec.default_processing_resolution
        return self.options.processing_resolution

    def _generator(self) -> torch.Generator:
        return torch.Generator('cpu').manual_seed(self.options.seed)

    def _open_components(self, requested: Dict[str, str]):
        """Open every component on its requested backend or the next one that works."""
        meta, folder = None, None
        if any(b != 'torch' for b in requested.values()):
            if not self.options.export_dir:
                raise ValueError(f'backend {self.options.backend!r} needs export_dir, the '
                                 'folder written by `densepred export`')
            folder = Path(os.path.expanduser(self.options.export_dir))
            meta = read_metadata(folder)
            if meta.get('variant') != self.spec.variant:
                raise ValueError(f'{folder} was exported from a Lotus-{meta.get("variant")} '
                                 f'checkpoint, this one is Lotus-{self.spec.variant}')
            if meta.get('space', self.spec.space) != self.spec.space:
                raise ValueError(f'{folder} was exported from a {meta["space"]} checkpoint '
                                 f'({meta.get("checkpoint")}), this one predicts '
                                 f'{self.spec.space}')
            exported = meta.get('weights', '')
            if exported and self.weights_fingerprint and exported != self.weights_fingerprint:
                raise ValueError(f'{folder} was exported from other weights '
                                 f'({meta.get("checkpoint")}) than {self.spec.source}; '
                                 'export this checkpoint again')
            self.pad_multiple = int(meta['pad_multiple'])
            self.export_size = (int(meta['height']), int(meta['width']))
        precisions = parse_precision_spec(self.options.engine_precision)
        factories = {'torch': self._torch_runner}
        if meta is not None:
            providers = [p.strip() for p in self.options.ort_providers.split(',') if p.strip()]
            cache = backends.EngineCache(self.options.engine_cache_dir
                                         or backends.DEFAULT_CACHE)
            factories['onnxruntime'] = lambda c, d: backends.open_onnxruntime(
                c, d, folder, meta, providers, self.options.threads, cache.root,
                device=self.device, precision=precisions[c])
            factories['tensorrt'] = lambda c, d: backends.open_tensorrt(
                c, d, folder, meta, precisions[c], cache, self.device,
                rebuild=self.options.rebuild_engines)
        if self.device.type == 'cuda' and 'tensorrt' in requested.values():
            # Engines are built with the torch copies off the device (Jetson: the GPU and
            # the CPU share memory); a torch runner chosen below moves its module back.
            self.unet.to('cpu')
            self.vae.to('cpu')
            torch.cuda.empty_cache()
        runners, choices = {}, {}
        for component in COMPONENTS:
            runners[component], choices[component] = backends.choose(
                component, requested[component], self.device, factories)
        for component in ('unet', 'vae_decoder'):
            if self._reduced_precision(choices[component], runners[component], meta,
                                       precisions[component]):
                runners[component] = backends.FiniteGuard(
                    runners[component], self._safe_factory(component), name=component)
        if choices['unet'].backend != 'torch':
            self.unet = None   # the torch UNet is not used: free its memory
        return runners, choices

    def _reduced_precision(self, choice, runner, meta: Optional[Dict],
                           precision: str) -> bool:
        """Return True when a component runs in fp16 (it may overflow: guard it)."""
        if choice.backend == 'tensorrt':
            return getattr(runner, 'precision', precision) == 'fp16'
        if choice.backend == 'onnxruntime':
            return (meta or {}).get('precision') == 'fp16' or (
                precision == 'fp16' and 'TensorrtExecutionProvider' in choice.detail)
        return self.dtype == torch.float16 and choice.device == self.device.type

    def _safe_factory(self, component: str) -> Callable[[], Callable]:
        """Return a factory of the fp32 torch runner that replaces an overflowing one."""
        def make() -> Callable:
            if component == 'unet' and self.unet is None:
                return self._reloaded_unet()
            return self._torch_runner(component, self.device.type, torch.float32)[0]
        return make

    def _reloaded_unet(self) -> Callable:
        """Load the UNet again in fp32 from the checkpoint (its torch copy was released)."""
        from diffusers import UNet2DConditionModel   # heavy optional library
        if self._checkpoint is None:
            raise backends.NonFiniteError(
                'unet', 'the unet produced non-finite values and no fp32 copy can be loaded '
                '(the predictor was built from modules in memory)')
        unet = UNet2DConditionModel.from_pretrained(
            self._checkpoint, subfolder='unet', use_safetensors=self._safetensors,
            torch_dtype=torch.float32).to(self.device).eval()
        wrapper = MODULES['unet'](unet)
        return lambda *tensors: wrapper(*[t.to(self.device) for t in tensors])

    def _torch_runner(self, component: str, device_type: str,
                      dtype: Optional[torch.dtype] = None) -> Tuple[Callable, str]:
        """Return a torch runner for a component on `device_type` (a copy if it differs)."""
        module = self.unet if component == 'unet' else self.vae
        if module is None:
            raise backends.BackendUnavailable(f'the torch {component} was released')
        device, channels_last = self.device, self.channels_last
        if device_type != self.device.type or (dtype is not None and dtype != self.dtype):
            device = self.device if device_type == self.device.type else torch.device('cpu')
            module = copy.deepcopy(module).to(device, dtype or torch.float32)
            module.to(memory_format=torch.contiguous_format)
            channels_last = False
        else:
            module.to(device)   # back on the device if it was moved off for an engine build
        wrapper = MODULES[component](module)

        def run(*tensors: torch.Tensor) -> torch.Tensor:
            tensors = [t.to(device) for t in tensors]
            if channels_last:
                tensors = [t.contiguous(memory_format=torch.channels_last) if t.ndim == 4
                           else t for t in tensors]
            return wrapper(*tensors)

        layout = ', channels_last' if channels_last else ''
        return run, f'{str(wrapper.dtype).replace("torch.", "")}{layout}'

    @torch.no_grad()
    def predict_latent(self, image: torch.Tensor) -> torch.Tensor:
        """Run the single step on N×3×H×W images in [-1, 1] (H, W multiples of 8).

        Each image of a batch gets the noise a batch of one would get (the same seeded
        draw), so a frame's result does not depend on its batch mates beyond the
        components' own rounding (see `batching_reason`).

        Returns:
            The N×C×H×W decoded annotations in [-1, 1], float32, on the model's device.
        """
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        image = image.to(self.device, torch.float32)
        # The glue between components runs in float32 whatever the components' dtype: the
        # same seed draws the same noise in every dtype, and an ONNX Runtime or TensorRT
        # component is not fed a value rounded to a torch dtype it does not use.
        moments = self.components['vae_encoder'](image).to(self.device, torch.float32)
        posterior = DiagonalGaussianDistribution(moments)                 # of N×2C×h×w
        count = image.shape[0]
        if self.options.latent == 'sample':
            # The authors draw the posterior sample from torch's global RNG seeded with
            # the run's seed; a fresh generator seeded alike gives the same draw.
            noise = self._noise(posterior.mean.shape)
            rgb_latent = posterior.mean + posterior.std * noise
        else:
            rgb_latent = posterior.mean
        rgb_latent = rgb_latent * self.vae.config.scaling_factor          # N×4×h×w

        timestep = torch.tensor(TIMESTEP, device=self.device, dtype=torch.long)
        if self.spec.variant == 'g':
            noise = self._noise(rgb_latent.shape)
            noise = self.scheduler.scale_model_input(
                noise * self.scheduler.init_noise_sigma, timestep)
            unet_input = torch.cat([rgb_latent, noise], dim=1)          # N×8×h×w
        else:
            unet_input = rgb_latent                                       # N×4×h×w
        x0 = self.components['unet'](
            unet_input.float(), timestep.float().reshape(1).expand(count),
            self.prompt_embeds.expand(count, -1, -1),
            self.task_emb.expand(count, -1))                              # N×4×h×w
        decoded = self.components['vae_decoder'](x0)                      # N×3×H×W
        return decoded.to(self.device, torch.float32)

    def _noise(self, shape: Tuple[int, ...]) -> torch.Tensor:
        """Return the seeded N×... noise: one draw of a batch of one, repeated N times."""
        from diffusers.utils.torch_utils import randn_tensor

        one = randn_tensor((1, *shape[1:]), generator=self._generator(),
                           device=self.device, dtype=torch.float32)
        return one.expand(shape[0], *shape[1:]).contiguous()

    @torch.no_grad()
    def predict(self, rgb: np.ndarray, keep_tensor: bool = False) -> Prediction:
        """Predict depth, disparity or normals for one image.

        Args:
            rgb: H×W×3 uint8 RGB image.
            keep_tensor: also hand out the values as a float32 tensor on this predictor's
                device (`Prediction.tensor`): the same memory on the CPU, one upload of
                the host values on CUDA, so `values` stay exactly those without it.

        Returns:
            A Prediction at H×W: depth/disparity in [0, 1] (float32), or unit normals in
            the camera optical frame.
        """
        return self.predict_batch([rgb], keep_tensor)[0]

    @property
    def batching_reason(self) -> str:
        """Return '' when `predict_batch` runs a group as one batch, else why it loops.

        The torch components take any batch size; an ONNX Runtime or TensorRT component
        was exported for a batch of one (`densepred export`), so such a model runs the
        frames of a batch one after another.
        """
        fixed = [f'{c.component} on {c.backend}' for c in self.backend_choices.values()
                 if c.backend != 'torch']
        if fixed:
            return (f'{", ".join(fixed)} exported with a batch dimension of 1: one frame '
                    'at a time')
        return ''

    @property
    def concurrency_reason(self) -> str:
        """Return '' when several threads may call `predict_batch` at once, else why not.

        The torch modules only read their weights, and an ONNX Runtime session may be run
        from several threads; a TensorRT engine has one execution context.
        """
        engines = [c.component for c in self.backend_choices.values()
                   if c.backend == 'tensorrt']
        if engines:
            return f'{", ".join(engines)} on TensorRT: one execution context, one call at a time'
        return ''

    @torch.no_grad()
    def predict_batch(self, images: Sequence[np.ndarray],
                      keep_tensor: bool = False) -> List[Prediction]:
        """Predict for several images, one model call per processing size.

        Images processed at the same (padded) size run as one batch through the torch
        components; images of other sizes form batches of their own; with a component
        that takes only a batch of one (`batching_reason`) every image runs alone.

        Args:
            images: H×W×3 uint8 RGB images (sizes may differ).
            keep_tensor: see `predict`.

        Returns:
            One Prediction per image, in order (see `predict`).
        """
        prepared = [self._prepare(rgb) for rgb in images]
        one_at_a_time = bool(self.batching_reason)
        groups: Dict[Tuple[int, ...], List[int]] = {}
        for index, (padded, _, _) in enumerate(prepared):
            key = (index,) if one_at_a_time else tuple(padded.shape)
            groups.setdefault(key, []).append(index)
        out: List[Optional[Prediction]] = [None] * len(prepared)
        for indices in groups.values():
            decoded = self.predict_latent(torch.cat([prepared[i][0] for i in indices]))
            for row, index in enumerate(indices):
                _, size, shape = prepared[index]
                out[index] = self._finish(decoded[row:row + 1], size, shape, keep_tensor)
        return out

    def _prepare(self, rgb: np.ndarray) -> Tuple[torch.Tensor, Tuple[int, int],
                                                 Tuple[int, int]]:
        """Return (1×3×H'×W' padded model input, processing size, input size)."""
        runtime.check_rgb(rgb)
        height, width = rgb.shape[:2]
        image = runtime.rgb_to_tensor(rgb)                                # 1×3×H×W
        size = runtime.processing_size(height, width, self.processing_resolution)
        image = runtime.resize(image, size)
        if self.export_size is not None and tuple(size) != self.export_size:
            raise ValueError(
                f'the {width}×{height} image is processed at {size[1]}×{size[0]}, but the '
                f'{self.options.backend} components were exported for '
                f'{self.export_size[1]}×{self.export_size[0]} (export_dir '
                f'{self.options.export_dir}); export for this size or change the '
                'processing resolution')
        return runtime.pad_to_multiple(image, self.pad_multiple), size, (height, width)

    def _finish(self, decoded: torch.Tensor, size: Tuple[int, int],
                shape: Tuple[int, int], keep_tensor: bool) -> Prediction:
        """Turn one 1×3×H'×W' decoded annotation into the Prediction at the input size."""
        decoded = decoded[:, :, :size[0], :size[1]]
        annotation = (decoded / 2.0 + 0.5).clamp(0.0, 1.0)                 # 1×3×h×w
        annotation = runtime.resize(annotation.cpu(), shape)
        values = annotation[0].permute(1, 2, 0).numpy()                   # H×W×3
        if self.spec.space == NORMALS:
            normals = runtime.unit_normals(values * 2.0 - 1.0)
            prediction = Prediction(NORMALS, runtime.model_normals_to_optical(normals))
        else:
            prediction = Prediction(self.spec.space, values.mean(axis=-1).astype(np.float32))
        if not keep_tensor:
            return prediction
        tensor = torch.from_numpy(np.ascontiguousarray(prediction.values)).to(self.device)
        return Prediction(prediction.space, prediction.values, tensor=tensor)

    def close(self) -> None:
        """Drop the model's weights."""
        for name in ('unet', 'vae', 'prompt_embeds', 'components'):
            if hasattr(self, name):
                delattr(self, name)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def use_channels_last(requested: Optional[bool], device: torch.device,
                      dtype_option: str) -> bool:
    """Decide the torch memory layout: the request, else channels-last on the CPU in 'auto'.

    Channels-last convolutions were measured faster on the CPU (VAE decoder 1.1-1.6× in
    fp32) but round differently (about 1e-5), so an explicit 'fp32' keeps the NCHW layout
    and stays bit-identical to the reference pipeline.
    """
    if requested is not None:
        return bool(requested)
    return device.type == 'cpu' and dtype_option in ('auto', 'bf16')
