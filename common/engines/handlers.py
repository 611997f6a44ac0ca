"""Small ignite handlers that MONAI does not have."""

from __future__ import annotations

from typing import Any

import torch
from ignite.engine import Engine
from monai.engines.utils import IterationEvents

__all__ = ["ClipGradNorm", "iteration_loss"]


class ClipGradNorm:
    """Clip the gradient norm of a MONAI trainer's network between its backward pass and its optimizer step.

    Args:
        max_norm: largest allowed total gradient norm (``torch.nn.utils.clip_grad_norm_``); 0 disables clipping.
    """

    def __init__(self, max_norm: float) -> None:
        if max_norm < 0:
            raise ValueError(f"max_norm must be >= 0, got {max_norm}.")
        self.max_norm = float(max_norm)

    def attach(self, engine: Engine) -> None:
        if self.max_norm > 0:
            engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if getattr(engine, "amp", False) and getattr(engine, "scaler", None) is not None:
            engine.scaler.unscale_(engine.optimizer)
        torch.nn.utils.clip_grad_norm_(engine.network.parameters(), self.max_norm)


def iteration_loss(output: Any) -> torch.Tensor | dict[str, torch.Tensor]:
    """The loss of a trainer iteration's output, whether the batch was decollated (a list of dicts) or not (a dict).

    For ignite metrics and handlers that need one number per iteration (an epoch's mean loss for a plateau
    scheduler, for instance). A trainer with several losses (a dict of named terms, as a GAN trainer's) gives the
    dict, which MONAI's stats handlers log term by term.
    """
    first = output[0] if isinstance(output, (list, tuple)) else output
    loss = first["loss"]
    if isinstance(loss, dict):
        return {name: torch.as_tensor(value).detach() for name, value in loss.items()}
    return torch.as_tensor(loss).detach()
