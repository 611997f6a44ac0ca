"""``tools.segment_folder``: a folder of PNG, NIfTI and DICOM inputs segmented by a bundle, resumable, inputs kept.

The end-to-end run uses the Post-DAE bundle (its tiny model trains in seconds; its inputs are masks, which PNG,
NIfTI and DICOM all hold); the error cases need no trained model and call the command line in-process.
"""

from __future__ import annotations

import hashlib
import logging
import re
import subprocess
import sys
from pathlib import Path

import itk
import nibabel as nib
import numpy as np
import pytest
from monai.transforms import LoadImage
from PIL import Image

from tests.conftest import REPO_ROOT, cli_args, overrides_of, train_tiny
from tools import segment_folder

E2E_BUNDLE = "postdae_mask_refinement"


def mask(height: int = 48, width: int = 40) -> np.ndarray:
    """A binary 0/255 mask with one rectangle."""
    m = np.zeros((height, width), np.uint8)
    m[10:30, 8:28] = 255
    return m


def write_dicom_series(folder: Path, volume: np.ndarray) -> None:
    """Write ``volume`` (slices, rows, columns) as a DICOM series of one file per slice, with GDCM through itk."""
    folder.mkdir(parents=True)
    image = itk.image_from_array(volume.astype(np.int16))
    image.SetSpacing([0.5, 0.7, 2.0])
    writer = itk.ImageSeriesWriter[itk.Image[itk.SS, 3], itk.Image[itk.SS, 2]].New()
    writer.SetInput(image)
    writer.SetImageIO(itk.GDCMImageIO.New())
    writer.SetFileNames([str(folder / f"slice{i:03d}.dcm") for i in range(volume.shape[0])])
    writer.Update()


