"""Signed distance functions (SDF) of binary masks and their inverse.

Score-based segmentation on SDFs (Bogensperger et al.) diffuses a truncated, normalised signed distance map instead
of the binary mask itself: the map is smooth, so a generative model can learn it, and its zero level set gives the
mask back. Convention used throughout: negative inside the object, zero on its inner one-pixel boundary, positive
outside, so ``mask == (sdf <= 0)`` holds exactly for every binary mask.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_numpy
from scipy import ndimage

__all__ = ["MaskToSDF", "MaskToSDFd", "SDFSamplesToMaskd", "SDFToMask", "SDFToMaskd", "check_binary", "mask_to_sdf"]

_MAX_REPORTED_VALUES = 10


def check_binary(mask: np.ndarray, name: str = "mask") -> None:
    """Raise a ``ValueError`` naming ``name`` and the offending values unless ``mask`` only holds 0 and 1.

    Args:
        mask: array to check (any shape, numeric or boolean).
        name: how the array is called in the error message.
    """
    if not np.all((mask == 0) | (mask == 1)):
        values = np.unique(mask)
        shown = values[:_MAX_REPORTED_VALUES].tolist()
        more = f" (and {values.size - _MAX_REPORTED_VALUES} more)" if values.size > _MAX_REPORTED_VALUES else ""
        raise ValueError(f"{name} must be binary (only 0 and 1), found values {shown}{more}.")


def _float_dtype(img: NdarrayOrTensor) -> np.dtype | torch.dtype:
    """The dtype of ``img`` if it is floating point, otherwise float32 (an SDF or a 0/1 float mask needs one)."""
    if isinstance(img, torch.Tensor):
        return img.dtype if img.is_floating_point() else torch.float32
    return img.dtype if np.issubdtype(img.dtype, np.floating) else np.dtype(np.float32)


def _check_sdf_args(truncation: float, scale: float, normalize: bool) -> None:
    if not truncation > 0:
        raise ValueError(f"truncation must be a positive number of pixels, got {truncation}.")
    if not scale > 0:
        raise ValueError(f"scale must be positive (a non-positive scale breaks the sign convention), got {scale}.")
    # one pixel from the boundary and the truncation limit must both survive the float32 SDF, or the sign is lost
    smallest, largest = (scale / truncation, scale) if normalize else (scale, scale * truncation)
    if np.float32(smallest) == 0 or not np.isfinite(np.float32(largest)):
        raise ValueError(
            f"scale {scale} with truncation {truncation} does not fit a float32 SDF (one pixel would be "
            f"{smallest:g}, the limit {largest:g}); use a scale near 1."
        )


def mask_to_sdf(mask: np.ndarray, truncation: float = 15.0, normalize: bool = True, scale: float = 1.0) -> np.ndarray:
    """Truncated signed distance function of one binary mask of shape ``(H, W)`` or ``(H, W, D)``.

    The boundary is the inner one-pixel boundary of the foreground, ``mask & ~binary_erosion(mask)`` with the
    cross-shaped structuring element and ``border_value=1`` (as in scikit-image), so the image edge is not a
    boundary. The Euclidean distance (in pixels) to the nearest boundary pixel is negated inside the object, clipped
    to ``[-truncation, truncation]``, divided by ``truncation`` if ``normalize`` and multiplied by ``scale``.

    Edge cases: an empty mask is "outside everywhere", every value is ``+truncation`` (``+1`` when normalised)
    times ``scale``; an all-foreground mask has no boundary, every value is ``-truncation`` (``-1``) times ``scale``.

    Args:
        mask: binary array (values 0 and 1, any numeric or boolean dtype), 2 or 3 spatial dimensions.
        truncation: distance (pixels) at which the SDF is clipped; must be positive.
        normalize: divide the clipped SDF by ``truncation`` so that it lies in ``[-1, 1]``.
        scale: final multiplier (the VE model of the paper uses 0.2); must be positive.

    Returns:
        float32 array of the shape of ``mask``.

    Raises:
        ValueError: if ``mask`` is not 2D/3D or not binary, or if ``truncation``/``scale`` is not positive.
    """
    _check_sdf_args(truncation, scale, normalize)
    mask = np.asarray(mask)
    if mask.ndim not in (2, 3):
        raise ValueError(f"mask must have 2 or 3 spatial dimensions (H, W[, D]), got shape {mask.shape}.")
    check_binary(mask)
    foreground = mask.astype(bool)
    limit = 1.0 if normalize else float(truncation)
    if not foreground.any():
        return np.full(mask.shape, limit * scale, dtype=np.float32)
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    interior = ndimage.binary_erosion(foreground, structure=structure, border_value=1)
    boundary = foreground & ~interior
    if not boundary.any():
        return np.full(mask.shape, -limit * scale, dtype=np.float32)
    sdf = ndimage.distance_transform_edt(~boundary)
    sdf[interior] *= -1.0
    sdf = np.clip(sdf, -truncation, truncation)
    if normalize:
        sdf /= truncation
    return (sdf * scale).astype(np.float32)


class MaskToSDF(Transform):
    """Convert a channel-first binary mask ``(C, H, W[, D])`` to its truncated SDF, channel by channel.

    See :py:func:`mask_to_sdf` for the definition and the edge cases. The output keeps the input type (numpy,
    torch, MetaTensor) and shape; its dtype is the input's if floating point, float32 otherwise.

    Args:
        truncation: distance (pixels) at which the SDF is clipped; must be positive.
        normalize: divide the clipped SDF by ``truncation`` so that it lies in ``[-1, 1]``.
        scale: final multiplier (the VE model of the paper uses 0.2); must be positive.
    """

    backend = [TransformBackends.NUMPY]

    def __init__(self, truncation: float = 15.0, normalize: bool = True, scale: float = 1.0) -> None:
        _check_sdf_args(truncation, scale, normalize)
        self.truncation = truncation
        self.normalize = normalize
        self.scale = scale

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Apply the transform to ``img`` of shape ``(C, H, W)`` or ``(C, H, W, D)``."""
        if img.ndim not in (3, 4):
            raise ValueError(f"img must be channel-first (C, H, W) or (C, H, W, D), got shape {tuple(img.shape)}.")
        mask = convert_to_numpy(img)
        check_binary(mask, "img")
        sdf = np.stack([mask_to_sdf(channel, self.truncation, self.normalize, self.scale) for channel in mask])
        out, *_ = convert_to_dst_type(sdf, img, dtype=_float_dtype(img))
        return out


