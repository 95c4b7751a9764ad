"""The fallback chain: which backend runs a component, and why the others did not.

Each component asks for a backend ('torch', 'onnxruntime' or 'tensorrt'); when it cannot
be had, the next one of the chain tensorrt → onnxruntime → torch (CUDA, then CPU) is tried
and the choice and its reason are logged.
"""

from dataclasses import dataclass
import logging
from typing import Callable, Dict, List, Tuple

from densepred_ros.models.base import BACKENDS, BackendUnavailable
import torch

LOG = logging.getLogger('densepred_ros.backends')

#: A component runner: float32 tensors in, one float32 tensor out.
Runner = Callable[..., torch.Tensor]
#: backend factory: f(component, device type) → (runner, detail for the log).
Factory = Callable[[str, str], Tuple[Runner, str]]


def fallback_chain(requested: str, device: torch.device) -> List[Tuple[str, str]]:
    """Return the (backend, device type) pairs to try in order for a requested backend.

    tensorrt → onnxruntime (CUDA) → torch (CUDA) → torch (CPU); onnxruntime → torch;
    torch → torch on its device then the CPU. CUDA entries appear only when `device`
    is a CUDA device.
    """
    if requested not in BACKENDS:
        raise ValueError(f'backend must be one of {BACKENDS}, got {requested!r}')
    cuda = device.type == 'cuda'
    if requested == 'tensorrt':
        chain = [('tensorrt', 'cuda'), ('onnxruntime', 'cuda'), ('torch', 'cuda')] if cuda \
            else [('tensorrt', 'cuda')]
    elif requested == 'onnxruntime':
        chain = [('onnxruntime', device.type)] + ([('torch', 'cuda')] if cuda else [])
    else:
        chain = [('torch', device.type)]
    if ('torch', 'cpu') not in chain:
        chain.append(('torch', 'cpu'))
    return chain


@dataclass(frozen=True)
class Choice:
    """What runs a component, and why the earlier candidates of its chain were passed over.

    Attributes:
        component: 'vae_encoder', 'unet' or 'vae_decoder'.
        requested: the backend asked for.
        backend, device: what runs it ('torch'/'onnxruntime'/'tensorrt', 'cpu'/'cuda').
        detail: e.g. the ONNX Runtime providers or the engine file.
        skipped: one 'backend/device: reason' line per candidate that failed.
    """

    component: str
    requested: str
    backend: str
    device: str
    detail: str = ''
    skipped: Tuple[str, ...] = ()

    def describe(self) -> str:
        """Return a one-line human summary for the log."""
        text = f'{self.component}: {self.backend} on {self.device}'
        if self.detail:
            text += f' ({self.detail})'
        if self.skipped:
            text += f'; requested {self.requested}, fell back because ' + '; '.join(self.skipped)
        return text


def choose(component: str, requested: str, device: torch.device,
           factories: Dict[str, Factory], log: logging.Logger = LOG) -> Tuple[Runner, Choice]:
    """Open `component` on the first backend of its fallback chain that works.

    Args:
        component: the component name.
        requested: the backend asked for.
        device: the predictor's torch device (decides whether CUDA entries are tried).
        factories: backend → f(component, device_type) returning (runner, detail) or
            raising BackendUnavailable (any other exception is also caught and logged).
        log: where the choice is logged (warning when it fell back, info otherwise).

    Raises:
        BackendUnavailable: no entry of the chain worked (the reasons are in the message).
    """
    skipped = []
    for backend, dev in fallback_chain(requested, device):
        factory = factories.get(backend)
        if factory is None:
            skipped.append(f'{backend}/{dev}: not offered')
            continue
        try:
            runner, detail = factory(component, dev)
        except Exception as exc:  # any failure of an optional backend means "try the next"
            skipped.append(f'{backend}/{dev}: {type(exc).__name__}: {exc}')
            continue
        choice = Choice(component, requested, backend, dev, detail, tuple(skipped))
        (log.warning if skipped else log.info)(choice.describe())
        return runner, choice
    raise BackendUnavailable(f'no backend can run {component}: ' + '; '.join(skipped))
