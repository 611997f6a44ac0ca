"""Tests of the synthesis writers in common.transforms.writers: K samples per item in the source's format, and
contact sheets of label map, real image and samples."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import LoadImage
from PIL import Image

from common.transforms.writers import SaveContactSheetd, SaveSamplesd


def _load(path) -> MetaTensor:
    return LoadImage(image_only=True, ensure_channel_first=True)(str(path))


def _files(folder) -> list[str]:
    return sorted(os.listdir(folder))


def _to_255(values: np.ndarray) -> np.ndarray:
    """[-1, 1] -> 0 .. 255, as the writers map samples."""
    return np.rint(np.clip((values + 1) / 2, 0, 1) * 255).astype(np.uint8)


def _samples(shape: tuple[int, ...], seed: int = 0, spread: float = 1.2) -> np.ndarray:
    """Samples in [-spread, spread]: beyond [-1, 1] they test the clipping."""
    return np.random.default_rng(seed).uniform(-spread, spread, shape).astype(np.float32)


@pytest.fixture
def nifti_label(tmp_path):
    """A 2D NIfTI label map (12 x 16) with an affine that is neither identity nor diagonal, loaded by MONAI."""
    affine = np.array([[0.0, -2.0, 0.0, 10.0], [1.5, 0.0, 0.0, -5.0], [0.0, 0.0, 3.0, 7.0], [0.0, 0.0, 0.0, 1.0]])
    classes = np.random.default_rng(1).integers(0, 4, (12, 16)).astype(np.int16)
    (tmp_path / "src").mkdir(exist_ok=True)
    nib.save(nib.Nifti1Image(classes, affine), str(tmp_path / "src" / "case.nii.gz"))
    return _load(tmp_path / "src" / "case.nii.gz"), affine


@pytest.fixture
def png_label(tmp_path):
    """A PNG label map of 20 rows x 30 columns, loaded by MONAI (as 30 x 20), and the picture as PIL reads it."""
    rows, cols = np.mgrid[:20, :30]
    picture = np.where((rows < 12) & (cols < 9), 1, 0).astype(np.uint8)
    picture[15:, 20:] = 2
    picture[3, 25] = 3  # a lone pixel: any flip or transpose moves it
    (tmp_path / "src").mkdir(exist_ok=True)
    Image.fromarray(picture).save(tmp_path / "src" / "case_01.png")
    return _load(tmp_path / "src" / "case_01.png"), picture


# --------------------------------------------------------------------------------------------------------------------
# SaveSamplesd


def test_nifti_source_gives_k_nifti_files_with_source_affine_and_output_range(tmp_path, nifti_label):
    label, affine = nifti_label
    pred = torch.from_numpy(_samples((3, 12, 16)))
    out_dir = tmp_path / "out"
    save = SaveSamplesd("pred", str(out_dir), num_samples=3, output_range=(-1000, 1000))
    out = save({"image": label, "pred": pred})
    assert out["pred_paths"] == [str(out_dir / f"case_synth_{k}.nii.gz") for k in (1, 2, 3)]
    assert _files(out_dir) == ["case_synth_1.nii.gz", "case_synth_2.nii.gz", "case_synth_3.nii.gz"]
    expected = np.clip(pred.numpy(), -1, 1) * 1000  # [-1, 1] -> [-1000, 1000]
    for k, path in enumerate(out["pred_paths"]):
        written = nib.load(path)
        assert written.get_data_dtype() == np.float32
        np.testing.assert_allclose(written.affine, affine)
        np.testing.assert_allclose(np.asarray(written.dataobj), expected[k], atol=1e-3)
    assert _files(tmp_path / "src") == ["case.nii.gz"]


def test_one_sample_is_numbered_and_mapped_to_unit_range(tmp_path, nifti_label):
    label, _ = nifti_label
    pred = MetaTensor(torch.linspace(-1, 1, 12 * 16).reshape(1, 12, 16))
    out = SaveSamplesd("pred", str(tmp_path / "out"))({"image": label, "pred": pred})
    assert out["pred_paths"] == [str(tmp_path / "out" / "case_synth_1.nii.gz")]
    values = np.asarray(nib.load(out["pred_paths"][0]).dataobj)
    np.testing.assert_allclose(values, (pred[0].numpy() + 1) / 2, atol=1e-6)


@pytest.mark.parametrize("channels, mode", [(1, "L"), (3, "RGB")])
def test_png_source_gives_k_pngs_in_the_source_orientation(tmp_path, png_label, channels, mode):
    label, _ = png_label
    assert label.shape == (1, 30, 20)  # MONAI's order: columns first
    pred = _samples((2 * channels, 30, 20), seed=channels)
    out_dir = tmp_path / "out"
    out = SaveSamplesd("pred", str(out_dir), num_samples=2)({"image": label, "pred": torch.from_numpy(pred)})
    assert out["pred_paths"] == [str(out_dir / "case_01_synth_1.png"), str(out_dir / "case_01_synth_2.png")]
    for k, path in enumerate(out["pred_paths"]):
        with Image.open(path) as written:
            assert written.mode == mode
            assert written.size == (30, 20)  # as wide and high as the source picture
        reloaded = _load(path)
        assert reloaded.shape == (channels, 30, 20)
        np.testing.assert_array_equal(reloaded.numpy(), _to_255(pred[k * channels : (k + 1) * channels]))
    assert _files(out_dir) == ["case_01_synth_1.png", "case_01_synth_2.png"]  # no .tmp-* left behind


def test_samples_bad_input_rejected_before_writing(tmp_path, png_label, nifti_label):
    png, _ = png_label
    with pytest.raises(ValueError, match=r"'pred' has 5 channels, not a multiple of num_samples=2"):
        SaveSamplesd("pred", str(tmp_path / "out"), num_samples=2)({"image": png, "pred": torch.zeros(5, 30, 20)})
    with pytest.raises(ValueError, match=r"'pred': the source .*case_01\.png is a picture.*1 \(grey\) or 3 \(RGB\)"):
        SaveSamplesd("pred", str(tmp_path / "out"), num_samples=2)({"image": png, "pred": torch.zeros(4, 30, 20)})
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match=r"output_range must be \(low, high\) with low < high"):
        SaveSamplesd("pred", str(tmp_path), output_range=(1, 0))
    with pytest.raises(ValueError, match="num_samples must be an integer >= 1, got 0"):
        SaveSamplesd("pred", str(tmp_path), num_samples=0)


# --------------------------------------------------------------------------------------------------------------------
# SaveContactSheetd


def _tile(sheet: np.ndarray, index: int, shape: tuple[int, int], columns: int) -> np.ndarray:
    row, column = divmod(index, columns)
    return sheet[row * shape[0] : (row + 1) * shape[0], column * shape[1] : (column + 1) * shape[1]]


def _colours_of(tile: np.ndarray, classes: np.ndarray) -> dict[int, tuple[int, ...]]:
    """The one colour each class has in ``tile`` (asserting that it has exactly one)."""
    colours = {}
    for k in np.unique(classes):
        found = np.unique(tile[classes == k], axis=0)
        assert len(found) == 1, f"class {k} has {len(found)} colours"
        colours[int(k)] = tuple(int(v) for v in found[0])
    return colours


def test_contact_sheet_grid_of_label_real_and_samples(tmp_path, nifti_label):
    label, _ = nifti_label
    pred = _samples((3, 12, 16), spread=0.2)  # a narrow range: per-image stretching would show
    real = _samples((1, 12, 16), seed=5)
    out = SaveContactSheetd("image", "pred", str(tmp_path / "out"), num_samples=3, real_key="real", max_columns=2)(
        {"image": label, "pred": torch.from_numpy(pred), "real": real}
    )
    assert out["pred_sheet_path"] == str(tmp_path / "out" / "case_samples.png")
    with Image.open(out["pred_sheet_path"]) as written:
        assert written.mode == "RGB"
        sheet = np.array(written)
    assert sheet.shape == (3 * 12, 2 * 16, 3)  # 5 tiles in rows of 2
    classes = label[0].numpy().astype(int)
    colours = _colours_of(_tile(sheet, 0, (12, 16), 2), classes)
    assert colours[0] == (0, 0, 0)
    assert len(set(colours.values())) == len(colours)
    np.testing.assert_array_equal(_tile(sheet, 1, (12, 16), 2), np.repeat(_to_255(real[0])[..., None], 3, -1))
    for k in range(3):
        tile = _tile(sheet, 2 + k, (12, 16), 2)
        np.testing.assert_array_equal(tile, np.repeat(_to_255(pred[k])[..., None], 3, -1))
    assert (_tile(sheet, 5, (12, 16), 2) == 0).all()  # the empty cell
    assert _files(tmp_path / "out") == ["case_samples.png"]


def test_contact_sheet_class_colours_are_fixed_and_distinct(tmp_path):
    many = torch.arange(150).reshape(1, 10, 15)  # 150 classes, background included
    sheet_of = SaveContactSheetd("label", "pred", str(tmp_path), source_key="name")
    first = np.array(Image.open(sheet_of({"label": many, "pred": torch.zeros(1, 10, 15)})["pred_sheet_path"]))
    colours = _colours_of(first[:, :15], many[0].numpy())
    assert colours[0] == (0, 0, 0) and len(set(colours.values())) == 150
    shuffled = many.flatten()[torch.randperm(150, generator=torch.Generator().manual_seed(0))].reshape(1, 10, 15) % 7
    one_hot = torch.nn.functional.one_hot(shuffled[0], 7).permute(2, 0, 1)
    for label in (shuffled, one_hot):  # other layout, fewer classes, or one-hot: the same colour per class
        second = np.array(Image.open(sheet_of({"label": label, "pred": torch.zeros(1, 10, 15)})["pred_sheet_path"]))
        assert _colours_of(second[:, :15], shuffled[0].numpy()) == {k: colours[k] for k in range(7)}
    with pytest.raises(ValueError, match=r"'label' must hold integer classes 0 \.\. N .* got the value 1\.5"):
        sheet_of({"label": torch.full((1, 10, 15), 1.5), "pred": torch.zeros(1, 10, 15)})


def test_contact_sheet_of_a_picture_is_oriented_as_the_picture(tmp_path, png_label):
    label, picture = png_label
    pred = _samples((2, 30, 20))
    out = SaveContactSheetd("image", "pred", str(tmp_path / "out"), num_samples=2, real_key="real")(
        {"image": label, "pred": pred}  # no real image in this item: skipped
    )
    assert out["pred_sheet_path"] == str(tmp_path / "out" / "case_01_samples.png")
    with Image.open(out["pred_sheet_path"]) as written:
        assert written.size == (3 * 30, 20)  # three tiles as wide and high as the source picture
        sheet = np.array(written)
    colours = _colours_of(sheet[:, :30], picture)
    assert colours[0] == (0, 0, 0) and len(set(colours.values())) == 4
    for k in range(2):
        np.testing.assert_array_equal(sheet[:, 30 * (k + 1) : 30 * (k + 2), 0], _to_255(pred[k]).T)


def test_contact_sheet_bad_input_rejected(tmp_path, nifti_label):
    label, _ = nifti_label
    sheet = SaveContactSheetd("image", "pred", str(tmp_path / "out"), num_samples=2, real_key="real")
    with pytest.raises(ValueError, match=r"'pred' has 3 channels, not a multiple of num_samples=2"):
        sheet({"image": label, "pred": torch.zeros(3, 12, 16)})
    with pytest.raises(ValueError, match=r"'real' \[1, 16, 12\] must be channel-first with the spatial shape"):
        sheet({"image": label, "pred": torch.zeros(2, 12, 16), "real": torch.zeros(1, 16, 12)})
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="max_columns must be an integer >= 1"):
        SaveContactSheetd("image", "pred", str(tmp_path), max_columns=0)
