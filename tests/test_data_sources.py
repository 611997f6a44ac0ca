"""Tests of common.data.sources: where a bundle's data comes from."""

from __future__ import annotations

import json
import logging
import os
import re

import numpy as np
import pytest
from PIL import Image

from common.data import write_synthetic_dataset
from common.data.sources import folder_items, inference_items, resolve_datalist, simulate_predictions
from common.transforms import RandMaskCorruption

SYNTHETIC = {"synthetic_kind": "lung_mask", "synthetic_num": 4, "synthetic_size": 32, "seed": 3}
CORRUPTION_32 = {
    "tile_deletion_kwargs": {"patch_size": 8, "max_patches": 3},
    "disc_addition_kwargs": {"radius": 3, "max_discs": 3},
    "edge_swap_kwargs": {"num_swaps": 20, "max_distance": 3},
}


def _png(path, value: int = 255, shape=(8, 8)) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    array = np.zeros(shape, dtype=np.uint8)
    array[2:5, 1:6] = value
    Image.fromarray(array).save(path)


def _files(folder) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(root, name), folder) for root, _, names in os.walk(folder) for name in names
    )


def _paths(sections: dict[str, list[dict]]) -> list[str]:
    return [
        path for items in sections.values() for item in items for key, path in item.items() if key in ("image", "label")
    ]


# ----------------------------------------------------------------------------------------------------------------
# resolve_datalist


def test_empty_dataset_dir_uses_synthetic_data(tmp_path, caplog):
    synthetic_dir = tmp_path / "synthetic"
    with caplog.at_level(logging.WARNING, logger="common.data.sources"):
        sections = resolve_datalist("", synthetic_dir=str(synthetic_dir), keys=("label",), **SYNTHETIC)
    assert any("synthetic" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    folder = synthetic_dir / "lung_mask_n4_size32_seed3"
    assert os.listdir(synthetic_dir) == [folder.name]
    assert {"training", "validation", "test"} <= set(sections)
    assert all(sections[s] for s in ("training", "validation", "test"))
    assert sum(len(sections[s]) for s in ("training", "validation", "test")) == 4
    paths = _paths(sections)
    assert len(paths) == 4
    for path in paths:
        assert os.path.isabs(path)
        assert os.path.isfile(path)
        assert path.startswith(str(folder) + os.sep)
    with Image.open(paths[0]) as label:
        assert label.size == (32, 32)


def test_synthetic_data_reused_on_second_call(tmp_path):
    synthetic_dir = str(tmp_path / "synthetic")
    first = resolve_datalist("", synthetic_dir=synthetic_dir, keys=("label",), **SYNTHETIC)
    stamps = {path: os.stat(path).st_mtime_ns for path in _paths(first)}
    listing = _files(synthetic_dir)
    second = resolve_datalist("", synthetic_dir=synthetic_dir, keys=("label",), **SYNTHETIC)
    assert second == first
    assert {path: os.stat(path).st_mtime_ns for path in _paths(second)} == stamps
    assert _files(synthetic_dir) == listing


def test_other_synthetic_parameters_get_their_own_folder(tmp_path):
    synthetic_dir = tmp_path / "synthetic"
    resolve_datalist("", synthetic_dir=str(synthetic_dir), keys=("label",), **SYNTHETIC)
    resolve_datalist("", synthetic_dir=str(synthetic_dir), keys=("label",), **{**SYNTHETIC, "seed": 4})
    assert sorted(os.listdir(synthetic_dir)) == ["lung_mask_n4_size32_seed3", "lung_mask_n4_size32_seed4"]


def test_empty_dataset_dir_without_synthetic_config_is_an_error():
    with pytest.raises(ValueError, match="synthetic"):
        resolve_datalist("")


def test_missing_dataset_dir_never_falls_back_to_synthetic(tmp_path):
    missing = tmp_path / "no_such_dataset"
    synthetic_dir = tmp_path / "synthetic"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        resolve_datalist(str(missing), synthetic_dir=str(synthetic_dir), **SYNTHETIC)
    assert not synthetic_dir.exists()
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        inference_items(str(missing), synthetic_dir=str(synthetic_dir), **SYNTHETIC)
    assert not synthetic_dir.exists()


def test_dataset_dir_without_datalist(tmp_path):
    _png(tmp_path / "data" / "a.png")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "data" / "datalist.json"))):
        resolve_datalist(str(tmp_path / "data"))
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "data" / "other.json"))):
        resolve_datalist(str(tmp_path / "data"), datalist="other.json")


@pytest.fixture
def dataset(tmp_path):
    """A dataset folder with relative paths in its datalist; "image" only in some entries."""
    root = tmp_path / "dataset"
    for name in ("a", "b", "c"):
        _png(root / "labels" / f"{name}.png")
    _png(root / "preds" / "a.png")
    datalist = {
        "name": "not a section",
        "training": [{"image": "preds/a.png", "label": "labels/a.png"}, {"label": "labels/b.png", "id": 7}],
        "validation": [{"label": "labels/c.png"}],
        "test": [{"image": "preds/a.png", "label": "labels/a.png"}],
    }
    (root / "datalist.json").write_text(json.dumps(datalist))
    return root


