"""Tests of ``common.io`` (atomic writers, checked JSON) and ``common.data.datalist``."""

from __future__ import annotations

import json
import logging
import os
import re

import pytest

from common.data import load_datalist, pair_folder, split_extension, split_items, write_datalist
from common.data.datalist import section_images
from common.io import atomic_output, atomic_write_bytes, atomic_write_json, atomic_write_text, read_json

# atomic writers -------------------------------------------------------------------------------------------------------


def test_atomic_writers_write_whole_files(tmp_path):
    atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01")
    atomic_write_text(tmp_path / "a.txt", "héllo")
    atomic_write_json(tmp_path / "a.json", {"x": [1, 2]})
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo"
    assert (tmp_path / "a.json").read_text() == '{\n  "x": [\n    1,\n    2\n  ]\n}\n'
    assert sorted(os.listdir(tmp_path)) == ["a.bin", "a.json", "a.txt"]


def test_atomic_output_keeps_extension_and_leaves_no_temp_on_error(tmp_path):
    target = tmp_path / "vol.nii.gz"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".nii.gz") and tmp.name.startswith(".tmp-")
        tmp.write_text("half")
        raise RuntimeError("writer crashed")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["vol.nii.gz"]
    with atomic_output(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["vol.nii.gz"]


def test_atomic_write_json_of_unserialisable_object_leaves_nothing(tmp_path):
    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "a.json", {"x": object()})
    assert os.listdir(tmp_path) == []


def test_atomic_write_into_missing_folder_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        atomic_write_text(tmp_path / "nowhere" / "a.txt", "x")


def test_read_json_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"config file .*missing\.json"):
        read_json(tmp_path / "missing.json", "config")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config file .*bad\.json is not valid JSON"):
        read_json(tmp_path / "bad.json", "config")


# split_items ----------------------------------------------------------------------------------------------------------


def _items(n, patients=None):
    return [{"image": f"{i}.png", **({"patient": f"p{i % patients}"} if patients else {})} for i in range(n)]


def test_split_fractions_exact_without_groups_and_every_item_once():
    splits = split_items(_items(20), val_fraction=0.1, test_fraction=0.25, seed=1)
    assert [len(splits[s]) for s in ("training", "validation", "test")] == [13, 2, 5]
    assert sorted(e["image"] for s in splits.values() for e in s) == sorted(e["image"] for e in _items(20))


def test_split_is_seeded():
    items = _items(30)
    assert split_items(items, seed=3) == split_items(items, seed=3)
    assert split_items(items, seed=3) != split_items(items, seed=4)


def test_split_keeps_groups_together_and_keeps_the_key():
    splits = split_items(_items(40, patients=8), val_fraction=0.2, test_fraction=0.2, seed=0, group_key="patient")
    patients = {name: {e["patient"] for e in entries} for name, entries in splits.items()}
    assert not patients["training"] & patients["validation"]
    assert not patients["training"] & patients["test"]
    assert not patients["validation"] & patients["test"]
    assert all(patients.values())  # approximately 24/8/8: every split gets some patients
    assert sum(len(s) for s in splits.values()) == 40


def test_split_tiny_lists_keep_training():
    assert split_items([], seed=0) == {"training": [], "validation": [], "test": []}
    assert len(split_items(_items(1), 0.4, 0.5)["training"]) == 1
    assert len(split_items(_items(2), 0.3, 0.6)["training"]) == 1
    one_big = [{"image": "a", "g": 1}] + [{"image": str(i), "g": 2} for i in range(4)]
    for seed in range(5):
        assert split_items(one_big, 0.3, 0.5, seed=seed, group_key="g")["training"]


@pytest.mark.parametrize(
    ("val", "test", "message"),
    [(1.0, 0.1, "val_fraction"), (0.1, -0.1, "test_fraction"), (0.5, 0.5, "must be < 1"), ("0.1", 0.1, "number")],
)
def test_split_fraction_errors(val, test, message):
    with pytest.raises(ValueError, match=message):
        split_items(_items(5), val, test)


