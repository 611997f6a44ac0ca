"""Tests of the patient use case: ``common.data.volume_slices`` and the bundle overlay ``segment_volume.json``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from common.data import BRATS_MODALITIES, assemble_volume, brain_volume, brats_slice, write_volume_slices
from common.data.brats import remap_brats_labels, restore_brats_labels
from common.data.volume_slices import volume_inputs
from tests.conftest import REPO_ROOT, bundle_workflow

BUNDLE = "brats_mri_ddpm_fewshot_segmentation"
AFFINE = np.array([[-0.9, 0.0, 0.0, 100.0], [0.0, -1.1, 0.0, 120.0], [0.0, 0.0, 2.0, -30.0], [0.0, 0.0, 0.0, 1.0]])


def _volume(shape: tuple[int, int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """``brain_volume`` and three of its tumour slices (the annotated ones of the tests)."""
    volumes, seg = brain_volume(shape, seed)
    tumour = np.flatnonzero(np.any(seg != 0, axis=(0, 1)))
    return volumes, seg, [int(tumour[i]) for i in (1, len(tumour) // 2, len(tumour) - 2)]


def _partial(seg: np.ndarray, annotated: list[int], path: Path) -> Path:
    """Write ``seg`` with only the ``annotated`` slices kept."""
    partial = np.zeros_like(seg)
    partial[..., annotated] = seg[..., annotated]
    nib.save(nib.Nifti1Image(partial, AFFINE), str(path))
    return path


def _nifti4d(folder: Path, shape: tuple[int, int, int], seed: int = 0) -> tuple[Path, Path, np.ndarray, list[int]]:
    """A 4D NIfTI ``(H, W, D, 4)`` image and its partial label; returns them, the full seg and the annotated slices."""
    volumes, seg, annotated = _volume(shape, seed)
    image = folder / "patient.nii.gz"
    nib.save(nib.Nifti1Image(np.moveaxis(volumes, 0, -1), AFFINE), str(image))
    return image, _partial(seg, annotated, folder / "patient_partial.nii.gz"), seg, annotated


def _case(folder: Path, shape: tuple[int, int, int], name: str = "BraTS2021_00042") -> tuple[Path, Path, list[int]]:
    """A BraTS case folder without ``seg`` and a partial label beside it."""
    volumes, seg, annotated = _volume(shape)
    case = folder / name
    case.mkdir()
    for key, array in zip(BRATS_MODALITIES, volumes, strict=True):
        nib.save(nib.Nifti1Image(array, AFFINE), str(case / f"{name}_{key}.nii.gz"))
    return case, _partial(seg, annotated, folder / "partial.nii.gz"), annotated


def _truth_predictions(image: Path, seg: np.ndarray, size: int) -> list[np.ndarray]:
    """Perfect slice predictions: every slice's full label as ``brats_slice`` gives it."""
    volumes = np.moveaxis(np.asarray(nib.load(image).dataobj), -1, 0)
    return [brats_slice(volumes, seg, i, size)[1] for i in range(seg.shape[-1])]


# --------------------------------------------------------------------------------------------------------------------
# write_volume_slices


def test_case_folder_slices_and_datalist(tmp_path):
    case, label, annotated = _case(tmp_path, (40, 48, 16))
    out = tmp_path / "slices"
    datalist = write_volume_slices(case, label, out, size=32)
    assert [e["slice_index"] for e in datalist["training"]] == annotated  # the slices with foreground
    assert [e["slice_index"] for e in datalist["test"]] == list(range(16))
    assert datalist["validation"] == [] and all(set(e) == {"image", "slice_index"} for e in datalist["test"])
    on_disk = json.loads((out / "datalist.json").read_text())
    assert on_disk["training"][0]["image"] == f"images/{case.name}_s{annotated[0]:03d}.nii.gz"
    assert on_disk["training"][0]["label"] == f"labels/{case.name}_s{annotated[0]:03d}.nii.gz"
    assert sorted(p.name for p in (out / "labels").iterdir()) == [f"{case.name}_s{i:03d}.nii.gz" for i in annotated]
    first = datalist["training"][0]
    assert Path(first["image"]).is_absolute() and Path(first["image"]).is_file()
    image, label_slice = nib.load(first["image"]), nib.load(first["label"])
    assert image.shape == (32, 32, 4) and image.get_data_dtype() == np.float32
    assert label_slice.shape == (32, 32) and label_slice.get_data_dtype() == np.uint8
    volumes = np.stack([np.asarray(nib.load(case / f"{case.name}_{k}.nii.gz").dataobj) for k in BRATS_MODALITIES])
    expected_image, expected_label = brats_slice(volumes, np.asarray(nib.load(label).dataobj), annotated[0], 32)
    np.testing.assert_allclose(np.moveaxis(np.asarray(image.dataobj), -1, 0), expected_image, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(label_slice.dataobj), expected_label)


