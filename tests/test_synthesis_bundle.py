"""The label-to-image synthesis bundle beyond the generic bundle tests: bad input through its configs, its outputs."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow
from PIL import Image

from common import metrics_synthesis
from common.data import ct_slice
from tests.conftest import BUNDLES_DIR, REPO_ROOT, bundle_workflow, error_text

BUNDLE = BUNDLES_DIR / "ct_label_to_image_synthesis"
SPEC = json.loads((REPO_ROOT / "tests" / "bundle_overrides" / "ct_label_to_image_synthesis.json").read_text())
TINY = {**SPEC["train"], "max_epochs": 1}


def workflow(root: Path, configs: list[str], workflow_type: str = "train", **overrides: object) -> ConfigWorkflow:
    return bundle_workflow(BUNDLE, root, configs, workflow_type, **{**TINY, **overrides})


def run(root: Path, configs: list[str], workflow_type: str = "train", **overrides: object) -> ConfigWorkflow:
    wf = workflow(root, configs, workflow_type, **overrides)
    wf.run()
    wf.finalize()
    return wf


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle folder with a tiny generator trained for one epoch on the synthetic CT slices."""
    root = tmp_path_factory.mktemp("synthesis") / "bundle"
    run(root, ["train.json"])
    return root


def write_pairs(folder: Path, labels: list[np.ndarray], images: list[np.ndarray] | None = None) -> dict[str, str]:
    """NIfTI image/label slices, every pair in every section; returns the config overrides that point at them."""
    for sub in ("images", "labels"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    entries = []
    for i, label in enumerate(labels):
        image = images[i] if images is not None else np.clip((ct_slice(label.shape[0], i)[0][0] + 1000) / 2000, 0, 1)
        nib.save(nib.Nifti1Image(image.astype(np.float32), np.eye(4)), str(folder / "images" / f"s{i}.nii.gz"))
        nib.save(nib.Nifti1Image(label, np.eye(4)), str(folder / "labels" / f"s{i}.nii.gz"))
        entries.append({"image": f"images/s{i}.nii.gz", "label": f"labels/s{i}.nii.gz"})
    (folder / "datalist.json").write_text(json.dumps({"training": entries, "validation": entries, "test": entries}))
    return {"dataset_dir": str(folder), "datalist": str(folder / "datalist.json")}


def organ_labels(size: int = 40, top: int = 3) -> np.ndarray:
    label = np.zeros((size, size), np.uint8)
    label[5:15, 5:15] = 1
    label[20:30, 20:30] = top
    return label


def test_a_label_map_with_more_classes_than_configured_names_file_and_key(tmp_path: Path) -> None:
    data = write_pairs(tmp_path / "data", [organ_labels(top=9), organ_labels()])
    with pytest.raises(Exception) as error:
        run(tmp_path / "bundle", ["train.json"], **data)
    text = error_text(error.value)
    assert "s0.nii.gz" in text and "num_classes" in text and "9" in text


def test_a_non_integer_label_map_names_the_file(tmp_path: Path) -> None:
    soft = organ_labels().astype(np.float32)
    soft[0, 0] = 0.5  # e.g. a label map resized with linear interpolation, the seed's bug
    data = write_pairs(tmp_path / "data", [organ_labels(), soft])
    with pytest.raises(Exception) as error:
        run(tmp_path / "bundle", ["train.json"], **data)
    text = error_text(error.value)
    assert "s1.nii.gz" in text and "integer labels" in text and "0.5" in text


def test_an_image_label_shape_mismatch_names_both_files(tmp_path: Path) -> None:
    data = write_pairs(tmp_path / "data", [organ_labels(), organ_labels()], [np.zeros((40, 40)), np.zeros((40, 36))])
    with pytest.raises(Exception) as error:
        run(tmp_path / "bundle", ["train.json"], **data)
    text = error_text(error.value)
    assert "images/s1.nii.gz" in text and "labels/s1.nii.gz" in text and "same size" in text


def test_inference_on_a_label_map_with_too_many_classes_names_it(trained: Path, tmp_path: Path) -> None:
    folder = tmp_path / "maps"
    folder.mkdir()
    nib.save(nib.Nifti1Image(organ_labels(top=12), np.eye(4)), str(folder / "map.nii.gz"))
    with pytest.raises(Exception) as error:
        run(trained, ["inference.json"], "infer", dataset_dir=str(folder), output_dir=str(tmp_path / "out"))
    text = error_text(error.value)
    assert "map.nii.gz" in text and "num_classes" in text


def test_missing_fid_and_lpips_weights_warn_once_and_skip(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics_synthesis, "_WARNED", set())  # "once per run": forget this process's earlier runs
    missing = str(tmp_path / "pt_inception-2015-12-05-6726825d.pth")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(trained, ["train.json", "evaluate.json"], fid_weights=missing, output_dir=str(tmp_path / "eval"))
    messages = [str(w.message) for w in caught if "skipped" in str(w.message)]
    fid = [m for m in messages if "fid_weights" in m]
    assert len(fid) == 1 and missing in fid[0], messages
    assert sum("lpips_backbone_weights" in m for m in messages) == 1
    metrics = (tmp_path / "eval" / "evaluation" / "metrics.csv").read_text()
    assert "val_ssim" in metrics and "fid" not in metrics and "lpips" not in metrics


def test_inference_writes_k_distinct_reproducible_pngs_for_png_maps(trained: Path, tmp_path: Path) -> None:
    """PNG label maps in, PNG images out, at the map's own size; the same noise seed gives the same images."""
    folder = tmp_path / "maps"
    folder.mkdir()
    Image.fromarray(organ_labels(48)).save(folder / "map.png")
    outputs = []
    for name in ("a", "b"):
        run(trained, ["inference.json"], "infer", dataset_dir=str(folder), output_dir=str(tmp_path / name))
        outputs.append([np.asarray(Image.open(tmp_path / name / f"map_synth_{k}.png")) for k in (1, 2)])
        assert (tmp_path / name / "map_samples.png").is_file()
    first, second = outputs
    assert first[0].shape == (48, 48) and first[0].dtype == np.uint8
    np.testing.assert_array_equal(first[0], second[0])
    assert not np.array_equal(first[0], first[1]), "two noise vectors gave the same image"
    assert [p.name for p in folder.iterdir()] == ["map.png"], "inference wrote into the input folder"


def test_exported_generator_matches_training_ema_weights(trained: Path) -> None:
    """inference.json's plain-convolution generator loads the spectrally normalised EMA checkpoint unchanged."""
    train_net = workflow(trained, ["train.json"]).parser.get_parsed_content("ema_generator")
    state = torch.load(trained / "models" / "model.pt", map_location="cpu", weights_only=True)
    state = state.get("model", state)  # ignite saves a one-object checkpoint as that object's state dict
    train_net.load_state_dict(state)
    infer_net = workflow(trained, ["inference.json"], "infer").parser.get_parsed_content("network_def")
    infer_net.load_state_dict(state)
    label = torch.zeros(1, 7, 32, 32)  # the default six organs and background
    label[:, 0] = 1
    z = torch.randn(1, TINY["z_dim"])
    with torch.no_grad():
        torch.testing.assert_close(infer_net.eval()(label, z), train_net.eval()(label, z))


def test_flags_given_as_command_line_strings(tmp_path: Path) -> None:
    """``--wavelet_discriminator false`` arrives as the string 'false': it must switch the critic off, not on."""
    parser = workflow(tmp_path / "bundle", ["train.json"], wavelet_discriminator="false").parser
    assert parser.get_parsed_content("wavelet_critic") is None
    assert parser.get_parsed_content("wavelet_optimizer") is None
    with pytest.raises(Exception) as error:
        workflow(tmp_path / "bundle", ["train.json"], ignore_background="maybe").parser.get_parsed_content(
            "train#trainer"
        )
    assert "ignore_background" in error_text(error.value)
