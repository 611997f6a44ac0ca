"""Tests of common.transforms.slices: choosing and extracting 2D slices of 3D volumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose

from common.transforms.slices import ExtractSlicesd, select_slice_indices


def _label() -> np.ndarray:
    """A (1, 4, 5, 6) label: class 1 in slice 2 (axis 2), class 2 in slices 4 and 5, class 3 in slices 1 and 4."""
    label = np.zeros((1, 4, 5, 6), dtype=np.uint8)
    label[0, 1, 1, 2] = 1
    label[0, 2, 2, 4] = 2
    label[0, 0, 3, 5] = 2
    label[0, 3, 4, 1] = 3
    label[0, 3, 0, 4] = 3
    return label


def test_range_selection():
    label = _label()
    assert select_slice_indices(label, axis=2) == [0, 1, 2, 3, 4, 5]
    assert select_slice_indices(label, axis=2, start=1, stop=5, step=2) == [1, 3]
    assert select_slice_indices(label, axis=0, stop=100) == [0, 1, 2, 3]
    assert select_slice_indices(label, axis=1, start=-2) == [3, 4]
    assert select_slice_indices(None, axis=0, size=3) == [0, 1, 2]


def test_explicit_indices_win_and_are_validated():
    label = _label()
    assert select_slice_indices(label, axis=2, indices=[5, 0], keep_if_labelled=True, start=3) == [5, 0]
    with pytest.raises(ValueError, match=r"index 6 .*size 6"):
        select_slice_indices(label, axis=2, indices=[1, 6])
    with pytest.raises(ValueError, match=r"index -1 .*size 4"):
        select_slice_indices(label[0], axis=0, indices=[-1])


def test_keep_if_labelled():
    label = _label()
    assert select_slice_indices(label, axis=2, keep_if_labelled=True) == [1, 2, 4, 5]
    assert select_slice_indices(label[0], axis=2, keep_if_labelled=True, stop=4) == [1, 2]
    assert select_slice_indices(label, axis=0, keep_if_labelled=True) == [0, 1, 2, 3]
    assert select_slice_indices(np.zeros((3, 3, 3)), axis=1, keep_if_labelled=True) == []


def test_num_per_class_is_stratified_and_seeded():
    label = _label()
    containing = {1: {2}, 2: {4, 5}, 3: {1, 4}}
    for seed in range(6):
        chosen = select_slice_indices(label, axis=2, num_per_class=1, seed=seed)
        assert chosen == sorted(chosen)
        assert all(containing[value] & set(chosen) for value in containing)  # every class is represented
        assert set(chosen) <= {1, 2, 4, 5} and len(chosen) <= 3
        assert chosen == select_slice_indices(label, axis=2, num_per_class=1, seed=seed)
    draws = {tuple(select_slice_indices(label, axis=2, num_per_class=1, seed=seed)) for seed in range(12)}
    assert len(draws) > 1
    assert select_slice_indices(label, axis=2, num_per_class=5) == [1, 2, 4, 5]
    assert select_slice_indices(label, axis=2, num_per_class=5, stop=3) == [1, 2]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"label": None, "axis": 0}, "size"),
        ({"label": None, "axis": 0, "size": 4, "keep_if_labelled": True}, "label"),
        ({"label": _label(), "axis": 3}, "axis"),
        ({"label": _label(), "axis": 0, "size": 7}, "size 7"),
        ({"label": _label(), "axis": 0, "step": 0}, "step"),
        ({"label": _label(), "axis": 0, "num_per_class": 0}, "num_per_class"),
        ({"label": np.zeros((2, 3, 3, 3)), "axis": 0}, "label"),
    ],
)
def test_bad_selection_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        select_slice_indices(**kwargs)


@pytest.mark.parametrize(("axis", "shape"), [(0, (2, 5, 6)), (1, (2, 4, 6)), (2, (2, 4, 5))])
def test_extract_slices_along_each_axis(axis, shape):
    image = np.arange(2 * 4 * 5 * 6, dtype=np.float32).reshape(2, 4, 5, 6)
    data = {"image": image, "label": _label(), "id": "case0"}
    samples = ExtractSlicesd(["image", "label"], axis=axis, keep_if_labelled=True)(data)
    expected = select_slice_indices(_label(), axis=axis, keep_if_labelled=True)
    assert [s["slice_index"] for s in samples] == expected
    for sample in samples:
        index = sample["slice_index"]
        assert sample["image"].shape == shape and sample["label"].shape == (1, *shape[1:])
        np.testing.assert_array_equal(sample["image"], np.take(image, index, axis=axis + 1))
        np.testing.assert_array_equal(sample["label"], np.take(_label(), index, axis=axis + 1))
        assert sample["id"] == "case0"
        assert not np.shares_memory(sample["image"], image)


def test_extract_slices_types_and_meta():
    image = torch.rand(1, 4, 5, 6)
    affine = torch.diag(torch.tensor([2.0, 3.0, 4.0, 1.0], dtype=torch.float64))
    data = {"image": MetaTensor(image, affine=affine), "mask": image > 0.5, "label": _label()}
    samples = ExtractSlicesd(["image", "mask"], indices=[3])(data)
    assert len(samples) == 1
    sample = samples[0]
    assert isinstance(sample["image"], MetaTensor) and sample["image"].shape == (1, 4, 5)
    torch.testing.assert_close(sample["image"].as_tensor(), image[..., 3])
    assert tuple(sample["image"].affine.shape) == (3, 3)
    assert type(sample["mask"]) is torch.Tensor and sample["mask"].dtype == torch.bool
    assert sample["label"] is data["label"]  # not in keys: carried over unchanged


def test_extract_slices_without_label_and_in_compose():
    data = {"image": np.zeros((1, 3, 3, 4))}
    samples = ExtractSlicesd("image", label_key=None, step=2)(data)
    assert [s["slice_index"] for s in samples] == [0, 2]
    assert [s["slice_index"] for s in ExtractSlicesd("image", stop=2)(data)] == [0, 1]  # no "label" in the data
    with pytest.raises(ValueError, match="label is required"):
        ExtractSlicesd("image", keep_if_labelled=True)(data)
    pipeline = Compose([ExtractSlicesd("image", label_key=None, indices=[1, 3])])
    out = pipeline(data)
    assert isinstance(out, list) and [s["image"].shape for s in out] == [(1, 3, 3), (1, 3, 3)]


def test_extract_slices_rejects_non_3d_inputs():
    with pytest.raises(ValueError, match=r"'image'.*\(1, 4, 5\)"):
        ExtractSlicesd("image", label_key=None)({"image": np.zeros((1, 4, 5))})
    with pytest.raises(ValueError, match="same size"):
        ExtractSlicesd(["image", "label"])({"image": np.zeros((1, 4, 5, 7)), "label": _label()})
    with pytest.raises(ValueError, match="axis"):
        ExtractSlicesd("image", axis=-1)
