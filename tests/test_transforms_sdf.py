"""Tests of common.transforms.sdf: signed distance functions of binary masks and their inverse."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from monai.data import MetaTensor

from common.transforms.sdf import MaskToSDF, MaskToSDFd, SDFSamplesToMaskd, SDFToMask, SDFToMaskd, mask_to_sdf


def _square(size: int = 7, lo: int = 2, hi: int = 5) -> np.ndarray:
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[lo:hi, lo:hi] = 1
    return mask


def test_known_values_of_a_square_unnormalised():
    sdf = mask_to_sdf(_square(), normalize=False)
    assert sdf.dtype == np.float32
    assert sdf[3, 3] == -1.0  # the only interior pixel, one step from the inner boundary
    for pixel in [(2, 2), (2, 3), (4, 4), (3, 2)]:
        assert sdf[pixel] == 0.0  # the inner boundary
    assert sdf[1, 3] == 1.0
    assert sdf[0, 3] == 2.0
    assert sdf[1, 1] == pytest.approx(math.sqrt(2))
    assert sdf[0, 0] == pytest.approx(math.sqrt(8))
    assert sdf[0, 5] == pytest.approx(math.sqrt(5))


def test_sign_convention_normalisation_and_scale():
    mask = _square()
    raw = mask_to_sdf(mask, normalize=False)
    assert np.all(raw[mask.astype(bool)] <= 0)
    assert np.all(raw[~mask.astype(bool)] > 0)
    np.testing.assert_allclose(mask_to_sdf(mask), raw / 15.0, rtol=1e-6)
    np.testing.assert_allclose(mask_to_sdf(mask, truncation=2.0), np.clip(raw, -2, 2) / 2.0, rtol=1e-6)
    np.testing.assert_allclose(mask_to_sdf(mask, scale=0.2), 0.2 * raw / 15.0, rtol=1e-6)
    np.testing.assert_allclose(mask_to_sdf(mask, normalize=False, scale=0.5), 0.5 * raw, rtol=1e-6)


def test_clipping_far_from_the_boundary():
    mask = np.zeros((40, 40), dtype=np.uint8)
    mask[5:35, 5:35] = 1
    raw = mask_to_sdf(mask, truncation=3.0, normalize=False)
    assert raw.min() == -3.0 and raw.max() == 3.0
    assert raw[20, 20] == -3.0 and raw[0, 0] == 3.0
    assert raw[6, 20] == -1.0 and raw[3, 20] == 2.0  # inside the truncation band: untouched
    normalised = mask_to_sdf(mask, truncation=3.0)
    assert normalised.min() == -1.0 and normalised.max() == 1.0


def test_object_touching_the_image_edge_has_no_boundary_there():
    mask = np.zeros((6, 6), dtype=np.uint8)
    mask[:, :3] = 1
    raw = mask_to_sdf(mask, normalize=False)
    np.testing.assert_array_equal(raw[:, 2], 0.0)  # the only boundary: the column next to the background
    np.testing.assert_array_equal(raw[:, 0], -2.0)  # the image edge is not a boundary
    np.testing.assert_array_equal(raw[:, 1], -1.0)
    np.testing.assert_array_equal(raw[:, 5], 3.0)


@pytest.mark.parametrize(("normalize", "scale", "expected"), [(True, 1.0, 1.0), (False, 1.0, 15.0), (True, 0.2, 0.2)])
def test_empty_and_full_masks(normalize, scale, expected):
    empty = mask_to_sdf(np.zeros((5, 6)), normalize=normalize, scale=scale)
    full = mask_to_sdf(np.ones((5, 6, 3)), normalize=normalize, scale=scale)
    np.testing.assert_allclose(empty, expected, rtol=1e-6)
    np.testing.assert_allclose(full, -expected, rtol=1e-6)
    assert empty.shape == (5, 6) and full.shape == (5, 6, 3)


def test_3d_cube():
    mask = np.zeros((7, 7, 7), dtype=bool)
    mask[2:5, 2:5, 2:5] = True
    raw = mask_to_sdf(mask, normalize=False)
    assert raw[3, 3, 3] == -1.0
    assert raw[2, 3, 3] == 0.0
    assert raw[0, 3, 3] == 2.0
    assert raw[1, 1, 1] == pytest.approx(math.sqrt(3))


def _random_masks():
    rng = np.random.default_rng(0)
    masks = [(rng.random(shape) < density).astype(np.uint8) for shape in [(9, 11), (6, 5, 4)] for density in (0.2, 0.7)]
    border = np.zeros((8, 8), dtype=np.uint8)
    border[0, :] = 1
    border[:, -1] = 1
    border[4:, :2] = 1
    return [*masks, border, np.ones((4, 4)), np.zeros((4, 4)), _square()]


@pytest.mark.parametrize("mask", _random_masks())
@pytest.mark.parametrize(
    ("truncation", "normalize", "scale"), [(15.0, True, 1.0), (1.0, False, 0.2), (2.5, True, 0.01)]
)
def test_round_trip_is_exact(mask, truncation, normalize, scale):
    sdf = MaskToSDF(truncation=truncation, normalize=normalize, scale=scale)(mask[None])
    np.testing.assert_array_equal(SDFToMask()(sdf)[0], mask)


@settings(max_examples=25, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 9), st.integers(1, 9)), elements=st.integers(0, 1)))
def test_round_trip_property(mask):
    sdf = mask_to_sdf(mask, truncation=4.0, scale=0.2)
    assert np.all(np.abs(sdf) <= 0.2 + 1e-6)
    np.testing.assert_array_equal((sdf <= 0).astype(np.uint8), mask)


def test_types_dtypes_and_shapes_are_preserved():
    mask = np.zeros((2, 6, 7), dtype=np.uint8)
    mask[0, 1:4, 2:5] = 1
    out = MaskToSDF()(mask)
    assert isinstance(out, np.ndarray) and out.shape == (2, 6, 7) and out.dtype == np.float32
    np.testing.assert_array_equal(out[1], 1.0)  # empty channel
    np.testing.assert_allclose(out[0], mask_to_sdf(mask[0]))

    as_double = MaskToSDF()(torch.as_tensor(mask, dtype=torch.float64))
    assert isinstance(as_double, torch.Tensor) and as_double.dtype == torch.float64
    np.testing.assert_allclose(as_double.numpy(), out, rtol=1e-6)
    assert MaskToSDF()(torch.as_tensor(mask).bool()).dtype == torch.float32

    meta = MetaTensor(torch.as_tensor(mask[:, :, :, None].repeat(3, axis=3)).float(), meta={"filename": "x.nii"})
    sdf = MaskToSDF()(meta)
    assert isinstance(sdf, MetaTensor) and sdf.meta["filename"] == "x.nii" and sdf.shape == (2, 6, 7, 3)
    back = SDFToMask()(sdf)
    assert isinstance(back, MetaTensor) and back.dtype == torch.float32 and back.meta["filename"] == "x.nii"
    torch.testing.assert_close(back, meta.as_tensor(), check_device=False)


def test_sdf_to_mask_threshold():
    sdf = np.array([[-0.5, 0.0, 0.1, 0.3]], dtype=np.float32)
    np.testing.assert_array_equal(SDFToMask()(sdf), [[1, 1, 0, 0]])
    np.testing.assert_array_equal(SDFToMask(threshold=0.2)(sdf), [[1, 1, 1, 0]])
    assert SDFToMask()(torch.tensor([1, -1])).dtype == torch.float32


def test_dictionary_versions():
    data = {"label": _square()[None], "image": np.full((1, 7, 7), 5.0)}
    out = MaskToSDFd("label", truncation=2.0, scale=0.2)(data)
    np.testing.assert_allclose(out["label"], MaskToSDF(truncation=2.0, scale=0.2)(data["label"]))
    assert out["image"] is data["image"]
    back = SDFToMaskd(["label"])(out)
    np.testing.assert_array_equal(back["label"], data["label"])


def test_non_binary_mask_is_rejected_with_the_values_found():
    mask = np.array([[0, 1, 2], [0, 3, 1]])
    with pytest.raises(ValueError, match=r"binary.*\[0, 1, 2, 3\]"):
        mask_to_sdf(mask)
    with pytest.raises(ValueError, match=r"img must be binary.*0\.5"):
        MaskToSDF()(torch.tensor([[[0.0, 0.5], [1.0, 1.0]]]))


@pytest.mark.parametrize(
    ("kwargs", "name"), [({"truncation": 0.0}, "truncation"), ({"scale": -1.0}, "scale"), ({"scale": 0.0}, "scale")]
)
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        MaskToSDF(**kwargs)
    with pytest.raises(ValueError, match=name):
        mask_to_sdf(_square(), **kwargs)


def test_bad_shapes():
    with pytest.raises(ValueError, match="2 or 3 spatial"):
        mask_to_sdf(np.zeros(5))
    with pytest.raises(ValueError, match="channel-first"):
        MaskToSDF()(np.zeros((4, 4)))


def test_sdf_samples_to_mask_thresholds_mean_and_scores_disagreement() -> None:
    sdf = torch.tensor([[[-0.1, 0.002, 0.0031, 0.2]]])
    frequency = torch.tensor([[[1.0, 0.5, 0.25, 0.0]]])
    out = SDFSamplesToMaskd(keys="pred", threshold=0.003)({"pred": torch.cat([sdf, frequency])})
    torch.testing.assert_close(out["pred"], torch.tensor([[[1.0, 1.0, 0.0, 0.0]]]))
    torch.testing.assert_close(out["uncertainty"], torch.tensor([[[0.0, 1.0, 0.5, 0.0]]]))
    assert "sdf" not in out


def test_sdf_samples_to_mask_needs_two_channels() -> None:
    with pytest.raises(ValueError, match="mean SDF, foreground fraction"):
        SDFSamplesToMaskd(keys="pred")({"pred": torch.zeros(1, 4, 4)})
