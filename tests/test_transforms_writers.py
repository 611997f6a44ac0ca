"""Tests of common.transforms.writers: saving masks in the source's format and contour overlays."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import LoadImage
from PIL import Image
from skimage.segmentation import find_boundaries

from common.transforms import SaveMaskd, SaveOverlayd
from common.transforms.writers import output_path

RED, GREEN = (255, 0, 0), (0, 255, 0)


def _load(path) -> MetaTensor:
    return LoadImage(image_only=True, ensure_channel_first=True)(str(path))


def _all_files(folder) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(root, name), folder) for root, _, names in os.walk(folder) for name in names
    )


@pytest.fixture
def png_source(tmp_path):
    """A non-square grey PNG (20 rows x 30 columns) and the mask of its bright pixels, as PIL sees them."""
    rows, cols = np.mgrid[:20, :30]
    picture = np.where((rows < 12) & (cols < 9) | (rows > 14) & (cols > 21), 200, 30).astype(np.uint8)
    picture[3, 25] = 200  # a lone pixel: any flip or transpose moves it
    src_dir = tmp_path / "src"
    src_dir.mkdir(exist_ok=True)
    Image.fromarray(picture).save(src_dir / "case_01.png")
    return src_dir / "case_01.png", picture > 100


@pytest.mark.parametrize("with_meta", [True, False])
def test_png_source_gives_binary_png_with_same_orientation(tmp_path, png_source, with_meta):
    src, pil_mask = png_source
    image = _load(src)
    mask = (image > 100).float()  # in MONAI's array order, whatever it is
    if not with_meta:
        mask = mask.as_tensor()
    out_dir = tmp_path / "out"
    out = SaveMaskd(keys="pred", output_dir=str(out_dir), postfix="seg", source_key="image")(
        {"image": image, "pred": mask}
    )
    assert out["pred_path"] == str(out_dir / "case_01_seg.png")
    with Image.open(out["pred_path"]) as written:
        assert written.mode == "L"
        pixels = np.array(written)
    assert pixels.dtype == np.uint8
    assert set(np.unique(pixels)) == {0, 255}
    np.testing.assert_array_equal(pixels, pil_mask * 255)  # same pixels as the source picture, not transposed
    reloaded = _load(out["pred_path"])
    np.testing.assert_array_equal(reloaded.numpy() / 255, mask.numpy())
    assert _all_files(tmp_path / "src") == ["case_01.png"]  # nothing written beside the source
    assert _all_files(out_dir) == ["case_01_seg.png"]  # no .tmp-* left behind


@pytest.fixture
def nifti_source(tmp_path):
    affine = np.array([[0.0, -2.0, 0.0, 10.0], [1.5, 0.0, 0.0, -5.0], [0.0, 0.0, 3.0, 7.0], [0.0, 0.0, 0.0, 1.0]])
    volume = np.random.default_rng(0).random((12, 16, 6)).astype(np.float32)
    src_dir = tmp_path / "src"
    src_dir.mkdir(exist_ok=True)
    nib.save(nib.Nifti1Image(volume, affine), str(src_dir / "vol.nii.gz"))
    return src_dir / "vol.nii.gz", affine


@pytest.mark.parametrize("with_meta", [True, False])
def test_nifti_source_gives_nifti_with_source_affine(tmp_path, nifti_source, with_meta):
    src, affine = nifti_source
    image = _load(src)
    mask = np.zeros((1, 12, 16, 6), dtype=np.float32)
    mask[0, 2:5, 3:11, 1:4] = 1
    mask[0, 10, 1, 5] = 1  # breaks every symmetry
    pred = MetaTensor(torch.from_numpy(mask), meta=dict(image.meta)) if with_meta else torch.from_numpy(mask)
    out_dir = tmp_path / "out"
    out = SaveMaskd(keys="pred", output_dir=str(out_dir), postfix="refined")({"image": image, "pred": pred})
    assert out["pred_path"] == str(out_dir / "vol_refined.nii.gz")
    written = nib.load(out["pred_path"])
    np.testing.assert_allclose(written.affine, affine)
    assert written.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(written.dataobj), mask[0])
    np.testing.assert_array_equal(_load(out["pred_path"]).numpy(), mask)
    assert _all_files(tmp_path / "src") == ["vol.nii.gz"]
    assert _all_files(out_dir) == ["vol_refined.nii.gz"]


def test_save_mask_replaces_existing_output_whole(tmp_path, png_source):
    src, _ = png_source
    image = _load(src)
    save = SaveMaskd(keys="pred", output_dir=str(tmp_path / "out"))
    save({"image": image, "pred": torch.zeros_like(image)})
    out = save({"image": image, "pred": torch.ones_like(image)})
    assert (np.array(Image.open(out["pred_path"])) == 255).all()
    assert _all_files(tmp_path / "out") == ["case_01_seg.png"]


def test_continuous_maps_keep_grey_levels(tmp_path, png_source, nifti_source):
    """An uncertainty map in [0, 1] is written as 256 grey levels (PNG) or as float32 (NIfTI), not as a mask."""
    src, _ = png_source
    image = _load(src)
    ramp = torch.linspace(0, 1, image[0].numel()).reshape(image.shape)
    out = SaveMaskd(keys="u", output_dir=str(tmp_path / "png"), postfix="uncertainty", continuous=True)(
        {"image": image, "u": ramp}
    )
    reloaded = _load(out["u_path"]).numpy() / 255
    np.testing.assert_allclose(reloaded, ramp.numpy(), atol=1 / 255)
    volume_src, _ = nifti_source
    volume = _load(volume_src)
    values = torch.rand(volume.shape)
    out = SaveMaskd(keys="u", output_dir=str(tmp_path / "nii"), postfix="uncertainty", continuous=True)(
        {"image": volume, "u": values}
    )
    written = nib.load(out["u_path"])
    assert written.get_data_dtype() == np.float32
    np.testing.assert_allclose(np.asarray(written.dataobj), values[0].numpy(), rtol=1e-6)


def _overlay_inputs(shape=(30, 20)):
    image = np.linspace(0, 1, shape[0] * shape[1], dtype=np.float32).reshape(1, *shape)
    pred = np.zeros((1, *shape), dtype=np.float32)
    pred[0, 3:12, 2:9] = 1
    label = np.zeros((1, *shape), dtype=np.float32)
    label[0, 16:27, 10:18] = 1
    return image, pred, label


def test_overlay_red_prediction_green_label(tmp_path, png_source):
    src, _ = png_source
    image, pred, label = _overlay_inputs()
    source = _load(src)
    out = SaveOverlayd("image", "pred", str(tmp_path / "ov"), label_key="label", source_key="source")(
        {"source": source, "image": torch.from_numpy(image), "pred": torch.from_numpy(pred), "label": label}
    )
    assert out["pred_overlay_path"] == str(tmp_path / "ov" / "case_01_overlay.png")
    with Image.open(out["pred_overlay_path"]) as written:
        assert written.mode == "RGB"
        # MONAI loads PNGs as (width, height): the overlay of a PNG-sourced (30, 20) array is 30 wide, 20 high
        assert written.size == (30, 20)
        rgb = np.array(written)
    red, green = (rgb == RED).all(-1), (rgb == GREEN).all(-1)
    np.testing.assert_array_equal(red, find_boundaries(pred[0] > 0, mode="inner").T)
    np.testing.assert_array_equal(green, find_boundaries(label[0] > 0, mode="inner").T)
    assert red.any()
    assert green.any()
    assert _all_files(tmp_path / "ov") == ["case_01_overlay.png"]
    assert _all_files(tmp_path / "src") == ["case_01.png"]


def test_overlay_without_label_has_no_green(tmp_path):
    image, pred, _ = _overlay_inputs()
    out = SaveOverlayd("image", "pred", str(tmp_path), label_key="label")({"image": image, "pred": pred})
    rgb = np.array(Image.open(out["pred_overlay_path"]))
    assert not (rgb == GREEN).all(-1).any()
    np.testing.assert_array_equal((rgb == RED).all(-1), find_boundaries(pred[0] > 0, mode="inner"))


def test_overlay_3d_shows_slice_with_most_prediction(tmp_path):
    image = np.random.default_rng(0).random((1, 16, 12, 5)).astype(np.float32)
    pred = np.zeros((1, 16, 12, 5), dtype=np.float32)
    pred[0, 2:5, 2:5, 1] = 1
    pred[0, 6:14, 3:10, 3] = 1
    out = SaveOverlayd("image", "pred", str(tmp_path))({"image": image, "pred": pred})
    rgb = np.array(Image.open(out["pred_overlay_path"]))
    assert rgb.shape == (16, 12, 3)
    np.testing.assert_array_equal((rgb == RED).all(-1), find_boundaries(pred[0, ..., 3] > 0, mode="inner"))


def test_overlay_shape_mismatch_rejected(tmp_path):
    image, _, _ = _overlay_inputs()
    with pytest.raises(ValueError, match="same spatial shape"):
        SaveOverlayd("image", "pred", str(tmp_path))({"image": image, "pred": np.zeros((1, 20, 30), np.float32)})
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "source, ext, expected",
    [
        ("/data/case.nii.gz", None, "case_seg.nii.gz"),
        ("/data/case.NII.GZ", None, "case_seg.nii.gz"),
        ("/data/case.nii.gz", ".png", "case_seg.png"),
        ("/data/x.y.png", None, "x.y_seg.png"),
        ("case.nii", ".nii.gz", "case_seg.nii.gz"),
    ],
)
def test_output_path_keeps_double_extension(source, ext, expected):
    assert output_path("/out", source, "seg", ext) == os.path.join("/out", expected)
