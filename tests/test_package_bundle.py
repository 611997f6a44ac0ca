"""Packaging and fetching a bundle: reproducible zips, hash checks that refuse, safe extraction, weight checks.

The end-to-end path (pack -> serve -> ``monai.bundle download`` -> inference without this repository) runs for every
bundle in ``tests/test_bundles.py``; here a small untrained bundle is enough.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from common.bundle import LARGE_FILES, file_sha256, verify_weights
from common.engines import CheckedCheckpointLoader
from common.networks.weights import load_network_weights
from tests.conftest import BUNDLES_DIR
from tools.package_bundle import fetch, main, pack, verify

NAME = "postdae_mask_refinement"


@pytest.fixture()
def bundle(tmp_path: Path) -> Path:
    """The Post-DAE bundle's shipped files with a small weight file in ``models/``."""
    target = tmp_path / "src" / NAME
    shutil.copytree(BUNDLES_DIR / NAME, target, ignore=shutil.ignore_patterns("eval", "models"))
    (target / "models").mkdir()
    torch.save({"weight": torch.arange(6.0).reshape(2, 3)}, target / "models" / "model.pt")
    torch.save({"model": {}}, target / "models" / "checkpoint_epoch=1.pt")
    return target


def test_pack_writes_bundle_weights_manifest_and_common(bundle: Path, tmp_path: Path) -> None:
    archive = Path(pack(str(bundle), output_dir=str(tmp_path / "dist")))
    assert archive.name == f"{NAME}_v0.1.0.zip"
    names = zipfile.ZipFile(archive).namelist()
    assert all(n.startswith(f"{NAME}/") for n in names)
    for expected in ("configs/inference.json", "docs/README.md", "LICENSE", "models/model.pt", LARGE_FILES):
        assert f"{NAME}/{expected}" in names
    assert f"{NAME}/common/__init__.py" in names and f"{NAME}/common/bundle.py" in names
    assert f"{NAME}/models/checkpoint_epoch=1.pt" not in names, "interval checkpoints carry optimiser states"
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    manifest = yaml.safe_load(zipfile.ZipFile(archive).read(f"{NAME}/{LARGE_FILES}"))
    entry = manifest["large_files"][0]
    assert entry == {
        "path": "models/model.pt",
        "hash_val": file_sha256(bundle / "models" / "model.pt"),
        "hash_type": "sha256",
    }
    assert Path(f"{archive}.sha256").read_text().split()[0] == file_sha256(archive)


def test_pack_is_reproducible_and_never_overwrites(bundle: Path, tmp_path: Path) -> None:
    first = Path(pack(str(bundle), output_dir=str(tmp_path / "a")))
    second = Path(pack(str(bundle), output_dir=str(tmp_path / "b")))
    assert file_sha256(first) == file_sha256(second)
    with pytest.raises(FileExistsError, match="raise the bundle's version"):
        pack(str(bundle), output_dir=str(tmp_path / "a"))


def test_pack_writes_weight_urls_for_download_large_files(bundle: Path, tmp_path: Path) -> None:
    archive = pack(str(bundle), output_dir=str(tmp_path), weights_url="https://example.org/w/")
    manifest = yaml.safe_load(zipfile.ZipFile(archive).read(f"{NAME}/{LARGE_FILES}"))
    assert manifest["large_files"][0]["url"] == "https://example.org/w/models/model.pt"


def test_pack_refuses_bundles_it_cannot_release(bundle: Path, tmp_path: Path) -> None:
    shutil.rmtree(bundle / "models")
    with pytest.raises(FileNotFoundError, match="train the bundle first"):
        pack(str(bundle), output_dir=str(tmp_path))
    meta_file = bundle / "configs" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    meta["version"] = "9.9.9"
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="needs an entry in 'changelog'"):
        pack(str(bundle), output_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"no configs/metadata\.json"):
        pack(str(tmp_path), output_dir=str(tmp_path))


