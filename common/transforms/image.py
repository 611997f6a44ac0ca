"""Checks and conversions of loaded images: channel count (RGB to grey), finite values, minimum size, matching grids.

Both name the file an image came from in their errors, so a wrong input is reported where the user can fix it.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from common.transforms.masks import source_name

__all__ = ["EnsureChannelsd", "EnsureFinited", "EnsureMinSized", "EnsureSameSpatialShaped"]

#: ITU-R BT.601 luma weights, what OpenCV's grey-scale reading (``cv2.imread(path, 0)``) uses.
_LUMA = (0.299, 0.587, 0.114)


def _describe(data: Mapping[Hashable, Any], key: Hashable) -> str:
    return f"image '{source_name(data[key], default=str(key))}' (key '{key}')"


class EnsureChannelsd(MapTransform):
    """Give channel-first images exactly ``channels`` channels, converting RGB(A) to grey when one is asked for.

    Accepted: an image that already has ``channels`` channels; RGB (3) or RGBA (4, alpha dropped) when
    ``channels == 1`` (converted with BT.601 luma weights, as reading with OpenCV in grey scale does); grey
    (repeated, as PIL's ``convert("RGB")``) or RGBA (alpha dropped) when ``channels == 3``. Other channel counts
    (multi-contrast MR: 4) are only checked. Anything else is a ``ValueError`` naming the file and the config key.

    Args:
        keys: keys of the images.
        channels: channels wanted.
        config_key: the config key that sets ``channels``, named in errors.
    """

    def __init__(self, keys: KeysCollection, channels: int, config_key: str = "image_channels") -> None:
        super().__init__(keys)
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"{config_key} must be an int >= 1, got {channels!r}.")
        self.channels = channels
        self.config_key = config_key

    def _convert(self, img: Any) -> Any:
        have = img.shape[0]
        if have == self.channels:
            return img
        if self.channels not in (1, 3):
            return None
        if have == 4:
            img = img[:3]
        if img.shape[0] == 1 and self.channels == 3:
            return img.repeat(3, *([1] * (img.ndim - 1)))
        if img.shape[0] == 3 and self.channels == 1:
            weights = torch.as_tensor(_LUMA, dtype=torch.float32).reshape(3, *([1] * (img.ndim - 1)))
            return (torch.as_tensor(img).float() * weights).sum(dim=0, keepdim=True)
        return img if img.shape[0] == self.channels else None

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            converted = self._convert(d[key])
            if converted is None:
                raise ValueError(
                    f"{_describe(d, key)} has {d[key].shape[0]} channel(s); expected {self.channels} "
                    f"(config key '{self.config_key}'), or RGB/RGBA to convert."
                )
            d[key] = converted
        return d


class EnsureFinited(MapTransform):
    """Raise a ``ValueError`` naming the file when an image holds NaN or infinite values.

    Intensity scaling keeps NaN and turns infinity into NaN, so one such voxel would otherwise give a NaN loss or a
    silently empty prediction.
    """

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            values = torch.as_tensor(d[key])
            if values.is_floating_point():
                bad = int((~torch.isfinite(values)).sum())
                if bad:
                    raise ValueError(
                        f"{_describe(d, key)} has {bad} NaN or infinite value(s); expected finite intensities "
                        "(fix or mask them in the file, e.g. replace NaN by the background value)."
                    )
        return d


class EnsureMinSized(MapTransform):
    """Raise a ``ValueError`` naming the file unless every spatial size of the images is at least ``min_size``.

    Args:
        keys: keys of channel-first images.
        min_size: smallest accepted spatial size, one value or one per dimension.
        config_key: the config key that sets ``min_size``, named in errors.
    """

    def __init__(self, keys: KeysCollection, min_size: Sequence[int] | int, config_key: str = "patch_size") -> None:
        super().__init__(keys)
        self.min_size = min_size
        self.config_key = config_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            spatial = list(d[key].shape[1:])
            minimum = [self.min_size] * len(spatial) if isinstance(self.min_size, int) else list(self.min_size)
            if len(minimum) != len(spatial):
                raise ValueError(
                    f"{_describe(d, key)} has {len(spatial)} spatial dimensions, expected {len(minimum)} "
                    f"(spatial size {spatial})."
                )
            if any(s < m for s, m in zip(spatial, minimum, strict=True)):
                raise ValueError(
                    f"{_describe(d, key)} has spatial size {spatial}, smaller than {minimum} "
                    f"(config key '{self.config_key}'); use larger images or a smaller {self.config_key}."
                )
        return d


class EnsureSameSpatialShaped(MapTransform):
    """Raise a ``ValueError`` naming both files unless the images of ``keys`` share one grid: spatial shape and affine.

    A label map that does not belong to its image (another slice, another crop, another scan's geometry) would
    otherwise be resized onto the image and train a silently wrong pairing. Affines are compared when both images
    carry one (loaded files do); they must agree within ``atol`` (millimetres for NIfTI, pixels for PNG).

    Args:
        keys: keys of channel-first images that must share their grid (the first is the reference).
        atol: largest accepted difference between affine entries.
    """

    def __init__(self, keys: KeysCollection, atol: float = 1e-3, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.atol = atol

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        for key in keys[1:]:
            if tuple(d[key].shape[1:]) != tuple(d[keys[0]].shape[1:]):
                raise ValueError(
                    f"{_describe(d, key)} has spatial shape {list(d[key].shape[1:])} but {_describe(d, keys[0])} has "
                    f"{list(d[keys[0]].shape[1:])}: an image and its label map must have the same size."
                )
            first, other = d[keys[0]], d[key]
            if isinstance(first, MetaTensor) and isinstance(other, MetaTensor):
                a, b = np.asarray(first.affine, dtype=np.float64), np.asarray(other.affine, dtype=np.float64)
                if a.shape != b.shape or not np.allclose(a, b, rtol=0.0, atol=self.atol):
                    raise ValueError(
                        f"{_describe(d, key)} has affine {np.round(b, 4).tolist()} but {_describe(d, keys[0])} has "
                        f"{np.round(a, 4).tolist()}: an image and its label map must lie on the same grid "
                        "(resample the label map onto its image first)."
                    )
        return d
