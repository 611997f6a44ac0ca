"""The BraTS DDPM few-shot bundle beyond the generic bundle tests: bad input through its configs, and its outputs."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow

from common.data import brain_slice
from tests.conftest import BUNDLES_DIR, REPO_ROOT, bundle_workflow, error_text

BUNDLE = BUNDLES_DIR / "brats_mri_ddpm_fewshot_segmentation"
SPEC = json.loads((REPO_ROOT / "tests" / "bundle_overrides" / "brats_mri_ddpm_fewshot_segmentation.json").read_text())
TINY = {**SPEC["train"], "max_epochs": 1}


def workflow(root: Path, configs: list[str], workflow_type: str = "train", **overrides: object) -> ConfigWorkflow:
    return bundle_workflow(BUNDLE, root, configs, workflow_type, **{**TINY, **overrides})


def run(root: Path, configs: list[str], **overrides: object) -> ConfigWorkflow:
    wf = workflow(root, configs, **overrides)
    wf.run()
    wf.finalize()
    return wf


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle folder with a tiny DDPM pre-trained for one epoch on the synthetic slices."""
    root = tmp_path_factory.mktemp("brats") / "bundle"
    run(root, ["train.json", "train_ddpm.json"], ddpm_max_epochs=1, ddpm_batch_size=4)
    return root


def write_slices(folder: Path, labels: list[np.ndarray], channels: int = 4) -> dict[str, str]:
    """NIfTI slices (H, W, channels) with the given label maps, every one in every section; the config overrides."""
    for sub in ("images", "labels"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    entries = []
    for i, label in enumerate(labels):
        image, _ = brain_slice(label.shape[0], rng=i)
        image = np.moveaxis(image[:channels], 0, -1)
        nib.save(nib.Nifti1Image(image, np.eye(4)), str(folder / "images" / f"s{i}.nii.gz"))
        nib.save(nib.Nifti1Image(label.astype(np.uint8), np.eye(4)), str(folder / "labels" / f"s{i}.nii.gz"))
        entries.append({"image": f"images/s{i}.nii.gz", "label": f"labels/s{i}.nii.gz"})
    datalist = {"training": entries, "validation": entries, "test": entries, "unlabelled": entries}
    (folder / "datalist.json").write_text(json.dumps(datalist))
    return {"dataset_dir": str(folder), "datalist": str(folder / "datalist.json")}


def test_pixel_training_without_a_ddpm_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(Exception) as error:
        run(tmp_path / "bundle", ["train.json"])
    text = error_text(error.value)
    assert "ddpm.pt" in text and "ddpm_path" in text


def test_a_feature_block_outside_the_decoder_names_the_key(pretrained: Path) -> None:
    with pytest.raises(Exception) as error:
        workflow(pretrained, ["train.json"], feature_blocks=[2, 99]).parser.get_parsed_content("network_def")
    text = error_text(error.value)
    assert "feature_blocks" in text and "99" in text and "0..5" in text


def test_a_ddpm_of_other_widths_names_the_weight_and_shapes(pretrained: Path, tmp_path: Path) -> None:
    with pytest.raises(Exception) as error:
        run(pretrained, ["train.json"], ddpm_channels=[8, 8, 32], output_dir=str(tmp_path / "eval"))
    text = error_text(error.value)
    assert "ddpm_path" in text and "shape" in text


def test_raw_brats_labels_are_named_with_the_file(pretrained: Path, tmp_path: Path) -> None:
    label = np.zeros((32, 32))
    label[10:20, 10:20] = 4  # enhancing tumour in BraTS' raw values: the slices must be prepared (remapped) first
    data = write_slices(tmp_path / "data", [label])
    with pytest.raises(Exception) as error:
        workflow(pretrained, ["train.json"], **data).parser.get_parsed_content("train#feature_store").build()
    text = error_text(error.value)
    assert "s0.nii.gz" in text and "'num_classes'" in text and "4" in text


def test_images_with_other_contrast_counts_are_named(pretrained: Path, tmp_path: Path) -> None:
    data = write_slices(tmp_path / "data", [np.zeros((32, 32))], channels=3)
    with pytest.raises(Exception) as error:
        workflow(pretrained, ["train.json"], **data).parser.get_parsed_content("train#feature_store").build()
    text = error_text(error.value)
    assert "s0.nii.gz" in text and "image_channels" in text


def test_flag_lists_from_the_command_line_are_read_as_flags(pretrained: Path) -> None:
    wf = workflow(pretrained, ["train.json"], ddpm_attention_levels=["false", "true", "false"])
    unet = wf.parser.get_parsed_content("ddpm_def")
    assert [hasattr(block, "attentions") for block in unet.down_blocks] == [False, True, False]
    with pytest.raises(Exception) as error:
        workflow(pretrained, ["train.json"], ddpm_attention_levels=["no", "yes", "no"]).parser.get_parsed_content(
            "ddpm_def"
        )
    assert "ddpm_attention_levels" in error_text(error.value)


def test_inference_is_reproducible_and_writes_uncertainty(pretrained: Path, tmp_path: Path) -> None:
    run(pretrained, ["train.json"], output_dir=str(tmp_path / "train_eval"))
    outputs = []
    for i in range(2):
        out = tmp_path / f"inference{i}"
        wf = workflow(pretrained, ["inference.json"], "inference", output_dir=str(out))
        wf.run()
        wf.finalize()
        outputs.append(sorted(out.glob("*_seg.nii.gz")))
        uncertainty = [np.asarray(nib.load(str(p)).dataobj) for p in sorted(out.glob("*_uncertainty.nii.gz"))]
        assert uncertainty and all(((u >= 0) & (u <= 1 - 1 / TINY["ensemble_size"] + 1e-6)).all() for u in uncertainty)
    first, second = ([np.asarray(nib.load(str(p)).dataobj) for p in files] for files in outputs)
    assert len(first) == len(second) > 0
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)  # seeded noise: the same prediction twice
        assert set(np.unique(a)) <= {0, 1, 2, 3}


