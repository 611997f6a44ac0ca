"""Training of conditional diffusion/score models with MONAI's ``SupervisedTrainer``.

The trainer's iteration is ``pred = inferer(inputs, network, *args, **kwargs)`` and ``loss(pred, targets)``; the two
classes here fill those slots for any :py:class:`common.diffusion.Process`: :py:class:`DiffusionPrepareBatchd` draws
the noise and the training times and :py:class:`DiffusionTrainingInferer` perturbs the clean data and runs the
network, so the loss is just ``process.loss``. This mirrors MONAI's ``DiffusionPrepareBatch``/``DiffusionInferer``
pair, which is tied to a DDPM scheduler and cannot express the VE SDE.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.engines import PrepareBatch
from monai.inferers import Inferer

from common.diffusion.sde import Network, Process

__all__ = ["DiffusionPrepareBatchd", "DiffusionTrainingInferer"]


class DiffusionPrepareBatchd(PrepareBatch):
    """Prepare a batch dict for a diffusion training step: clean data, noise, training times and the condition.

    Returns ``(x0, target, (), {"noise", "t", "condition"})`` where ``target`` is what the process's prediction
    should equal (``process.training_target(noise)``).

    Args:
        process: the forward process.
        data_key: key of the clean data to diffuse (the SDF).
        condition_key: key of the conditioning image, or None for an unconditional model.
    """

    def __init__(self, process: Process, data_key: str = "sdf", condition_key: str | None = "image") -> None:
        self.process = process
        self.data_key = data_key
        self.condition_key = condition_key

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple, dict[str, Any]]:
        for key in (self.data_key, self.condition_key):
            if key is not None and key not in batchdata:
                raise KeyError(f"the training batch has no key '{key}' (keys: {sorted(batchdata)}).")
        x0 = torch.as_tensor(batchdata[self.data_key]).to(device=device, non_blocking=non_blocking)
        condition = None
        if self.condition_key is not None:
            condition = torch.as_tensor(batchdata[self.condition_key]).to(device=device, non_blocking=non_blocking)
        noise = torch.randn_like(x0)
        t = self.process.sample_times(x0.shape[0], device=x0.device)
        return x0, self.process.training_target(noise), (), {"noise": noise, "t": t, "condition": condition}


class DiffusionTrainingInferer(Inferer):
    """Perturb the clean data and return the network's prediction in the units of the process's loss."""

    def __init__(self, process: Process) -> None:
        super().__init__()
        self.process = process

    def __call__(  # type: ignore[override]
        self,
        inputs: torch.Tensor,
        network: Network,
        noise: torch.Tensor,
        t: torch.Tensor,
        condition: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.process.training_prediction(network, inputs, noise, t, condition)
