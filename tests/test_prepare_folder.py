"""End-to-end tests of ``tools.prepare_folder`` on small folders of PNG files written by the tests."""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pytest
from PIL import Image

from common.data import load_datalist
from tools.prepare_folder import main, prepare_folder, read_group_file

PATIENTS = ("p01", "p02", "p03", "p04", "p05")


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


@pytest.fixture
def pairs(tmp_path):
    """Ten image/mask pairs ``<patient>_<slice>.png``, two slices per patient, 0/255 masks."""
    rng = np.random.default_rng(0)
    for patient in PATIENTS:
        for index in (1, 2):
            name = f"{patient}_{index}.png"
            _png(tmp_path / "images" / name, rng.integers(0, 256, (16, 16)))
            mask = np.zeros((16, 16))
            mask[4:10, 5:12] = 255
            _png(tmp_path / "masks" / name, mask)
    return tmp_path


def _groups(datalist):
    return {split: {e["image"].split("/")[-1].split("_")[0] for e in entries} for split, entries in datalist.items()}


def test_pairs_to_datalist_with_relative_paths_and_patient_groups(pairs):
    output = pairs / "out" / "datalist.json"
    datalist = prepare_folder(
        str(output),
        images_dir=str(pairs / "images"),
        masks_dir=str(pairs / "masks"),
        val_fraction=0.2,
        test_fraction=0.2,
        group_regex=r"^(\w+?)_",
    )
    assert json.loads(output.read_text()) == datalist
    assert [len(datalist[s]) for s in ("training", "validation", "test")] == [6, 2, 2]
    first = datalist["training"][0]
    assert first["image"].startswith("../images/") and first["label"].startswith("../masks/")
    assert first["group"] == first["image"].split("/")[-1].split("_")[0]
    groups = _groups(datalist)
    assert not groups["training"] & groups["validation"] and not groups["training"] & groups["test"]
    assert not groups["validation"] & groups["test"]
    entries = load_datalist(output, "validation")
    assert all(Image.open(e["label"]).size == (16, 16) for e in entries)


def test_every_bad_mask_is_named_in_one_error(pairs):
    _png(pairs / "masks" / "p02_1.png", np.arange(256).reshape(16, 16))  # grey levels, not binary
    (pairs / "masks" / "p03_2.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="2 of 10 masks are not usable") as error:
        prepare_folder(str(pairs / "dl.json"), images_dir=str(pairs / "images"), masks_dir=str(pairs / "masks"))
    assert "p02_1.png: expected a binary mask" in str(error.value) and "found values 0, 1, 2" in str(error.value)
    assert "p03_2.png: cannot be read" in str(error.value)
    assert not (pairs / "dl.json").exists()


def test_multi_label_masks_need_the_flag(pairs):
    label = np.zeros((16, 16))
    label[2:6, 2:6], label[8:12, 8:12] = 1, 2
    _png(pairs / "masks" / "p01_1.png", label)
    with pytest.raises(ValueError, match=r"p01_1\.png"):
        prepare_folder(str(pairs / "dl.json"), images_dir=str(pairs / "images"), masks_dir=str(pairs / "masks"))
    prepare_folder(
        str(pairs / "dl.json"), images_dir=str(pairs / "images"), masks_dir=str(pairs / "masks"), multi_label=True
    )


def test_rgb_mask_is_reported_unless_its_channels_agree(pairs):
    grey = np.zeros((16, 16, 3))
    grey[4:8, 4:8] = 255
    _png(pairs / "masks" / "p04_1.png", grey)  # a binary mask saved as RGB: accepted, as the bundles accept it
    prepare_folder(str(pairs / "dl.json"), images_dir=str(pairs / "images"), masks_dir=str(pairs / "masks"))
    colour = grey.copy()
    colour[..., 1] = 0
    _png(pairs / "masks" / "p04_1.png", colour)
    with pytest.raises(ValueError, match=r"p04_1\.png: expected 1 channel\(s\), got 3"):
        prepare_folder(str(pairs / "dl2.json"), images_dir=str(pairs / "images"), masks_dir=str(pairs / "masks"))


def test_masks_only_with_group_file(pairs):
    rows = [  # p04 is missing from the table, p05's patient is unknown
        f"{patient}_{index}.png\tx\t{'-' if patient == 'p05' else 'P' + patient}"
        for patient in PATIENTS
        if patient != "p04"
        for index in (1, 2)
    ]
    table = "\n".join(["output_name\tsubset\tpatient_id", *rows]) + "\n"
    (pairs / "files.txt").write_text(table)
    output = pairs / "masks.json"
    datalist = prepare_folder(
        str(output), masks_dir=str(pairs / "masks"), group_file=str(pairs / "files.txt"), test_fraction=0.3, seed=2
    )
    entries = [e for split in datalist.values() for e in split]
    assert len(entries) == 10 and all(set(e) == {"label", "group"} for e in entries)  # same keys: MONAI batches them
    by_name = {e["label"].split("/")[-1]: e["group"] for e in entries}
    assert by_name["p01_2.png"] == "Pp01"
    assert by_name["p04_1.png"] == "" and by_name["p05_1.png"] == ""  # missing and unknown: own groups
    for patient in ("p01", "p02", "p03"):
        splits = {s for s, split in datalist.items() for e in split if e.get("group") == "P" + patient}
        assert len(splits) == 1
    assert load_datalist(output, "training", keys=("label",))


def test_group_file_errors(tmp_path):
    (tmp_path / "g.csv").write_text("name,patient\na.png,1\na.png,2\n")
    with pytest.raises(ValueError, match=r"no column 'output_name' \(name_column\); columns: \['name', 'patient'\]"):
        read_group_file(tmp_path / "g.csv")
    with pytest.raises(ValueError, match=r"line 3: 'a\.png' has two groups"):
        read_group_file(tmp_path / "g.csv", name_column="name", group_column="patient")
    with pytest.raises(FileNotFoundError, match="group file"):
        read_group_file(tmp_path / "none.tsv")


def test_existing_output_needs_overwrite_and_relative_to(pairs):
    output = pairs / "dl.json"
    output.write_text("{}")
    args = {"images_dir": str(pairs / "images"), "masks_dir": str(pairs / "masks")}
    with pytest.raises(FileExistsError, match=r"dl\.json"):
        prepare_folder(str(output), **args)
    datalist = prepare_folder(str(output), relative_to=str(pairs / "images"), overwrite=True, **args)
    assert datalist["training"][0]["image"].count("/") == 0
    assert load_datalist(output, "training", base_dir=pairs / "images")


def test_command_line_logs_a_summary_and_fails_cleanly(pairs, caplog):
    output = pairs / "cli.json"
    argv = ["--images_dir", str(pairs / "images"), "--masks_dir", str(pairs / "masks"), "--output", str(output)]
    with caplog.at_level(logging.INFO, logger="tools.prepare_folder"):
        main([*argv, "--seed", "1", "--group_regex", r"^(\w+?)_"])
    assert output.is_file()
    summary = r"wrote .*cli\.json: \d+ training, \d+ validation, \d+ test \(10 pairs, 5 known groups\)"
    assert any(re.search(summary, r.getMessage()) for r in caplog.records)
    caplog.clear()
    with pytest.raises(SystemExit) as exit_info, caplog.at_level(logging.ERROR, logger="tools.prepare_folder"):
        main(argv)
    assert exit_info.value.code == 1
    assert any("already exists" in r.message for r in caplog.records)
