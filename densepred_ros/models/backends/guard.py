"""Guards on the outputs of reduced-precision components: blame, switch, never pass NaN on.

fp16 UNets and VAE decoders can overflow to inf/NaN. A guard checks its component's
output; when the output is non-finite although the inputs were finite, the component is
to blame: the guard logs it and switches for good to a safe runner (e.g. an fp32 copy).
When the inputs were already non-finite, an earlier component is to blame and the guard
raises `NonFiniteError` without switching.
"""

from dataclasses import dataclass, field
import logging
from typing import Callable, Optional, Sequence

from densepred_ros.models.backends.chain import LOG, Runner
import torch


class NonFiniteError(FloatingPointError):
    """A component's output is not finite and no safe runner could replace it.

    Attributes:
        component: the component to blame.
    """

    def __init__(self, component: str, message: str) -> None:
        super().__init__(message)
        self.component = component


def count_non_finite(tensors: Sequence[torch.Tensor]) -> int:
    """Return the number of inf/NaN values in floating-point tensors."""
    return sum(int((~torch.isfinite(t)).sum()) for t in tensors if t.is_floating_point())


@dataclass
class FiniteGuard:
    """Run `primary`; when its output goes non-finite from finite inputs, switch to `fallback`.

    Attributes:
        primary: the fast runner.
        fallback: a factory returning the safe runner (called once, when first needed);
            None when there is none (then a non-finite output raises NonFiniteError).
        name: the component, for the log and the errors.
        tripped: True once the primary was blamed and replaced.
    """

    primary: Runner
    fallback: Optional[Callable[[], Runner]]
    name: str = 'vae_decoder'
    log: logging.Logger = LOG
    tripped: bool = False
    _safe: Optional[Runner] = field(default=None, repr=False)

    def __call__(self, *tensors: torch.Tensor) -> torch.Tensor:
        """Run the primary runner, or the safe one once the primary was blamed."""
        if not self.tripped:
            out = self.primary(*tensors)
            bad = count_non_finite([out])
            if bad == 0:
                return out
            upstream = count_non_finite(tensors)
            if upstream:
                raise NonFiniteError(
                    'upstream', f'{self.name} received {upstream} non-finite input values: '
                    'an earlier component is to blame (no switch)')
            if self.fallback is None:
                raise NonFiniteError(self.name, f'{self.name} produced {bad} non-finite '
                                     'values from finite inputs and has no fp32 fallback')
            self.tripped = True
            self.log.warning('%s produced %d non-finite values from finite inputs (fp16 '
                             'overflow?); it is to blame: switching to its fp32 fallback '
                             'for good', self.name, bad)
        if self._safe is None:
            self._safe = self.fallback()
        out = self._safe(*tensors)
        bad = count_non_finite([out])
        if bad:
            raise NonFiniteError(self.name, f'{self.name} produced {bad} non-finite values '
                                 'also with its fp32 fallback')
        return out
