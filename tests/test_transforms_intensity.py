"""Tests of common.transforms.intensity: CT windowing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from common.transforms.intensity import CTWindow, CTWindowd

HU = np.array([[-1000, -160, -60, 40, 140, 240, 3000]], dtype=np.int16)


def test_default_soft_tissue_window_values():
    out = CTWindow()(HU)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == HU.shape
    np.testing.assert_allclose(out, [[0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0]], atol=1e-6)


def test_custom_window_and_output_range():
    lung = CTWindow(center=-600.0, width=1500.0, out_min=-1.0, out_max=1.0)
    values = np.array([-2000.0, -1350.0, -600.0, 150.0, 500.0])
    np.testing.assert_allclose(lung(values), [-1.0, -1.0, 0.0, 1.0, 1.0], atol=1e-6)


def test_types_are_preserved():
    as_tensor = CTWindow()(torch.as_tensor(HU))
    assert type(as_tensor) is torch.Tensor and as_tensor.dtype == torch.float32
    np.testing.assert_allclose(as_tensor.numpy(), CTWindow()(HU))
    meta = MetaTensor(torch.as_tensor(HU, dtype=torch.float32)[None], meta={"filename": "ct.nii.gz"})
    out = CTWindow()(meta)
    assert isinstance(out, MetaTensor) and out.meta["filename"] == "ct.nii.gz" and out.shape == (1, 1, 7)


def test_dictionary_version():
    data = {"image": HU.astype(np.float32), "label": np.ones((1, 7))}
    out = CTWindowd("image", center=0.0, width=2000.0)(data)
    np.testing.assert_allclose(out["image"], [[0.0, 0.42, 0.47, 0.52, 0.57, 0.62, 1.0]], atol=1e-6)
    assert out["label"] is data["label"]


@pytest.mark.parametrize(
    ("kwargs", "name"), [({"width": 0.0}, "width"), ({"width": -10.0}, "width"), ({"out_min": 1.0}, "out_max")]
)
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        CTWindow(**kwargs)
    with pytest.raises(ValueError, match=name):
        CTWindowd("image", **kwargs)
