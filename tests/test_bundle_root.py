"""Tests of common.bundle.locate_bundle_root: finding a bundle from where it is run."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from common.bundle import is_segmentation_bundle, locate_bundle_root
from tests.conftest import BUNDLES_DIR, REPO_ROOT, bundle_names

NAME = "toy_bundle"


def _make_bundle(folder: Path) -> Path:
    (folder / "configs").mkdir(parents=True)
    (folder / "configs" / "metadata.json").write_text(json.dumps({"name": folder.name}))
    return folder


@pytest.fixture
def repo(tmp_path) -> Path:
    """A repository copy: ``<repo>/bundles/toy_bundle/configs/metadata.json``."""
    _make_bundle(tmp_path / "repo" / "bundles" / NAME)
    return (tmp_path / "repo").resolve()


def test_from_repository_root(repo, monkeypatch):
    monkeypatch.chdir(repo)
    assert locate_bundle_root(NAME) == str(repo / "bundles" / NAME)


def test_from_bundle_folder(repo, monkeypatch):
    monkeypatch.chdir(repo / "bundles" / NAME)
    assert locate_bundle_root(NAME) == str(repo / "bundles" / NAME)


def test_from_folder_holding_the_bundle(repo, monkeypatch):
    monkeypatch.chdir(repo / "bundles")
    assert locate_bundle_root(NAME) == str(repo / "bundles" / NAME)


def test_result_is_absolute_and_survives_chdir(repo, monkeypatch):
    monkeypatch.chdir(repo)
    root = locate_bundle_root(NAME)
    monkeypatch.chdir(repo.parent)
    assert os.path.isabs(root)
    assert os.path.isfile(os.path.join(root, "configs", "metadata.json"))


def test_not_found_elsewhere_names_the_places_looked(repo, monkeypatch):
    elsewhere = repo / "docs"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with pytest.raises(FileNotFoundError) as err:
        locate_bundle_root(NAME)
    message = str(err.value)
    assert str(elsewhere) in message
    for place in (".", NAME, os.path.join("bundles", NAME)):
        assert f'"{place}"' in message
    assert "--bundle_root" in message


def test_folder_without_metadata_is_not_a_bundle(tmp_path, monkeypatch):
    (tmp_path / NAME / "configs").mkdir(parents=True)  # no metadata.json
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape(NAME)):
        locate_bundle_root(NAME)


def test_other_bundle_folder_is_not_taken(tmp_path, monkeypatch):
    """Run from inside another bundle, ``.`` holds a metadata.json but of a bundle with another name."""
    other = _make_bundle(tmp_path / "other_bundle")
    monkeypatch.chdir(other)
    with pytest.raises(FileNotFoundError, match="toy_bundle"):
        locate_bundle_root(NAME)


def test_bundle_folder_takes_precedence(tmp_path, monkeypatch):
    """Inside the bundle folder, ``.`` wins over a nested folder of the same name."""
    bundle = _make_bundle(tmp_path / NAME)
    _make_bundle(bundle / NAME)
    monkeypatch.chdir(bundle)
    assert locate_bundle_root(NAME) == str(bundle.resolve())


@pytest.mark.parametrize("name", bundle_names())
def test_shipped_bundles_found_from_repository_root(name, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    assert Path(locate_bundle_root(name)) == (BUNDLES_DIR / name).resolve()


def test_segmentation_bundles_are_told_from_the_generator(tmp_path: Path) -> None:
    kinds = {name: is_segmentation_bundle(BUNDLES_DIR / name) for name in bundle_names()}
    assert kinds["ct_label_to_image_synthesis"] is False
    assert all(v for k, v in kinds.items() if k != "ct_label_to_image_synthesis"), kinds
    assert is_segmentation_bundle(tmp_path) is False  # no metadata: not a bundle
