"""The Lotus components as torch modules with float32 I/O (what runs and what is exported).

- vae_encoder(image 1×3×H×W in [-1, 1]) → moments 1×8×H/8×W/8;
- unet(sample, timestep [1], encoder_hidden_states 1×T×D, class_labels 1×4) → x0 1×4×h×w;
- vae_decoder(x0 1×4×h×w) → decoded 1×3×H×W in about [-1, 1].
"""

import torch
from torch import nn


class VaeEncoderModule(nn.Module):
    """Image 1×3×H×W in [-1, 1] → posterior moments 1×2C×H/8×W/8 (mean, log-variance).

    I/O is float32; the wrapped VAE may be float16/bfloat16 (inputs are cast to it).
    """

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae
        self.dtype = next(vae.parameters()).dtype

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Return the moments (float32)."""
        moments = self.vae.encode(image.to(self.dtype)).latent_dist.parameters
        return moments.float()


class UNetModule(nn.Module):
    """One Lotus UNet call: (sample, timestep, prompt embedding, task label) → x0.

    Args of forward: sample 1×C×h×w, timestep [1] (999 for Lotus), encoder_hidden_states
    1×T×D, class_labels 1×4; all float32. Returns 1×4×h×w float32.
    """

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet
        self.dtype = next(unet.parameters()).dtype

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor,
                encoder_hidden_states: torch.Tensor,
                class_labels: torch.Tensor) -> torch.Tensor:
        """Return the predicted annotation latent (float32)."""
        out = self.unet(sample.to(self.dtype), timestep,
                        encoder_hidden_states=encoder_hidden_states.to(self.dtype),
                        class_labels=class_labels.to(self.dtype), return_dict=False)[0]
        return out.float()


class VaeDecoderModule(nn.Module):
    """Scaled latent 1×C×h×w (the UNet's x0) → decoded image 1×3×8h×8w in about [-1, 1]."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae
        self.scaling_factor = float(vae.config.scaling_factor)
        self.dtype = next(vae.parameters()).dtype

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """Return the decoded image (float32)."""
        latent = latent.to(self.dtype) / self.scaling_factor
        return self.vae.decode(latent, return_dict=False)[0].float()


#: component name → its wrapper class.
MODULES = {'vae_encoder': VaeEncoderModule, 'unet': UNetModule,
           'vae_decoder': VaeDecoderModule}
