"""A runner wrapper that switches to a safe runner for good when outputs stop being finite."""

from dataclasses import dataclass, field
import logging
from typing import Callable, Optional

from densepred_ros.models.backends.chain import LOG, Runner
import torch


@dataclass
class FiniteGuard:
    """Run `primary`; on any non-finite output switch for good to `fallback()` and log it.

    fp16 VAE decoders can overflow to inf/NaN; the fallback (e.g. an fp32 decoder) is
    created only when first needed.

    Attributes:
        primary: the fast runner.
        fallback: a factory returning the safe runner.
        name: for the log.
    """

    primary: Runner
    fallback: Callable[[], Runner]
    name: str = 'vae_decoder'
    log: logging.Logger = LOG
    tripped: bool = False
    _safe: Optional[Runner] = field(default=None, repr=False)

    def __call__(self, *tensors: torch.Tensor) -> torch.Tensor:
        """Run the primary runner, or the fallback once the primary has overflowed."""
        if not self.tripped:
            out = self.primary(*tensors)
            if torch.isfinite(out).all():
                return out
            self.tripped = True
            bad = int((~torch.isfinite(out)).sum())
            self.log.warning('%s produced %d non-finite values (fp16 overflow?); switching '
                             'to the fp32 fallback for good', self.name, bad)
        if self._safe is None:
            self._safe = self.fallback()
        return self._safe(*tensors)