class SDFToMask(Transform):
    """Recover the binary mask from an SDF: ``mask = sdf <= threshold``, as a float 0/1 array.

    With the default ``threshold=0.0`` this inverts :py:class:`MaskToSDF` exactly. The output keeps the input type
    and shape; its dtype is the input's if floating point, float32 otherwise.

    Args:
        threshold: level below or at which a pixel is foreground.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, threshold: float = 0.0) -> None:
        self.threshold = threshold

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Apply the transform to ``img`` (any shape)."""
        out, *_ = convert_to_dst_type(img <= self.threshold, img, dtype=_float_dtype(img))
        return out


class MaskToSDFd(MapTransform):
    """Dictionary-based wrapper of :py:class:`MaskToSDF`.

    Args:
        keys: keys of the corresponding items to be transformed.
        truncation: distance (pixels) at which the SDF is clipped; must be positive.
        normalize: divide the clipped SDF by ``truncation`` so that it lies in ``[-1, 1]``.
        scale: final multiplier (the VE model of the paper uses 0.2); must be positive.
        allow_missing_keys: don't raise exception if key is missing.
    """

    backend = MaskToSDF.backend

    def __init__(
        self,
        keys: KeysCollection,
        truncation: float = 15.0,
        normalize: bool = True,
        scale: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.converter = MaskToSDF(truncation=truncation, normalize=normalize, scale=scale)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key])
        return d


class SDFToMaskd(MapTransform):
    """Dictionary-based wrapper of :py:class:`SDFToMask`.

    Args:
        keys: keys of the corresponding items to be transformed.
        threshold: level below or at which a pixel is foreground.
        allow_missing_keys: don't raise exception if key is missing.
    """

    backend = SDFToMask.backend

    def __init__(self, keys: KeysCollection, threshold: float = 0.0, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.converter = SDFToMask(threshold=threshold)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key])
        return d


class SDFSamplesToMaskd(MapTransform):
    """Turn the summary of K sampled SDFs into the mask and an uncertainty map.

    The input under ``key`` is ``(2, H, W)`` as :py:class:`common.diffusion.SDFSamplingInferer` returns it:
    the mean SDF and the fraction ``f`` of samples in which a pixel is foreground. ``key`` becomes the mask
    ``mean_sdf <= threshold`` (one channel, float 0/1), ``uncertainty_key`` the disagreement ``1 - |2 f - 1|``
    (0 where all samples agree, 1 where half of them say foreground), and ``sdf_key``, when given, the mean SDF.

    Args:
        keys: keys of the sampler summaries.
        threshold: a pixel is foreground where the mean SDF is ``<= threshold``.
        uncertainty_key: key of the uncertainty map.
        sdf_key: key of the mean SDF, or None to drop it.
    """

    def __init__(
        self,
        keys: KeysCollection,
        threshold: float = 0.003,
        uncertainty_key: str = "uncertainty",
        sdf_key: str | None = None,
    ) -> None:
        super().__init__(keys)
        self.to_mask = SDFToMask(threshold)
        self.uncertainty_key = uncertainty_key
        self.sdf_key = sdf_key

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            summary = d[key]
            if summary.shape[0] != 2:
                raise ValueError(f"'{key}' must hold (mean SDF, foreground fraction), got {summary.shape[0]} channels.")
            sdf, frequency = summary[:1], summary[1:]
            d[key] = self.to_mask(sdf)
            d[self.uncertainty_key] = 1 - abs(2 * frequency - 1)
            if self.sdf_key is not None:
                d[self.sdf_key] = sdf
        return d
