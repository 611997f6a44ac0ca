"""Bad input to the Post-DAE bundle: each case stops with one message that names the file or key."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from monai.bundle import ConfigWorkflow
from PIL import Image

from tests.conftest import BUNDLES_DIR, bundle_workflow, error_text

BUNDLE = BUNDLES_DIR / "postdae_mask_refinement"
TINY = {"image_size": [32, 32], "encoder_channels": [4, 4, 4, 4, 4], "decoder_channels": [4, 4, 4, 4], "latent_size": 8}


def workflow(tmp_path: Path, config: str, workflow_type: str, **overrides: object) -> ConfigWorkflow:
    """An initialised tiny workflow of the bundle whose outputs go to ``tmp_path/bundle``."""
    return bundle_workflow(BUNDLE, tmp_path / "bundle", config, workflow_type, **TINY, **overrides)


def build_training_data(tmp_path: Path, **overrides: object) -> None:
    """Instantiate the training dataset (which loads and checks every mask) for the given overrides."""
    workflow(tmp_path, "train.json", "train", **overrides).parser.get_parsed_content("train#dataset")


def write_masks(folder: Path, masks: dict[str, np.ndarray]) -> Path:
    """Write masks as PNG into ``folder/masks`` with a datalist using every mask in every section."""
    (folder / "masks").mkdir(parents=True)
    for name, mask in masks.items():
        Image.fromarray(mask.astype(np.uint8)).save(folder / "masks" / name)
    entries = [{"label": f"masks/{name}"} for name in masks]
    (folder / "datalist.json").write_text(json.dumps({"training": entries, "validation": entries, "test": entries}))
    return folder


def good_mask() -> np.ndarray:
    mask = np.zeros((40, 48), np.uint8)
    mask[8:30, 6:20] = 255
    mask[8:30, 28:42] = 255
    return mask


def test_missing_dataset_dir_is_an_error_not_synthetic_data(tmp_path):
    with pytest.raises(Exception) as error:
        build_training_data(tmp_path, dataset_dir=str(tmp_path / "nope"))
    assert f"dataset_dir '{tmp_path / 'nope'}' does not exist" in error_text(error.value)
    assert not (tmp_path / "bundle" / "eval" / "synthetic_data").exists()


def test_dataset_dir_without_datalist(tmp_path):
    (tmp_path / "data").mkdir()
    with pytest.raises(Exception) as error:
        build_training_data(tmp_path, dataset_dir=str(tmp_path / "data"))
    assert "datalist" in error_text(error.value) and "datalist.json' not found" in error_text(error.value)


def test_missing_mask_file_is_named(tmp_path):
    data = write_masks(tmp_path / "data", {"a.png": good_mask()})
    (data / "masks" / "a.png").unlink()
    with pytest.raises(Exception) as error:
        build_training_data(tmp_path, dataset_dir=str(data))
    assert "masks/a.png" in error_text(error.value) and "do not exist" in error_text(error.value)


@pytest.mark.parametrize(
    ("mask", "expected"),
    [
        (np.arange(40 * 48).reshape(40, 48) % 3, "expected a binary mask with values {0, 1} or {0, 255}"),
        (np.zeros((40, 48)), "the mask is empty"),
        (np.stack([good_mask(), np.zeros((40, 48)), good_mask()], axis=-1), "expected 1 channel(s), got 3"),
    ],
    ids=["non-binary", "empty", "colour"],
)
def test_bad_mask_is_named(tmp_path, mask, expected):
    data = write_masks(tmp_path / "data", {"good.png": good_mask(), "bad.png": mask})
    with pytest.raises(Exception) as error:
        build_training_data(tmp_path, dataset_dir=str(data))
    text = error_text(error.value)
    assert expected in text and str(data / "masks" / "bad.png") in text


def test_unreadable_mask_is_named(tmp_path):
    data = write_masks(tmp_path / "data", {"good.png": good_mask(), "bad.png": good_mask()})
    (data / "masks" / "bad.png").write_bytes(b"\x89PNG truncated")
    with pytest.raises(Exception) as error:
        build_training_data(tmp_path, dataset_dir=str(data))
    assert str(data / "masks" / "bad.png") in error_text(error.value)


def test_grey_mask_saved_as_rgb_is_accepted(tmp_path):
    data = write_masks(tmp_path / "data", {"rgb.png": np.repeat(good_mask()[..., None], 3, axis=-1)})
    build_training_data(tmp_path, dataset_dir=str(data))


def test_training_entries_with_images_train_on_their_masks(tmp_path):
    data = write_masks(tmp_path / "data", {"a.png": good_mask()})
    Image.fromarray(np.zeros((40, 48), np.uint8)).save(data / "a_image.png")
    datalist = json.loads((data / "datalist.json").read_text())
    for section in datalist.values():
        section[0]["image"] = "a_image.png"
    (data / "datalist.json").write_text(json.dumps(datalist))
    build_training_data(tmp_path, dataset_dir=str(data))


def test_inference_without_trained_weights_names_the_key(tmp_path):
    wf = workflow(tmp_path, "inference.json", "inference")
    with pytest.raises(Exception) as error:
        wf.run()
    assert "model.pt' does not exist (config key 'ckpt_dir')" in error_text(error.value)
