"""CT intensity windowing."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.transforms import MapTransform, ScaleIntensityRange, Transform
from monai.utils import convert_to_dst_type

__all__ = ["CT_WINDOWS", "CTWindow", "CTWindowd"]

#: Named HU windows (lowest, highest HU): centre / width as in common radiology use.
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "wide": (-1000.0, 1000.0),  # tools.prepare_ct_slices' default: air to dense bone
    "soft_tissue": (-160.0, 240.0),  # L 40 / W 400, abdomen
    "mediastinum": (-125.0, 225.0),  # L 50 / W 350
    "lung": (-1350.0, 150.0),  # L -600 / W 1500
    "bone": (-500.0, 1300.0),  # L 400 / W 1800
    "brain": (0.0, 80.0),  # L 40 / W 80
}


class CTWindow(Transform):
    """Apply a CT window: clip Hounsfield units to ``[center - width / 2, center + width / 2]`` and map that range
    linearly onto ``[out_min, out_max]``.

    Built on MONAI's ``ScaleIntensityRange(..., clip=True)``. The output keeps the input type (numpy, torch,
    MetaTensor) and shape, with dtype float32. The defaults are the usual soft-tissue window (40 / 400 HU).

    Args:
        center: window level (HU).
        width: window width (HU), positive.
        out_min: value of the window's lower edge and below.
        out_max: value of the window's upper edge and above; greater than ``out_min``.
    """

    backend = ScaleIntensityRange.backend

    def __init__(self, center: float = 40.0, width: float = 400.0, out_min: float = 0.0, out_max: float = 1.0) -> None:
        if not width > 0:
            raise ValueError(f"width must be positive (HU), got {width}.")
        if not out_max > out_min:
            raise ValueError(f"out_max must be greater than out_min, got out_min={out_min}, out_max={out_max}.")
        self.center = center
        self.width = width
        self.out_min = out_min
        self.out_max = out_max
        self.scaler = ScaleIntensityRange(
            a_min=center - width / 2,
            a_max=center + width / 2,
            b_min=out_min,
            b_max=out_max,
            clip=True,
            dtype=np.float32,
        )

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Apply the window to ``img`` (any shape)."""
        out = self.scaler(img)
        out, *_ = convert_to_dst_type(out, img, dtype=out.dtype)
        return out


class CTWindowd(MapTransform):
    """Dictionary-based wrapper of :py:class:`CTWindow`.

    Args:
        keys: keys of the corresponding items to be transformed.
        center: window level (HU).
        width: window width (HU), positive.
        out_min: value of the window's lower edge and below.
        out_max: value of the window's upper edge and above; greater than ``out_min``.
        allow_missing_keys: don't raise exception if key is missing.
    """

    backend = CTWindow.backend

    def __init__(
        self,
        keys: KeysCollection,
        center: float = 40.0,
        width: float = 400.0,
        out_min: float = 0.0,
        out_max: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.window = CTWindow(center=center, width=width, out_min=out_min, out_max=out_max)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.window(d[key])
        return d