def test_split_missing_group_key_names_the_item():
    with pytest.raises(ValueError, match="item 1 has no group key 'patient'"):
        split_items([{"image": "a", "patient": "x"}, {"image": "b"}], group_key="patient")


# write_datalist / load_datalist ---------------------------------------------------------------------------------------


@pytest.fixture
def datalist_dir(tmp_path):
    (tmp_path / "images").mkdir()
    for name in ("a.png", "b.png", "a_mask.png", "b_mask.png"):
        (tmp_path / "images" / name).write_bytes(b"x")
    datalist = {
        "training": [{"image": "images/a.png", "label": "images/a_mask.png", "patient": "p1"}],
        "validation": [{"image": "images/b.png", "label": "images/b_mask.png"}],
    }
    write_datalist(datalist, tmp_path / "datalist.json")
    return tmp_path


def test_write_datalist_refuses_to_overwrite(datalist_dir):
    path = datalist_dir / "datalist.json"
    with pytest.raises(FileExistsError, match=r"datalist\.json"):
        write_datalist({"training": []}, path)
    write_datalist({"training": []}, path, overwrite=True)
    assert json.loads(path.read_text()) == {"training": []}
    with pytest.raises(ValueError, match="dict"):
        write_datalist({"training": ["a.png"]}, datalist_dir / "other.json")


def test_load_datalist_resolves_paths_against_its_folder(datalist_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)
    entries = load_datalist(datalist_dir / "datalist.json", "training")
    assert entries == [
        {
            "image": str(datalist_dir / "images" / "a.png"),
            "label": str(datalist_dir / "images" / "a_mask.png"),
            "patient": "p1",
        }
    ]
    moved = load_datalist(datalist_dir / "datalist.json", "training", base_dir="/data", check_files=False)
    assert moved[0]["image"] == os.path.abspath("/data/images/a.png")


def test_load_datalist_missing_section_names_file_and_sections(datalist_dir):
    message = r"datalist .*datalist\.json has no section 'test'; sections present: \['training', 'validation'\]"
    with pytest.raises(ValueError, match=message):
        load_datalist(datalist_dir / "datalist.json", "test")


def test_load_datalist_missing_key_names_entry_and_key(datalist_dir):
    with pytest.raises(ValueError, match=r"entry 0 of section 'training' of datalist .*datalist\.json has no 'mask'"):
        load_datalist(datalist_dir / "datalist.json", "training", keys=("image", "mask"))


def test_load_datalist_missing_file_names_datalist_entry_and_path(datalist_dir):
    (datalist_dir / "images" / "b_mask.png").unlink()
    pattern = r"datalist .*datalist\.json do not exist: entry 0 'label': .*b_mask\.png"
    with pytest.raises(FileNotFoundError, match=pattern):
        load_datalist(datalist_dir / "datalist.json", "validation")
    assert load_datalist(datalist_dir / "datalist.json", "validation", check_files=False)


def test_load_datalist_missing_or_broken_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"datalist file .*nope\.json does not exist"):
        load_datalist(tmp_path / "nope.json", "training")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object of sections"):
        load_datalist(tmp_path / "list.json", "training")


# pair_folder ----------------------------------------------------------------------------------------------------------


def _touch(folder, *names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"x")


def _names(entries):
    return [{key: os.path.basename(path) for key, path in entry.items()} for entry in entries]


def test_split_extension_handles_double_extension():
    assert split_extension("case.NII.GZ") == ("case", ".nii.gz")
    assert split_extension("a.b.png") == ("a.b", ".png")
    assert split_extension("notes.txt") == ("notes.txt", "")


def test_pair_two_folders_by_stem_and_suffix(tmp_path):
    _touch(tmp_path / "img", "a.png", "b.jpg", "c.nii.gz", "readme.txt")
    _touch(tmp_path / "msk", "a.png", "b_mask.png", "c_seg.nii.gz")
    pairs = pair_folder(tmp_path / "img", tmp_path / "msk")
    assert _names(pairs) == [
        {"image": "a.png", "label": "a.png"},
        {"image": "b.jpg", "label": "b_mask.png"},
        {"image": "c.nii.gz", "label": "c_seg.nii.gz"},
    ]
    assert all(os.path.isabs(p) for e in pairs for p in e.values())


