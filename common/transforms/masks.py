"""Checks and corruptions of segmentation masks as bundles load them."""

from __future__ import annotations

import os
import zlib
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable, RandomizableTransform, Transform
from monai.utils import convert_to_dst_type

__all__ = [
    "CorruptMaskd",
    "EnsureBinaryMask",
    "EnsureBinaryMaskd",
    "EnsureLabelMap",
    "EnsureLabelMapd",
    "SoftMasksToLabeld",
    "source_name",
]


def source_name(img: Any, default: str = "mask") -> str:
    """Return the file a loaded image came from (MONAI metadata ``filename_or_obj``), or ``default``."""
    if isinstance(img, MetaTensor):
        name = img.meta.get("filename_or_obj")
        if name:
            return str(name)
    return default


class EnsureBinaryMask(Transform):
    """Check that a loaded mask is binary with the expected channels; return it as float 0/1.

    Accepted values are {0, 1}, {0, 255} (8-bit PNG masks) or booleans. A grey mask stored with several identical
    channels (an RGB PNG of a binary mask) is reduced to one channel. Anything else is an error naming the file, so a
    probability map or a label map never passes silently as a mask.

    Args:
        num_channels: channels the mask must have after reduction.
        allow_empty: accept masks without foreground (for segmenter outputs); otherwise an empty mask is an error.
    """

    def __init__(self, num_channels: int = 1, allow_empty: bool = False) -> None:
        self.num_channels = num_channels
        self.allow_empty = allow_empty

    def __call__(self, img: Any, name: str | None = None) -> Any:
        """Check ``img``; ``name`` (default: the file it was loaded from) is what error messages call it."""
        name = name or f"mask '{source_name(img)}'"
        arr = np.asarray(img.detach().cpu() if isinstance(img, torch.Tensor) else img)
        if arr.ndim < 2:
            raise ValueError(f"{name}: expected a channel-first array (C, H, W[, D]), got shape {arr.shape}.")
        if arr.shape[0] > self.num_channels and self.num_channels == 1 and np.all(arr == arr[:1]):
            arr, img = arr[:1], img[:1]
        if arr.shape[0] != self.num_channels:
            raise ValueError(
                f"{name}: expected {self.num_channels} channel(s), got {arr.shape[0]} (shape {arr.shape})."
            )
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name}: contains NaN or infinite values; expected a binary mask.")
        values = np.unique(arr)
        if set(values.tolist()) <= {0, 1}:
            binary = arr > 0
        elif set(values.tolist()) <= {0, 255}:
            binary = arr == 255
        else:
            shown = ", ".join(f"{v:g}" for v in values[:8]) + (", ..." if len(values) > 8 else "")
            raise ValueError(
                f"{name}: expected a binary mask with values {{0, 1}} or {{0, 255}}, found values {shown}."
            )
        if not self.allow_empty and not binary.any():
            raise ValueError(f"{name}: the mask is empty (no foreground pixel); expected at least one.")
        out, *_ = convert_to_dst_type(binary.astype(np.float32), img, dtype=torch.float32)
        return out