def test_explicit_slices_include_an_all_background_annotation(tmp_path, caplog):
    image, label, _, annotated = _nifti4d(tmp_path, (32, 32, 16))
    with caplog.at_level(logging.WARNING):
        datalist = write_volume_slices(image, label, tmp_path / "slices", labelled_slices=[0, annotated[1]], size=32)
    assert [e["slice_index"] for e in datalist["training"]] == [0, annotated[1]]
    assert not np.asarray(nib.load(datalist["training"][0]["label"]).dataobj).any()  # slice 0 is all background
    assert "not in labelled_slices" in caplog.text  # the other annotated slices are left out, and the log says so


# --------------------------------------------------------------------------------------------------------------------
# assemble_volume


def test_round_trip_exact_on_an_integer_resize(tmp_path):
    image, label, seg, annotated = _nifti4d(tmp_path, (32, 32, 16))
    datalist = write_volume_slices(image, label, tmp_path / "slices", size=64)
    out = assemble_volume(_truth_predictions(image, seg, 64), image, tmp_path / "out" / "seg.nii.gz", label, annotated)
    written = nib.load(out)
    assert written.shape == (32, 32, 16) and written.get_data_dtype() == np.uint8
    np.testing.assert_allclose(written.affine, AFFINE)
    np.testing.assert_array_equal(np.asarray(written.dataobj), seg)  # back to raw BraTS labels on the input grid
    assert len(datalist["test"]) == 16


def test_round_trip_non_square_case_keeps_shape_affine_and_header(tmp_path):
    case, _, _ = _case(tmp_path, (40, 48, 16))
    predictions = [np.full((32, 32), 3, np.uint8) for _ in range(16)]
    out = assemble_volume(predictions, case, tmp_path / "out" / "seg.nii.gz")
    written, reference = nib.load(out), nib.load(case / f"{case.name}_t1.nii.gz")
    assert written.shape == (40, 48, 16)
    np.testing.assert_allclose(written.affine, reference.affine)
    np.testing.assert_allclose(written.header.get_zooms(), reference.header.get_zooms())
    data = np.asarray(written.dataobj)
    # 48 wide resized to 38 and cropped to 32: the columns the crop dropped are background, the rest enhancing (4)
    assert set(np.unique(data)) == {0, 4} and (data[:, 24] == 4).all() and (data[:, 0] == 0).all()


def test_annotated_slices_copied_unchanged(tmp_path):
    image, label, _, annotated = _nifti4d(tmp_path, (32, 32, 16))
    partial = np.asarray(nib.load(label).dataobj)
    out = assemble_volume([np.zeros((32, 32), np.uint8)] * 16, image, tmp_path / "seg.nii.gz", label, annotated)
    data = np.asarray(nib.load(out).dataobj)
    np.testing.assert_array_equal(data[..., annotated], partial[..., annotated])
    assert not np.delete(data, annotated, axis=-1).any()


def test_label_remap_round_trip():
    raw = np.array([[0, 1, 2, 4], [4, 2, 1, 0]], dtype=np.int16)
    np.testing.assert_array_equal(restore_brats_labels(remap_brats_labels(raw, "x"), "x"), raw)
    np.testing.assert_array_equal(restore_brats_labels(np.arange(4), "x"), [0, 2, 1, 4])  # edema, necrotic, enhancing
    with pytest.raises(ValueError, match=r"slice 3: values \{4\}"):
        restore_brats_labels(np.array([0, 4]), "slice 3")


# --------------------------------------------------------------------------------------------------------------------
# bad inputs


def test_missing_files_are_named(tmp_path):
    image, label, _, _ = _nifti4d(tmp_path, (32, 32, 16))
    with pytest.raises(FileNotFoundError, match=r"volume_image .*nope\.nii\.gz"):
        write_volume_slices(tmp_path / "nope.nii.gz", label, tmp_path / "a")
    with pytest.raises(FileNotFoundError, match=r"volume_label .*nope\.nii\.gz"):
        write_volume_slices(image, tmp_path / "nope.nii.gz", tmp_path / "a")
    case, case_label, _ = _case(tmp_path, (32, 32, 16))
    (case / f"{case.name}_t2.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=rf"volume_image: .*{case.name}_t2\.nii\.gz"):
        write_volume_slices(case, case_label, tmp_path / "b")


def test_shape_mismatch_names_both(tmp_path):
    image, _, _, _ = _nifti4d(tmp_path, (32, 32, 16))
    other = tmp_path / "other.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 18), np.uint8), AFFINE), str(other))
    with pytest.raises(ValueError, match=r"volume_label .*\(32, 32, 18\).*volume_image .*\(32, 32, 16\)"):
        write_volume_slices(image, other, tmp_path / "a")
    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 16), np.float32), AFFINE), str(flat))
    with pytest.raises(ValueError, match=r"volume_image .*flat\.nii\.gz.*\(H, W, D, 4\)"):
        write_volume_slices(flat, other, tmp_path / "a")