def test_pair_same_folder_by_suffix(tmp_path):
    _touch(tmp_path, "a.png", "a_mask.png", "b.tif", "b_label.tif")
    assert _names(pair_folder(tmp_path)) == [
        {"image": "a.png", "label": "a_mask.png"},
        {"image": "b.tif", "label": "b_label.tif"},
    ]


def test_pair_unmatched_images_are_listed_or_skipped(tmp_path):
    _touch(tmp_path / "img", "a.png", "b.png", "c.png")
    _touch(tmp_path / "msk", "a_mask.png")
    with pytest.raises(ValueError, match=re.escape("2 of 3 images") + ".*b.png, c.png"):
        pair_folder(tmp_path / "img", tmp_path / "msk")
    assert _names(pair_folder(tmp_path / "img", tmp_path / "msk", allow_unpaired=True)) == [
        {"image": "a.png", "label": "a_mask.png"}
    ]


def test_pair_ambiguous_mask_is_an_error(tmp_path):
    _touch(tmp_path / "img", "a.png")
    _touch(tmp_path / "msk", "a.png", "a.nii.gz")
    with pytest.raises(ValueError, match="several masks match image 'a'"):
        pair_folder(tmp_path / "img", tmp_path / "msk")


def test_pair_masks_only_and_folder_errors(tmp_path):
    _touch(tmp_path / "msk", "b.png", "a.png", ".hidden.png")
    assert _names(pair_folder(None, tmp_path / "msk")) == [{"label": "a.png"}, {"label": "b.png"}]
    with pytest.raises(FileNotFoundError, match=r"images folder .*missing"):
        pair_folder(tmp_path / "missing", tmp_path / "msk")
    with pytest.raises(ValueError, match="give images_dir, masks_dir or both"):
        pair_folder(None, None)
    _touch(tmp_path / "empty")
    with pytest.raises(ValueError, match="holds no"):
        pair_folder(None, tmp_path / "empty")


# section_images -------------------------------------------------------------------------------------------------------


def test_section_images_drops_labels_and_keeps_the_order(caplog):
    datalist = {
        "unlabelled": [{"image": "u1.nii.gz"}, {"image": "u2.nii.gz", "label": "x"}, {"label": "only.png"}],
        "extra": [{"image": "e1.png", "label": "e1_mask.png"}],
        "training": [{"image": "t1.png", "label": "t1_mask.png"}],
    }
    with caplog.at_level(logging.WARNING, logger="common.data.datalist"):
        assert section_images(datalist) == [{"image": "u1.nii.gz"}, {"image": "u2.nii.gz"}]
        assert section_images(datalist, sections=("extra", "unlabelled", "missing")) == [
            {"image": "e1.png"},
            {"image": "u1.nii.gz"},
            {"image": "u2.nii.gz"},
        ]
    assert not caplog.records, "no fallback, no warning"
    assert section_images(datalist, sections=("extra",), key="label") == [{"label": "e1_mask.png"}]


def test_section_images_falls_back_with_a_warning(caplog):
    datalist = {
        "training": [{"image": "t1.png", "label": "t1_mask.png"}],
        "validation": [{"image": "v1.png", "label": "v1_mask.png"}],
        "test": [{"image": "s1.png", "label": "s1_mask.png"}],
    }
    with caplog.at_level(logging.WARNING, logger="common.data.datalist"):
        assert section_images(datalist) == [{"image": "t1.png"}, {"image": "v1.png"}]
    assert "no section ['unlabelled']" in caplog.text and "['training', 'validation']" in caplog.text


def test_section_images_errors_name_the_sections():
    with pytest.raises(
        ValueError, match=r"none of the sections \['unlabelled'\].*\['training', 'validation'\].*\['test'\]"
    ):
        section_images({"test": [{"image": "s1.png"}]})
    with pytest.raises(ValueError, match=r"\['unlabelled'\] hold no 'image' entries"):
        section_images({"unlabelled": [{"label": "a.png"}], "training": [{"image": "t1.png"}]})
