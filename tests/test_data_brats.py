"""Tests of ``common.data.brats`` (BraTS case files, label remap, joint normalisation, slices) and the
``brats_slice`` synthetic kind."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from common.data import (
    BRATS_MODALITIES,
    BRATS_REGIONS,
    BRATS_REMAP,
    brain_slice,
    brain_volume,
    brats_case_files,
    brats_case_shape,
    brats_slice,
    normalize_slice,
    read_brats_case,
    remap_brats_labels,
    write_synthetic_dataset,
)

SHAPE = (48, 40, 24)  # small non-square (H, W, D) volumes


def write_case(root: Path, name: str, shape: tuple[int, int, int] = SHAPE, seed: int = 0, ext: str = ".nii.gz") -> Path:
    """A BraTS 2021 case folder ``root/name`` with the four modalities and ``seg`` from ``brain_volume``."""
    volumes, seg = brain_volume(shape, seed)
    case = root / name
    case.mkdir(parents=True)
    for key, array in (*zip(BRATS_MODALITIES, volumes, strict=True), ("seg", seg)):
        nib.save(nib.Nifti1Image(array, np.eye(4)), str(case / f"{name}_{key}{ext}"))
    return case


def test_remap_known_values_and_regions():
    raw = np.array([[0, 1, 2, 4], [4, 2, 1, 0]], dtype=np.int16)
    remapped = remap_brats_labels(raw, "x")
    assert remapped.dtype == np.uint8
    np.testing.assert_array_equal(remapped, [[0, 2, 1, 3], [3, 1, 2, 0]])
    np.testing.assert_array_equal(remap_brats_labels(raw.astype(np.float64), "x"), remapped)  # float seg files
    raw_regions = {"WT": (1, 2, 4), "TC": (1, 4), "ET": (4,)}  # the BraTS definitions in raw labels
    for region, classes in BRATS_REGIONS.items():
        assert {raw for raw, value in BRATS_REMAP.items() if value in classes} == set(raw_regions[region])


@pytest.mark.parametrize("bad", [3, 5, -1, 2.5, np.nan])
def test_remap_rejects_other_values_naming_where(bad):
    label = np.array([0, 1, 2, 4, bad], dtype=np.float64)
    with pytest.raises(ValueError, match=r"case_007/seg\.nii\.gz.*\{(3|5|-1|2\.5|nan)\}"):
        remap_brats_labels(label, "case_007/seg.nii.gz")


def test_normalize_slice_is_joint_not_per_channel():
    image = np.stack(
        [np.full((2, 3), 10.0), np.arange(20.0, 26.0).reshape(2, 3), np.zeros((2, 3)), np.full((2, 3), 30)]
    )
    normalized = normalize_slice(image)
    assert normalized.dtype == np.float32 and normalized.min() == 0.0 and normalized.max() == 1.0
    np.testing.assert_allclose(normalized, image / 30.0, rtol=1e-6)
    np.testing.assert_allclose(normalized[0], 1 / 3)  # a per-channel min-max would give zeros here
    np.testing.assert_array_equal(normalize_slice(np.full((4, 3, 3), 7.0)), np.zeros((4, 3, 3)))  # no 0 / 0
    with pytest.raises(ValueError, match="NaN"):
        normalize_slice(np.array([[[np.nan, 1.0]]]))


def test_brats_slice_square_keeps_values_and_nearest_labels():
    volumes, seg = brain_volume((32, 32, 16), 1)
    image, label = brats_slice(volumes, seg, 7, size=32)
    assert image.shape == (4, 32, 32) and image.dtype == np.float32
    np.testing.assert_allclose(image, normalize_slice(volumes[..., 7]), atol=1e-6)  # same size: joint min-max only
    np.testing.assert_array_equal(label, remap_brats_labels(seg[..., 7], "x"))
    up_image, up_label = brats_slice(volumes, seg, 7, size=64)
    assert up_image.shape == (4, 64, 64) and up_label.shape == (64, 64) and up_label.dtype == np.uint8
    np.testing.assert_array_equal(up_label, np.repeat(np.repeat(label, 2, axis=0), 2, axis=1))
    assert up_image.min() >= 0.0 and up_image.max() <= 1.0


def test_brats_slice_label_is_never_interpolated():
    volumes = np.random.default_rng(0).random((4, 30, 30, 3)).astype(np.float32)
    seg = np.zeros((30, 30, 3), dtype=np.uint8)
    seg[::2, :, 1] = 4  # stripes 0 / 4: any interpolation would create the classes 1 and 2
    for size in (7, 13, 45):
        image, label = brats_slice(volumes, seg, 1, size=size)
        assert image.shape == (4, size, size) and image.min() >= 0.0 and image.max() <= 1.0
        assert set(np.unique(label).tolist()) == {0, 3}
    _, no_label = brats_slice(volumes, None, 1, size=7)
    assert no_label is None


def test_brats_slice_non_square_resizes_shorter_side_and_centre_crops():
    volumes = np.random.default_rng(1).random((4, 48, 40, 2)).astype(np.float32)
    seg = np.zeros((48, 40, 2), dtype=np.uint8)
    seg[:4, :, 0] = 2  # top rows: cropped away
    seg[44:, :, 0] = 1  # bottom rows: cropped away
    seg[20:28, 10:30, 0] = 4  # 40 -> 20 and 48 -> 24 (factor 2), then rows 2..22 kept
    image, label = brats_slice(volumes, seg, 0, size=20)
    assert image.shape == (4, 20, 20) and label.shape == (20, 20)
    expected = np.zeros((20, 20), dtype=np.uint8)
    expected[8:12, 5:15] = 3
    np.testing.assert_array_equal(label, expected)
    rows = np.broadcast_to(np.arange(48.0)[None, :, None, None], (4, 48, 40, 1))  # joint min-max: row / 47
    gradient, _ = brats_slice(rows, None, 0, size=20)
    np.testing.assert_allclose(
        gradient[:, :, 7], np.broadcast_to(((2 * np.arange(2, 22) + 0.5) / 47)[None], (4, 20)), atol=0.01
    )


def test_brats_slice_image_resize_is_anti_aliased():
    checkerboard = (np.indices((30, 30)).sum(axis=0) % 2).astype(np.float32)
    volumes = np.broadcast_to(checkerboard[None, :, :, None], (4, 30, 30, 1))
    image, _ = brats_slice(volumes, None, 0, size=10)  # plain linear sampling at factor 3 would keep 0 / 1 pixels
    assert abs(image.mean() - 0.5) < 0.05 and image.std() < 0.1


def test_brats_slice_bad_input():
    volumes, seg = np.zeros((4, 8, 8, 5), np.float32), np.zeros((8, 8, 5), np.uint8)
    with pytest.raises(ValueError, match=r"BraTS2021_00003.*depth 5"):
        brats_slice(volumes, seg, 5, where="BraTS2021_00003")
    with pytest.raises(ValueError, match="depth 5"):
        brats_slice(volumes, seg, -1)
    with pytest.raises(ValueError, match=r"\(4, H, W, D\)"):
        brats_slice(volumes[:3], seg, 0)
    with pytest.raises(ValueError, match="seg has shape"):
        brats_slice(volumes, seg[:4], 0)
    with pytest.raises(ValueError, match="size"):
        brats_slice(volumes, seg, 0, size=0)
    seg[2, 2, 1] = 3
    with pytest.raises(ValueError, match=r"case_a, slice 1.*\{3\}"):
        brats_slice(volumes, seg, 1, where="case_a")
    brats_slice(volumes, seg, 0)  # the bad value is in another slice


def test_case_files_and_reading(tmp_path):
    case = write_case(tmp_path, "BraTS2021_00001")
    files = brats_case_files(case)
    assert list(files) == [*BRATS_MODALITIES, "seg"]
    assert files["t1ce"] == case / "BraTS2021_00001_t1ce.nii.gz"
    assert brats_case_shape(case) == SHAPE
    volumes, seg = read_brats_case(case)
    expected_volumes, expected_seg = brain_volume(SHAPE, 0)
    assert volumes.shape == (4, *SHAPE) and volumes.dtype == np.float32
    np.testing.assert_array_equal(volumes, expected_volumes)
    np.testing.assert_array_equal(seg, expected_seg)
    plain = write_case(tmp_path, "BraTS2021_00002", ext=".nii")
    assert brats_case_files(plain)["seg"].name == "BraTS2021_00002_seg.nii"


def test_missing_files_are_named(tmp_path):
    case = write_case(tmp_path, "BraTS2021_00001")
    (case / "BraTS2021_00001_seg.nii.gz").unlink()
    assert "seg" not in brats_case_files(case, require_seg=False)
    assert read_brats_case(case, require_seg=False)[1] is None
    (case / "BraTS2021_00001_t2.nii.gz").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"BraTS2021_00001 lacks BraTS2021_00001_t2\.nii\.gz, BraTS2021_00001_s"
    ):
        brats_case_files(case)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        brats_case_files(tmp_path / "BraTS2021_99999")


def test_mismatched_shapes_name_case_and_every_shape(tmp_path):
    case = write_case(tmp_path, "BraTS2021_00001")
    nib.save(nib.Nifti1Image(np.zeros((48, 40, 20), np.float32), np.eye(4)), str(case / "BraTS2021_00001_flair.nii.gz"))
    for read in (brats_case_shape, read_brats_case):
        with pytest.raises(
            ValueError, match=r"BraTS2021_00001.*_t1\.nii\.gz \(48, 40, 24\).*_flair\.nii\.gz \(48, 40, 20\)"
        ):
            read(case)


def test_synthetic_brats_slice_kind(tmp_path):
    datalist = write_synthetic_dataset("brats_slice", tmp_path / "ds", num=2, seed=1, size=64, test_fraction=0)
    entries = datalist["training"] + datalist["validation"]
    first = next(e for e in entries if e["image"].endswith("brats_slice_0000.nii.gz"))
    image = np.asarray(nib.load(tmp_path / "ds" / first["image"]).dataobj)
    label = np.asarray(nib.load(tmp_path / "ds" / first["label"]).dataobj)
    assert image.shape == (64, 64, 4) and image.dtype == np.float32 and label.shape == (64, 64)
    assert label.dtype == np.uint8 and set(np.unique(label).tolist()) == {0, 1, 2, 3}
    assert image.min() == 0.0 and image.max() == 1.0
    assert image[..., 0].max() < 1.0  # one joint maximum, not one per channel
    raw_image, raw_label = brain_slice(64, 1)  # the first sample of seed 1
    np.testing.assert_array_equal(image, np.moveaxis(normalize_slice(raw_image), 0, -1))
    np.testing.assert_array_equal(label, remap_brats_labels(raw_label, "x"))