class EnsureBinaryMaskd(MapTransform):
    """Dictionary version of :class:`EnsureBinaryMask`; error messages name the file each mask was loaded from."""

    def __init__(
        self, keys: KeysCollection, num_channels: int = 1, allow_empty: bool = False, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.check = EnsureBinaryMask(num_channels=num_channels, allow_empty=allow_empty)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.check(d[key], name=f"mask '{source_name(d[key], default=str(key))}' (key '{key}')")
        return d


class EnsureLabelMap(Transform):
    """Check a loaded one-channel label map of ``num_classes`` foreground classes; return it as float 0 .. C.

    With ``num_classes == 1`` it is :class:`EnsureBinaryMask` (values {0, 1} or {0, 255}); with more, every value
    must be an integer in 0 .. ``num_classes``. Anything else is an error naming the file and the key
    ``num_classes``.
    """

    def __init__(self, num_classes: int = 1, allow_empty: bool = True) -> None:
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
        self.num_classes = int(num_classes)
        self.binary = EnsureBinaryMask(num_channels=1, allow_empty=allow_empty)
        self.allow_empty = allow_empty

    def __call__(self, img: Any, name: str | None = None) -> Any:
        name = name or f"label '{source_name(img)}'"
        if self.num_classes == 1:
            return self.binary(img, name=name)
        arr = np.asarray(img.detach().cpu() if isinstance(img, torch.Tensor) else img)
        if arr.ndim < 3 or arr.shape[0] != 1:
            raise ValueError(f"{name}: expected a one-channel label map (1, H, W[, D]), got shape {arr.shape}.")
        values = np.unique(arr)
        bad = values[~np.isfinite(values) | (values != np.round(values)) | (values < 0) | (values > self.num_classes)]
        if bad.size:
            shown = ", ".join(f"{v:g}" for v in bad[:8]) + (", ..." if bad.size > 8 else "")
            raise ValueError(
                f"{name}: expected integer labels 0 .. {self.num_classes} (config key 'num_classes'), found {shown}."
            )
        if not self.allow_empty and not np.any(arr):
            raise ValueError(f"{name}: the label map is empty (no foreground pixel); expected at least one.")
        out, *_ = convert_to_dst_type(arr.astype(np.float32), img, dtype=torch.float32)
        return out


class EnsureLabelMapd(MapTransform):
    """Dictionary version of :class:`EnsureLabelMap`; error messages name the file and the key."""

    def __init__(
        self, keys: KeysCollection, num_classes: int = 1, allow_empty: bool = True, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.check = EnsureLabelMap(num_classes=num_classes, allow_empty=allow_empty)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.check(d[key], name=f"label '{source_name(d[key], default=str(key))}' (key '{key}')")
        return d


class SoftMasksToLabeld(MapTransform):
    """Soft class masks ``(C, H, W)`` in [0, 1] -> label map ``(1, H, W)``: the most likely class above ``threshold``.

    With one class this is thresholding; with several, a pixel takes the class of its largest soft mask if that
    exceeds ``threshold`` and is background (0) otherwise.
    """

    def __init__(self, keys: KeysCollection, threshold: float = 0.5) -> None:
        super().__init__(keys)
        self.threshold = float(threshold)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            soft = d[key]
            best, index = torch.as_tensor(soft).max(dim=0, keepdim=True)
            label = torch.where(best > self.threshold, index + 1, torch.zeros_like(index)).float()
            d[key], *_ = convert_to_dst_type(label, soft, dtype=torch.float32)
        return d


class CorruptMaskd(RandomizableTransform, MapTransform):
    """Dictionary version of the mask corruptions: apply ``corruption`` (any transform of
    ``common.transforms.corruption``, e.g. the composite :class:`RandMaskCorruption`) to the masks in ``keys``.

    With ``fixed_seed`` set, each mask is corrupted the same way every time it is seen: the random state is re-seeded
    from ``fixed_seed`` and the mask's file name, so validation and evaluation inputs do not change between epochs or
    runs. Without it, every call draws a new corruption (training).

    Args:
        keys: keys of the masks to corrupt.
        corruption: a randomizable array transform mapping a binary mask to a corrupted one.
        fixed_seed: seed of the per-file corruption, or None for a fresh corruption at every call.
    """

    def __init__(self, keys: KeysCollection, corruption: Randomizable, fixed_seed: int | None = None) -> None:
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob=1.0)
        if not isinstance(corruption, Randomizable):
            raise TypeError(f"corruption must be a randomizable transform, got {type(corruption).__name__}.")
        self.corruption = corruption
        self.fixed_seed = fixed_seed

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> CorruptMaskd:
        super().set_random_state(seed, state)
        self.corruption.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            if self.fixed_seed is not None:
                name = os.path.basename(source_name(d[key], default=str(key)))
                self.corruption.set_random_state(seed=zlib.crc32(f"{self.fixed_seed}:{name}".encode()))
            d[key] = self.corruption(d[key])
        return d
