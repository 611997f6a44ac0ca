"""Tests of ``tools.prepare_brats`` on tiny synthetic BraTS 2021 case folders."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch.utils.data import random_split

from common.data import load_datalist
from tests.test_data_brats import SHAPE, write_case
from tools.prepare_brats import brats_splits, main, prepare_brats

CASES = [f"BraTS2021_{i:05d}" for i in (0, 2, 3, 5, 6)]
SLICES = (8, 12, 16)  # within the depth 24 of SHAPE
SMALL = {"slices": "8,12,16", "size": 16, "pool_size": 9, "shots": (2, 4), "seeds": (16, 42), "max_validation": 3}


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _names(entries: list[dict]) -> list[str]:
    return [Path(e["image"]).name.removesuffix(".nii.gz") for e in entries]


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five cases (one of them 48 x 40, the others 40 x 48, so both orientations are cut) and a stray folder."""
    root = tmp_path_factory.mktemp("brats") / "BraTS2021_Training_Data"
    for seed, name in enumerate(CASES):
        write_case(root, name, SHAPE if seed == 0 else (SHAPE[1], SHAPE[0], SHAPE[2]), seed=seed)
    (root / "notes").mkdir()
    return root


@pytest.fixture(scope="module")
def prepared(raw: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    """The output of one run with small settings, the datalist it returned and the raw folder's snapshot before."""
    before = _snapshot(raw)
    out = tmp_path_factory.mktemp("prepared") / "out"
    return out, prepare_brats(str(raw), str(out), **SMALL), before


def test_slices_written_channels_last_and_remapped(raw, prepared):
    out, _, before = prepared
    names = [f"{case}_s{index:03d}" for case in CASES for index in SLICES]
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{n}.nii.gz" for n in names]
    assert sorted(p.name for p in (out / "labels").iterdir()) == [f"{n}.nii.gz" for n in names]
    for name in names:
        image = nib.load(out / "images" / f"{name}.nii.gz")
        label = nib.load(out / "labels" / f"{name}.nii.gz")
        np.testing.assert_array_equal(image.affine, np.eye(4))
        assert image.shape == (16, 16, 4) and image.get_data_dtype() == np.float32
        assert label.shape == (16, 16) and label.get_data_dtype() == np.uint8
        values = np.asarray(image.dataobj)
        assert values.min() >= 0.0 and values.max() <= 1.0
        assert set(np.unique(np.asarray(label.dataobj)).tolist()) <= {0, 1, 2, 3}
    assert set(np.unique(np.asarray(nib.load(out / "labels" / f"{names[4]}.nii.gz").dataobj))) == {0, 1, 2, 3}
    assert _snapshot(raw) == before  # the input is only read


def test_split_matches_random_split(prepared):
    out, default, _ = prepared
    names = sorted(f"{case}_s{index:03d}" for case in CASES for index in SLICES)
    assert json.loads((out / "splits.json").read_text())["names"] == names
    pool_part, test_part = random_split(range(15), [9, 6], generator=torch.Generator().manual_seed(42))
    pool = [names[i] for i in pool_part]
    for n, seed in [(2, 16), (2, 42), (4, 16), (4, 42)]:
        datalist = json.loads((out / f"datalist_n{n}_seed{seed}.json").read_text())
        training, rest = random_split(pool, [n, 9 - n], generator=torch.Generator().manual_seed(seed))
        assert _names(datalist["training"]) == list(training)
        assert _names(datalist["validation"]) == list(rest)[:3]
        assert _names(datalist["test"]) == [names[i] for i in test_part]
        assert _names(datalist["unlabelled"]) == pool
        sections = {key: set(_names(entries)) for key, entries in datalist.items()}
        assert sections["training"] <= set(pool) and sections["validation"] <= set(pool)
        assert not sections["training"] & sections["validation"]
        assert not sections["test"] & set(pool) and sections["test"] | set(pool) == set(names)
        assert all(e["label"] == e["image"].replace("images/", "labels/") for e in datalist["training"])
        assert all(set(e) == {"image"} for e in datalist["unlabelled"])
    assert json.loads((out / "datalist.json").read_text()) == default
    assert default == json.loads((out / "datalist_n2_seed16.json").read_text())
    full = json.loads((out / "datalist_full.json").read_text())
    assert _names(full["training"]) == list(random_split(pool, [9, 0], generator=torch.Generator().manual_seed(42))[0])
    assert full["validation"] == []
    for section in ("training", "validation", "test"):
        assert len(load_datalist(out / "datalist.json", section)) == len(default[section])
    assert len(load_datalist(out / "datalist.json", "unlabelled", keys=("image",))) == 9
    assert brats_splits(list(reversed(names)), 9, [2, 4], [16, 42], 42, 3) == brats_splits(
        names, 9, [2, 4], [16, 42], 42, 3
    )


def test_splits_json_records_parameters(prepared):
    splits = json.loads((prepared[0] / "splits.json").read_text())
    assert splits["parameters"] == {
        "slices": [8, 12, 16],
        "size": 16,
        "pool_size": 9,
        "shots": [2, 4],
        "seeds": [16, 42],
        "split_seed": 42,
        "max_validation": 3,
        "unlabelled": "pool",
    }
    assert splits["default_datalist"] == "datalist_n2_seed16.json"


def test_unlabelled_all_and_command_line(raw, tmp_path):
    out = tmp_path / "out"
    argv = ["--data_dir", str(raw), "--output_dir", str(out), "--slices", "12", "--size", "8", "--pool_size", "3"]
    main([*argv, "--shots", "1,3", "--seeds", "0", "--unlabelled", "all"])
    datalist = json.loads((out / "datalist.json").read_text())
    assert _names(datalist["unlabelled"]) == [f"{case}_s012" for case in CASES]
    assert len(datalist["training"]) == 1 and len(datalist["validation"]) == 2 and len(datalist["test"]) == 2
    assert (out / "datalist_n3_seed0.json").is_file() and (out / "datalist_full.json").is_file()
    with pytest.raises(SystemExit) as exit_info:  # the output folder exists now
        main([*argv, "--shots", "1", "--seeds", "0"])
    assert exit_info.value.code == 1


def test_existing_output_refused_unless_overwrite(raw, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    small = {"slices": 12, "size": 8, "pool_size": 3, "shots": 1, "seeds": 0}
    with pytest.raises(FileExistsError, match="not empty"):
        prepare_brats(str(raw), str(out), **small)
    prepare_brats(str(raw), str(out), **small, overwrite=True)
    prepare_brats(str(raw), str(out), **small, overwrite=True)  # again, over its own files
    assert (out / "datalist.json").is_file() and (out / "notes.txt").read_text() == "keep"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"pool_size": 15}, r"--pool_size 15 .*only 15 slices"),
        ({"pool_size": 20}, r"--pool_size 20 .*only 15 slices"),
        ({"shots": (2, 10)}, r"--shots: n = 10 .*pool of 9"),
        ({"slices": "8,x"}, "--slices"),
        ({"slices": "8,8"}, "--slices"),
        ({"slices": -1}, "--slices"),
        ({"slices": "8,24"}, r"BraTS2021_00000: --slices 24 .*depth 24"),
        ({"size": 0}, "--size"),
        ({"size": 1.5}, "--size"),
        ({"unlabelled": "test"}, "--unlabelled"),
    ],
)
def test_bad_arguments_write_nothing(raw, tmp_path, arguments, message):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=message):
        prepare_brats(str(raw), str(out), **{**SMALL, **arguments})
    assert not out.exists() or not any(out.iterdir())


