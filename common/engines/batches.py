"""Batches for the training step without MONAI's metadata tracking."""

from __future__ import annotations

from typing import Any

import torch
from monai.data import MetaTensor
from monai.engines import PrepareBatch, default_prepare_batch

__all__ = ["PlainTensorBatch"]


class PlainTensorBatch(PrepareBatch):
    """``prepare_batch`` of a supervised trainer: the batch's image and label as plain tensors, not MetaTensors.

    Every operation on a MetaTensor also carries its metadata along (``__torch_function__``), in the forward and
    in the backward pass. Nothing in a training step reads that metadata, and for a small network on large images
    the bookkeeping is a large part of the step: Post-DAE's step at 512x512 and batch 8 took 2.5-2.7 s on
    MetaTensors against 1.7 s on plain tensors (2 CPU cores). Validation and inference keep their MetaTensors, which
    their writers need.
    """

    def __call__(
        self,
        batchdata: dict[str, torch.Tensor],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        image, label = default_prepare_batch(batchdata, device, non_blocking, **kwargs)
        return _plain(image), _plain(label)


def _plain(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return tensor.as_tensor() if isinstance(tensor, MetaTensor) else tensor