def test_relative_paths_resolve_against_dataset_dir(tmp_path, dataset, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    sections = resolve_datalist(str(dataset), keys=("label",))
    assert set(sections) == {"training", "validation", "test"}
    assert sections["training"] == [
        {"image": str(dataset / "preds" / "a.png"), "label": str(dataset / "labels" / "a.png")},
        {"label": str(dataset / "labels" / "b.png"), "id": 7},
    ]
    assert sections["validation"] == [{"label": str(dataset / "labels" / "c.png")}]


def test_datalist_with_missing_file_is_an_error(dataset):
    os.remove(dataset / "labels" / "c.png")
    with pytest.raises(FileNotFoundError, match=re.escape(str(dataset / "labels" / "c.png"))):
        resolve_datalist(str(dataset), keys=("label",))


def test_required_key_missing_is_an_error(dataset):
    with pytest.raises(ValueError, match="'image'"):
        resolve_datalist(str(dataset))  # "image" is required by default


# ----------------------------------------------------------------------------------------------------------------
# inference_items


def test_plain_folder_gives_sorted_images(tmp_path):
    folder = tmp_path / "pngs"
    for name in ("c_2.png", "a_10.png", "b.png"):
        _png(folder / name)
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub").mkdir()
    _png(folder / "sub" / "0.png")
    items = inference_items(str(folder))
    assert items == [{"image": str(folder / name)} for name in ("a_10.png", "b.png", "c_2.png")]
    assert folder_items(str(folder), key="pred") == [{"pred": item["image"]} for item in items]


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "empty"))):
        inference_items(str(tmp_path / "empty"))


def test_inference_items_use_datalist_section(dataset):
    _png(dataset / "extra.png")  # a plain image in the folder must not be picked up
    assert inference_items(str(dataset)) == [
        {"image": str(dataset / "preds" / "a.png"), "label": str(dataset / "labels" / "a.png")}
    ]
    assert inference_items(str(dataset), section="validation", key="label") == [
        {"label": str(dataset / "labels" / "c.png")}
    ]


def test_inference_items_from_another_datalist_key(dataset, tmp_path):
    """A synthesis network's input is the label map: each item's 'image' is the datalist entry's 'label'."""
    assert inference_items(str(dataset), source_key="label") == [{"image": str(dataset / "labels" / "a.png")}]
    synthetic = inference_items("", section="test", synthetic_dir=str(tmp_path), source_key="label", **SYNTHETIC)
    assert synthetic and all(set(item) == {"image"} and "labels" in item["image"] for item in synthetic)


def test_inference_items_synthetic(tmp_path):
    items = inference_items("", section="test", synthetic_dir=str(tmp_path), key="label", **SYNTHETIC)
    assert items
    assert all(os.path.isfile(item["label"]) for item in items)
    with pytest.raises(ValueError, match="no section 'holdout'"):
        inference_items("", section="holdout", synthetic_dir=str(tmp_path), key="label", **SYNTHETIC)


# ----------------------------------------------------------------------------------------------------------------
# simulate_predictions


@pytest.fixture(scope="module")
def lung_items(tmp_path_factory):
    root = tmp_path_factory.mktemp("lungs")
    datalist = write_synthetic_dataset("lung_mask", root / "data", num=4, seed=0, size=32)
    labels = [str(root / "data" / item["label"]) for section in datalist.values() for item in section]
    return root, sorted(labels)


def _read(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.array(image)


def _simulate(items, output_dir, seed=0):
    return simulate_predictions(items, str(output_dir), RandMaskCorruption(**CORRUPTION_32), seed=seed)


def test_simulated_predictions_are_corrupted_labels_in_output_dir(tmp_path, lung_items, caplog):
    root, labels = lung_items
    label_dir_before = _files(root / "data")
    items = [{"label": labels[0]}, {"label": labels[1], "image": labels[2]}, {"label": labels[3], "case": 4}]
    with caplog.at_level(logging.WARNING, logger="common.data.sources"):
        out = _simulate(items, tmp_path / "sim")
    assert any("2 of 3" in r.getMessage() for r in caplog.records)
    assert out[1] == items[1]
    assert out[2]["case"] == 4
    assert _files(root / "data") == label_dir_before  # nothing written beside the labels
    assert _files(tmp_path / "sim") == sorted(
        os.path.basename(p).replace(".png", "_simulated.png") for p in (labels[0], labels[3])
    )
    for item, label in ((out[0], labels[0]), (out[2], labels[3])):
        assert item["label"] == label
        assert os.path.dirname(item["image"]) == str(tmp_path / "sim")
        simulated, clean = _read(item["image"]), _read(label)
        assert simulated.shape == clean.shape
        assert set(np.unique(simulated)) <= {0, 255}
        assert (simulated != clean).any()
        overlap = 2 * ((simulated > 0) & (clean > 0)).sum() / ((simulated > 0).sum() + (clean > 0).sum())
        assert overlap > 0.5  # a corrupted copy of this label, not some other mask


def test_simulated_predictions_deterministic_for_a_seed(tmp_path, lung_items):
    _, labels = lung_items
    items = [{"label": label} for label in labels]
    first = [_read(item["image"]) for item in _simulate(items, tmp_path / "one", seed=5)]
    again = [_read(item["image"]) for item in _simulate(items, tmp_path / "two", seed=5)]
    other = [_read(item["image"]) for item in _simulate(items, tmp_path / "three", seed=6)]
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, c) for a, c in zip(first, other, strict=True))


def test_item_without_image_or_label_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="neither 'image' nor 'label'"):
        _simulate([{"case": 1}], tmp_path)