def _copy_cases(raw: Path, target: Path) -> Path:
    """A writable copy of the raw cases."""
    for case in CASES:
        (target / case).mkdir(parents=True)
        for path in (raw / case).iterdir():
            (target / case / path.name).write_bytes(path.read_bytes())
    return target


def test_missing_modality_names_case_and_file(raw, tmp_path):
    data = _copy_cases(raw, tmp_path / "raw")
    (data / "BraTS2021_00003" / "BraTS2021_00003_t1ce.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"BraTS2021_00003 lacks BraTS2021_00003_t1ce\.nii\.gz"):
        prepare_brats(str(data), str(tmp_path / "out"), **SMALL)
    assert not (tmp_path / "out").exists()
    with pytest.raises(FileNotFoundError, match="no BraTS2021_"):
        prepare_brats(str(data / "BraTS2021_00000"), str(tmp_path / "out"), **SMALL)


def test_mismatched_shapes_name_case_and_shapes(raw, tmp_path):
    data = _copy_cases(raw, tmp_path / "raw")
    seg = data / "BraTS2021_00005" / "BraTS2021_00005_seg.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((40, 48, 20), np.uint8), np.eye(4)), str(seg))
    with pytest.raises(ValueError, match=r"BraTS2021_00005.*_t1\.nii\.gz \(40, 48, 24\).*_seg\.nii\.gz \(40, 48, 20\)"):
        prepare_brats(str(data), str(tmp_path / "out"), **SMALL)
    assert not (tmp_path / "out").exists()


def test_label_outside_brats_values_is_named_and_no_datalist(raw, tmp_path):
    data = _copy_cases(raw, tmp_path / "raw")
    seg_path = data / "BraTS2021_00006" / "BraTS2021_00006_seg.nii.gz"
    seg = np.asarray(nib.load(seg_path).dataobj).copy()
    seg[0, 0, 12] = 3
    nib.save(nib.Nifti1Image(seg, np.eye(4)), str(seg_path))
    with pytest.raises(ValueError, match=r"BraTS2021_00006, slice 12: label values \{3\}"):
        prepare_brats(str(data), str(tmp_path / "out"), **SMALL)
    assert not list((tmp_path / "out").glob("*.json"))  # datalists are written last
