"""Bad input to the score-based SDF bundle: each case stops with a message that names the file or the key."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow
from PIL import Image

from tests.conftest import BUNDLES_DIR, bundle_workflow, error_text, write_pairs

BUNDLE = BUNDLES_DIR / "sdf_score_segmentation"
TINY = {
    "patch_size": [32, 32],
    "patches_per_image": 1,
    "dim": 8,
    "fusion_channels": 4,
    "channel_mults": [1, 2],
    "attention_heads": 1,
    "attention_head_channels": 8,
}


def workflow(tmp_path: Path, config: str, workflow_type: str, **overrides: object) -> ConfigWorkflow:
    return bundle_workflow(BUNDLE, tmp_path / "bundle", config, workflow_type, **{**TINY, **overrides})


def rgb(size: tuple[int, int] = (40, 48)) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (*size, 3), dtype=np.uint8)


def mask(size: tuple[int, int] = (40, 48)) -> np.ndarray:
    m = np.zeros(size, np.uint8)
    m[5:20, 10:30] = 255
    return m


def first_error(tmp_path: Path, config: str, target: str, **overrides: object) -> str:
    with pytest.raises(Exception) as error:
        workflow(
            tmp_path, config, "train" if config == "train.json" else "inference", **overrides
        ).parser.get_parsed_content(target)
    return error_text(error.value)


def test_good_pairs_load(tmp_path: Path) -> None:
    data = write_pairs(tmp_path / "data", {"a.png": (rgb(), mask())})
    dataset = workflow(tmp_path, "train.json", "train", **data).parser.get_parsed_content("train#dataset")
    item = dataset[0][0]
    assert item["image"].shape == (1, 32, 32) and item["sdf"].shape == (1, 32, 32)
    assert float(item["sdf"].abs().max()) <= 0.2 + 1e-6, "the VE model diffuses the SDF at 0.2"


def test_two_channel_image_is_named(tmp_path: Path) -> None:
    grey_alpha = np.stack([rgb()[..., 0], np.full((40, 48), 255, np.uint8)], axis=-1)  # a PNG in PIL mode "LA"
    data = write_pairs(tmp_path / "data", {"la.png": (grey_alpha, mask())})
    text = first_error(tmp_path, "train.json", "train#dataset", **data)
    assert "la.png" in text and "2 channel(s); expected 1" in text and "'image_channels'" in text


def test_volume_given_for_a_2d_image_is_named(tmp_path: Path) -> None:
    data = write_pairs(tmp_path / "data", {"a.png": (rgb(), mask())})
    np.save(tmp_path / "volume.npy", np.zeros((40, 48, 6), np.float32))
    datalist = json.loads(Path(data["datalist"]).read_text())
    datalist["training"] = [{"image": "../volume.npy", "label": "masks/a.png"}]
    Path(data["datalist"]).write_text(json.dumps(datalist))
    text = first_error(tmp_path, "train.json", "train#dataset", **data)
    assert "volume.npy" in text and "3 spatial dimensions, expected 2" in text


def test_grey_image_when_rgb_is_asked_is_repeated(tmp_path: Path) -> None:
    data = write_pairs(tmp_path / "data", {"grey.png": (rgb()[..., 0], mask())})
    dataset = workflow(tmp_path, "train.json", "train", image_channels=3, **data).parser.get_parsed_content(
        "train#dataset"
    )
    image = dataset[0][0]["image"]
    assert image.shape == (3, 32, 32) and torch.equal(image[0], image[2])


def test_non_binary_mask_is_named(tmp_path: Path) -> None:
    labels = mask()
    labels[30:35, 5:10] = 128
    data = write_pairs(tmp_path / "data", {"labels.png": (rgb(), labels)})
    text = first_error(tmp_path, "train.json", "train#dataset", **data)
    assert "labels.png" in text and "binary" in text


def test_image_smaller_than_the_patch_is_named(tmp_path: Path) -> None:
    data = write_pairs(tmp_path / "data", {"small.png": (rgb((20, 48)), mask((20, 48)))})
    text = first_error(tmp_path, "train.json", "train#dataset", **data)
    assert "small.png" in text and "'patch_size'" in text


def test_small_image_at_inference_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(rgb((20, 20))).save(folder / "tiny.png")
    wf = workflow(tmp_path, "inference.json", "inference", dataset_dir=str(folder))
    with pytest.raises(Exception) as error:
        wf.parser.get_parsed_content("dataset")[0]
    assert "tiny.png" in error_text(error.value) and "'patch_size'" in error_text(error.value)


def test_unknown_sde_is_named(tmp_path: Path) -> None:
    text = first_error(tmp_path, "train.json", "sde_def", sde="subvp")
    assert "unknown sde 'subvp'" in text and "'sde'" in text


@pytest.mark.parametrize("num_steps", [0, -3])
def test_sampler_steps_below_one_are_named(tmp_path: Path, num_steps: int) -> None:
    text = first_error(tmp_path, "inference.json", "inferer", sampler="ode", num_steps=num_steps)
    assert "'num_steps'" in text and ">= 1" in text


def test_sampler_that_does_not_fit_the_sde_is_named(tmp_path: Path) -> None:
    text = first_error(tmp_path, "inference.json", "inferer", sde="vp", sampler="pc")
    assert "sampler 'pc' needs sde 've'" in text


def test_one_key_switches_to_vp_with_its_sampler_and_scale(tmp_path: Path) -> None:
    parser = workflow(tmp_path, "inference.json", "inference", sde="vp").parser
    inferer = parser.get_parsed_content("inferer")
    assert inferer.sampler == "ancestral" and inferer.process.data_scale == 1.0