def test_fetch_extracts_and_verifies_a_zip_with_the_right_hash(bundle: Path, tmp_path: Path) -> None:
    archive = Path(pack(str(bundle), output_dir=str(tmp_path / "dist")))
    extracted = Path(fetch(archive.as_uri(), file_sha256(archive), str(tmp_path / "bundles")))
    assert extracted == (tmp_path / "bundles" / NAME).resolve()
    assert (extracted / "models" / "model.pt").read_bytes() == (bundle / "models" / "model.pt").read_bytes()
    assert verify(str(extracted)) == 1
    assert sorted(p.name for p in (tmp_path / "bundles").iterdir()) == [NAME], "a temporary file was left behind"


def test_fetch_refuses_a_zip_whose_hash_does_not_match(bundle: Path, tmp_path: Path) -> None:
    archive = Path(pack(str(bundle), output_dir=str(tmp_path / "dist")))
    with pytest.raises(ValueError, match=rf"refused .*{archive.name}.*sha256"):
        fetch(archive.as_uri(), "0" * 64, str(tmp_path / "bundles"))
    assert not (tmp_path / "bundles" / NAME).exists(), "a refused zip must not be extracted"
    with pytest.raises(ValueError, match="64 hexadecimal digits"):
        fetch(archive.as_uri(), "abc", str(tmp_path / "bundles"))


def test_fetch_refuses_a_zip_that_escapes_its_folder(tmp_path: Path) -> None:
    archive = tmp_path / f"{NAME}_v0.1.0.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr(f"{NAME}/configs/metadata.json", "{}")
        z.writestr(f"{NAME}/../../escaped.txt", "outside")
    with pytest.raises(ValueError, match="refused"):
        fetch(archive.as_uri(), file_sha256(archive), str(tmp_path / "bundles"))
    assert not list(tmp_path.rglob("escaped.txt"))


def test_changed_weights_are_refused_by_verify_and_at_load_time(bundle: Path, tmp_path: Path) -> None:
    archive = Path(pack(str(bundle), output_dir=str(tmp_path / "dist")))
    extracted = Path(fetch(archive.as_uri(), file_sha256(archive), str(tmp_path / "bundles")))
    weights = extracted / "models" / "model.pt"
    weights.write_bytes(weights.read_bytes()[:-10])  # truncated
    with pytest.raises(ValueError, match=r"model\.pt' do not match .*large_files\.yml"):
        verify(str(extracted))
    with pytest.raises(ValueError, match="changed after the bundle was packaged"):
        load_network_weights(torch.nn.Linear(3, 2, bias=False), str(weights))
    loader = CheckedCheckpointLoader(load_path=str(weights), load_dict={"model": torch.nn.Linear(3, 2)})
    with pytest.raises(ValueError, match="do not match"):
        loader(None)


def test_weights_outside_a_manifest_are_not_checked(bundle: Path) -> None:
    verify_weights(bundle / "models" / "model.pt")  # a development checkout has no large_files.yml
    (bundle / LARGE_FILES).write_text(yaml.safe_dump({"large_files": []}))
    verify_weights(bundle / "models" / "model.pt")


def test_command_line_reports_one_line_errors(bundle: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", "--bundle", str(bundle)])
    assert exit_info.value.code == 1
    assert f"has no {LARGE_FILES}" in caplog.text


def test_weights_named_on_the_command_line_are_files_inside_the_bundle(bundle: Path, tmp_path: Path) -> None:
    archive = pack(str(bundle), output_dir=str(tmp_path / "one"), weights="models/model.pt")  # one value: a string
    assert f"{NAME}/models/model.pt" in zipfile.ZipFile(archive).namelist()
    with pytest.raises(ValueError, match="inside the bundle"):
        pack(str(bundle), output_dir=str(tmp_path / "two"), weights=["../../outside.pt"])


def test_fetch_reports_an_unreachable_url(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"refused .*missing\.zip"):
        fetch((tmp_path / "missing.zip").as_uri(), "0" * 64, str(tmp_path / "bundles"))