def test_bad_labelled_slices(tmp_path):
    image, label, _, _ = _nifti4d(tmp_path, (32, 32, 16))
    with pytest.raises(ValueError, match=r"labelled_slices: 16 .*depth 16"):
        write_volume_slices(image, label, tmp_path / "a", labelled_slices=[3, 16])
    with pytest.raises(ValueError, match="labelled_slices is empty"):
        write_volume_slices(image, label, tmp_path / "a", labelled_slices=[])
    empty = tmp_path / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 16), np.uint8), AFFINE), str(empty))
    with pytest.raises(ValueError, match=r"no foreground.*labelled_slices"):
        write_volume_slices(image, empty, tmp_path / "a")
    bad = tmp_path / "bad.nii.gz"
    nib.save(nib.Nifti1Image(np.full((32, 32, 16), 3, np.uint8), AFFINE), str(bad))
    with pytest.raises(ValueError, match=r"volume_label .*bad\.nii\.gz, slice 0.*\{3\}"):
        write_volume_slices(image, bad, tmp_path / "a")
    assert not (tmp_path / "a" / "datalist.json").exists()


def test_output_guards(tmp_path):
    image, label, _, annotated = _nifti4d(tmp_path, (32, 32, 16))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a folder of volume slices"):
        write_volume_slices(image, label, foreign)
    with pytest.raises(ValueError, match=r"volume_output .*is an input file"):
        assemble_volume([np.zeros((32, 32), np.uint8)] * 16, image, label, label, annotated)
    with pytest.raises(ValueError, match=r"15 slice predictions .* of 16 slices"):
        assemble_volume([np.zeros((32, 32), np.uint8)] * 15, image, tmp_path / "seg.nii.gz")
    with pytest.raises(ValueError, match="volume_image is empty"):
        volume_inputs("", str(label), str(tmp_path / "work"))
    with pytest.raises(ValueError, match="volume_label is empty"):
        volume_inputs(str(image), "", str(tmp_path / "work"))


def test_volume_inputs_synthetic_and_work_dir_per_input(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        first = volume_inputs("", "", str(tmp_path / "work"), size=32, synthetic_shape=(32, 32, 16))
    assert "synthetic" in caplog.text and Path(first["image"]).is_dir()
    partial = np.asarray(nib.load(first["label"]).dataobj)
    assert int(np.any(partial != 0, axis=(0, 1)).sum()) == 3  # only 3 slices annotated
    assert volume_inputs("", "", str(tmp_path / "work"), size=32, synthetic_shape=(32, 32, 16)) == first  # reused
    assert volume_inputs("", "", str(tmp_path / "work"), size=64, synthetic_shape=(32, 32, 16)) != first
    image, label, _, _ = _nifti4d(tmp_path, (32, 32, 16))
    other = volume_inputs(str(image), str(label), str(tmp_path / "work"), size=32)
    assert other["name"] == "patient" and Path(other["work_dir"]).parent == Path(first["work_dir"]).parent
    assert other["work_dir"] != first["work_dir"]


# --------------------------------------------------------------------------------------------------------------------
# the overlay, end to end


@pytest.mark.slow
@pytest.mark.parametrize("bundle_copy", [BUNDLE], indirect=True)
def test_segment_volume_overlay_end_to_end(bundle_copy, caplog):
    spec = json.loads((REPO_ROOT / "tests" / "bundle_overrides" / f"{BUNDLE}.json").read_text())
    tiny = {**spec["train"], "max_epochs": 1}
    pretrain_args = {**tiny, **spec["pretrain"]["args"]}
    bundle_workflow(bundle_copy, bundle_copy, spec["pretrain"]["configs"], "train", **pretrain_args).run()
    with caplog.at_level(logging.WARNING):
        wf = bundle_workflow(
            bundle_copy,
            bundle_copy,
            ["train.json", "segment_volume.json"],
            "train",
            **tiny,
            volume_synthetic_shape=[32, 32, 16],
        )
        wf.run()
    assert "synthetic BraTS-layout case" in caplog.text
    inputs = wf.parser.get_parsed_content("volume_inputs")
    output = Path(wf.parser.get_parsed_content("volume_output"))
    assert output == bundle_copy / "eval" / "volume" / f"{inputs['name']}_seg.nii.gz"
    written = nib.load(output)
    reference = nib.load(Path(inputs["image"]) / f"{inputs['name']}_t1.nii.gz")
    assert written.shape == reference.shape == (32, 32, 16)
    np.testing.assert_allclose(written.affine, reference.affine)
    data, partial = np.asarray(written.dataobj), np.asarray(nib.load(inputs["label"]).dataobj)
    assert set(np.unique(data)) <= {0, 1, 2, 4}
    annotated = np.flatnonzero(np.any(partial != 0, axis=(0, 1)))
    np.testing.assert_array_equal(data[..., annotated], partial[..., annotated])
    models = bundle_copy / "models"
    assert (models / "volume" / "model_final.pt").is_file() and not (models / "model.pt").exists()