def fingerprint(folder: Path) -> dict[str, str]:
    """sha256 of every file below ``folder``, by relative path."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def run_tool(bundle: Path, inputs: Path, outputs: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "tools.segment_folder", f"--bundle={bundle}", f"--input_dir={inputs}"]
    cmd += [f"--output_dir={outputs}", *extra]
    return subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)


def run_main(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, *args: str) -> str:
    """Run the command line in-process; it must exit with status 1. Return what it logged."""
    monkeypatch.setattr(sys, "argv", ["segment_folder", *args])
    with caplog.at_level(logging.INFO), pytest.raises(SystemExit) as exit_info:
        segment_folder.main()
    assert exit_info.value.code == 1
    return caplog.text


@pytest.fixture(scope="module")
def trained(bundle_copy: Path) -> Path:
    return train_tiny(bundle_copy)


@pytest.mark.slow
@pytest.mark.parametrize("bundle_copy", [E2E_BUNDLE], indirect=True)
def test_segments_a_folder_and_resumes(trained: Path, tmp_path: Path) -> None:
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    (inputs / "sub").mkdir(parents=True)
    Image.fromarray(mask()).save(inputs / "a.png")
    Image.fromarray(mask()).save(inputs / "sub" / "a.png")  # same name, other sub-folder: must not collide
    affine = np.diag([0.8, 0.9, 1.0, 1.0])
    nib.save(nib.Nifti1Image((mask() > 0).astype(np.uint8), affine), inputs / "sub" / "b.nii.gz")
    write_dicom_series(inputs / "patient" / "series", (mask()[None] > 0))
    (inputs / "notes.txt").write_text("not an image")
    series = LoadImage(image_only=True)(str(inputs / "patient" / "series"))
    assert series.shape == (40, 48, 1), "the DICOM writer or reader changed: the test input is not a 1-slice series"
    before = fingerprint(inputs)

    first = run_tool(trained, inputs, outputs, *cli_args(overrides_of(E2E_BUNDLE)["train"]))
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert re.search(r"segmenting: 100%.*4/4", first.stderr), "no progress bar over the 4 cases"
    written = {p.relative_to(outputs).as_posix() for p in outputs.rglob("*") if p.is_file()}
    assert written == {
        "segment_folder.json",
        "a_refined.png",
        "a_overlay.png",
        "sub/a_refined.png",
        "sub/a_overlay.png",
        "sub/b_refined.nii.gz",
        "sub/b_overlay.png",
        "patient/series_refined.nii.gz",
        "patient/series_overlay.png",
    }
    assert np.asarray(Image.open(outputs / "a_refined.png")).shape == mask().shape
    nifti = nib.load(outputs / "sub" / "b_refined.nii.gz")
    assert nifti.shape == (48, 40) and np.allclose(nifti.affine, affine)
    dicom_mask = nib.load(outputs / "patient" / "series_refined.nii.gz")
    assert dicom_mask.shape == series.shape[:2]
    assert np.allclose(dicom_mask.affine, series.affine.numpy(), atol=1e-6), "the mask is not on the series' grid"
    assert set(np.unique(dicom_mask.get_fdata())) <= {0.0, 1.0}
    assert fingerprint(inputs) == before, "the inputs were changed"

    # a rerun skips the finished cases; new inputs are segmented; bad ones are named, with exit status 1
    done = fingerprint(outputs)
    Image.fromarray(mask()).save(inputs / "c.png")
    Image.fromarray(mask()).save(inputs / "mine.png")
    Image.fromarray(mask()).save(outputs / "mine_refined.png")  # a file of the user's where an output would go
    (inputs / "broken.png").write_bytes(b"not a png")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 5), np.uint8), np.eye(4)), inputs / "volume.nii.gz")
    before = fingerprint(inputs)
    second = run_tool(trained, inputs, outputs, *cli_args(overrides_of(E2E_BUNDLE)["train"]))
    log = second.stdout + second.stderr
    assert second.returncode == 1, log[-3000:]
    assert "1 cases written, 4 skipped" in log
    assert f"{inputs / 'broken.png'}: cannot be read" in log
    assert f"{inputs / 'volume.nii.gz'}:" in log and "takes 2D images" in log
    assert f"{outputs / 'mine_refined.png'} exists and is not its own" in log
    assert (outputs / "c_refined.png").is_file()
    assert all(fingerprint(outputs)[k] == v for k, v in done.items() if k != "segment_folder.json")
    assert np.array_equal(np.asarray(Image.open(outputs / "mine_refined.png")), mask()), "a user's file was replaced"
    assert fingerprint(inputs) == before
    assert not (outputs / segment_folder.SCRATCH_NAME).exists()


def placeholder_weights(bundle: Path) -> Path:
    """An (untrained) ``models/model.pt``: the checks under test come before any weights are loaded."""
    (bundle / "models" / "model.pt").write_bytes(b"")
    return bundle


def pngs(folder: Path, image: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(folder / "x.png")
    return folder


@pytest.mark.parametrize("bundle_copy", ["gms_latent_segmentation"], indirect=True)
def test_folder_errors(
    bundle_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    inputs, outputs = pngs(tmp_path / "in", mask()), tmp_path / "out"
    log = run_main(monkeypatch, caplog, f"--bundle={bundle_copy}", f"--input_dir={inputs}", f"--output_dir={outputs}")
    assert f"{bundle_copy / 'models' / 'model.pt'}" in log and "train it first" in log
    placeholder_weights(bundle_copy)
    missing = tmp_path / "nowhere"
    log = run_main(monkeypatch, caplog, f"--bundle={bundle_copy}", f"--input_dir={missing}", f"--output_dir={outputs}")
    assert f"input_dir {missing} does not exist" in log
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no image")
    log = run_main(monkeypatch, caplog, f"--bundle={bundle_copy}", f"--input_dir={empty}", f"--output_dir={outputs}")
    assert f"input_dir {empty} holds no images" in log
    inside = inputs / "masks"
    log = run_main(monkeypatch, caplog, f"--bundle={bundle_copy}", f"--input_dir={inputs}", f"--output_dir={inside}")
    assert "must lie outside input_dir" in log and not inside.exists()
    no_config = tmp_path / "half_bundle"
    (no_config / "configs").mkdir(parents=True)
    (no_config / "configs" / "metadata.json").write_text("{}")
    log = run_main(monkeypatch, caplog, f"--bundle={no_config}", f"--input_dir={inputs}", f"--output_dir={outputs}")
    assert f"has no inference config {no_config / 'configs' / 'inference.json'}" in log
    assert not outputs.exists()


@pytest.mark.parametrize("bundle_copy", ["ct_label_to_image_synthesis"], indirect=True)
def test_generator_bundle_is_refused(
    bundle_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    inputs = pngs(tmp_path / "in", mask())
    args = [f"--bundle={placeholder_weights(bundle_copy)}", f"--input_dir={inputs}", f"--output_dir={tmp_path / 'o'}"]
    assert "is not a segmentation bundle" in run_main(monkeypatch, caplog, *args)


@pytest.mark.parametrize("bundle_copy", ["brats_mri_ddpm_fewshot_segmentation"], indirect=True)
def test_input_that_does_not_fit_is_named(
    bundle_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    inputs = pngs(tmp_path / "in", mask())  # grey; the BraTS bundle takes 4 MR contrasts, channel last
    args = [f"--bundle={placeholder_weights(bundle_copy)}", f"--input_dir={inputs}", f"--output_dir={tmp_path / 'o'}"]
    log = run_main(monkeypatch, caplog, *args)
    assert f"{inputs / 'x.png'}: cannot be read, or does not fit the bundle" in log
    assert "4 channel(s) (config key image_channels, channel axis -1)" in log
    assert "1 cases failed" in log