def test_inference_writes_masks_on_the_input_grid(pretrained: Path, tmp_path: Path) -> None:
    affine = np.diag([0.9, 1.1, 2.0, 1.0])
    image = np.random.default_rng(0).random((40, 36, 4)).astype(np.float32)  # 4 contrasts, channel last
    nib.save(nib.Nifti1Image(image, affine), str(tmp_path / "case.nii.gz"))
    out = tmp_path / "inference"
    wf = workflow(pretrained, ["inference.json"], "inference", output_dir=str(out))
    wf.parser["dataset#data"] = [{"image": str(tmp_path / "case.nii.gz")}]
    wf.run()
    wf.finalize()
    for name in ("case_seg.nii.gz", "case_uncertainty.nii.gz"):
        written = nib.load(str(out / name))
        assert written.shape == (40, 36), f"{name} is not on the input's grid"
        np.testing.assert_allclose(written.affine[:2, :2], affine[:2, :2])
    assert (out / "case_overlay.png").is_file()


def test_the_fine_tuned_noise_predictor_starts_from_the_ddpm(pretrained: Path, tmp_path: Path) -> None:
    wf = run(pretrained, ["train.json", "denoiser.json"], ckpt_dir=str(tmp_path / "denoiser"))
    network = wf.parser.get_parsed_content("network_def")
    ddpm = torch.load(pretrained / "models" / "ddpm.pt", weights_only=True)
    encoder_key = "down_blocks.0.resnets.0.conv1.conv.weight"
    torch.testing.assert_close(network.unet.state_dict()[encoder_key], ddpm[encoder_key])  # frozen, loaded
    assert (tmp_path / "denoiser" / "model.pt").is_file() and not (pretrained / "models" / "denoiser").exists()
