"""Tests of ``tools.prepare_gms`` on tiny fake BUSI, UDIAT, ISIC/HAM10000 and Kvasir data sets in public layouts."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.data import load_datalist
from tools.prepare_gms import bus, busi, ham10000, kvasir_instrument, kvasir_seg, main, near_duplicate_groups

SHAPE = (20, 24)  # rows, columns of every fake image


def _grey(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, SHAPE, dtype=np.uint8)


def _rgb(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*SHAPE, 3), dtype=np.uint8)


def _box(top: int, left: int, height: int = 6, width: int = 8) -> np.ndarray:
    mask = np.zeros(SHAPE, dtype=bool)
    mask[top : top + height, left : left + width] = True
    return mask


def _u8(mask: np.ndarray) -> np.ndarray:
    return mask.astype(np.uint8) * 255


def _read(path: Path) -> tuple[str, np.ndarray]:
    with Image.open(path) as image:
        return image.mode, np.asarray(image)


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _names(datalist: dict, section: str) -> list[str]:
    return [Path(e["image"]).stem for e in datalist[section]]


def _section_of(datalist: dict) -> dict[str, str]:
    return {Path(e["image"]).stem: section for section, entries in datalist.items() for e in entries}


def _check_binary_masks(out: Path, datalist: dict, shape: tuple[int, int] = SHAPE) -> None:
    for entry in (e for entries in datalist.values() for e in entries):
        mode, mask = _read(out / entry["label"])
        assert mode == "L" and mask.shape == shape and set(np.unique(mask)) <= {0, 255}


# --------------------------------------------------------------------------------------------------------------------
# BUSI


@pytest.fixture
def busi_raw(tmp_path: Path) -> Path:
    """benign 1-5, malignant 1-4, normal 1-3; benign (3) is benign (2) plus noise; benign (1) has a _mask_1;
    malignant (1)_mask is RGB, malignant (2)_mask is noisy grey. Images are RGB with equal channels, as in BUSI."""
    root = tmp_path / "raw" / "Dataset_BUSI_with_GT"
    noise = np.random.default_rng(99).integers(-4, 5, SHAPE)
    for cls, count in (("benign", 5), ("malignant", 4), ("normal", 3)):
        (root / cls).mkdir(parents=True)
        for n in range(1, count + 1):
            grey = _grey(100 + n if cls == "malignant" else n)
            if cls == "benign" and n == 3:
                grey = np.clip(_grey(2) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(np.repeat(grey[..., None], 3, axis=-1)).save(root / cls / f"{cls} ({n}).png")
            mask = np.zeros(SHAPE, bool) if cls == "normal" else _box(n, n)
            Image.fromarray(_u8(mask)).save(root / cls / f"{cls} ({n})_mask.png")
    Image.fromarray(_u8(_box(12, 14))).save(root / "benign" / "benign (1)_mask_1.png")
    Image.fromarray(_u8(_box(1, 1))).convert("RGB").save(root / "malignant" / "malignant (1)_mask.png")
    noisy = np.where(_box(2, 2), 250, 3).astype(np.uint8)
    noisy[0, 0] = 120  # a stray grey pixel below the threshold
    Image.fromarray(noisy).save(root / "malignant" / "malignant (2)_mask.png")
    (root / "benign" / ".DS_Store").write_bytes(b"\0\1")
    (root / "benign" / "._benign (1).png").write_bytes(b"\0\1")  # macOS resource fork: skipped
    return tmp_path / "raw"


def test_busi_pairs_masks_and_normal_left_out(busi_raw, tmp_path):
    before = _snapshot(busi_raw)
    out = tmp_path / "out"
    datalist = busi(str(busi_raw), str(out))
    assert json.loads((out / "datalist.json").read_text()) == datalist
    assert set(datalist) == {"training", "validation", "test"}
    names = sorted(_section_of(datalist))
    assert names == sorted([f"benign_{n}" for n in range(1, 6)] + [f"malignant_{n}" for n in range(1, 5)])
    assert all(datalist[s] for s in datalist)
    for entry in (e for entries in datalist.values() for e in entries):
        name = Path(entry["image"]).stem
        assert entry["label"] == f"masks/{name}.png" and entry["class"] == name.split("_")[0]
        mode, image = _read(out / entry["image"])
        assert mode == "L" and image.shape == SHAPE
    mask = {name: _read(out / f"masks/{name}.png")[1] for name in names}
    np.testing.assert_array_equal(mask["benign_1"], _u8(_box(1, 1) | _box(12, 14)))  # _mask_1 OR-merged
    np.testing.assert_array_equal(mask["malignant_1"], _u8(_box(1, 1)))  # RGB mask
    np.testing.assert_array_equal(mask["malignant_2"], _u8(_box(2, 2)))  # noisy mask thresholded
    np.testing.assert_array_equal(_read(out / "images/benign_4.png")[1], _grey(4))
    _check_binary_masks(out, datalist)
    assert len(load_datalist(out / "datalist.json", "training")) == len(datalist["training"])
    assert _snapshot(busi_raw) == before


def test_busi_include_normal(busi_raw, tmp_path):
    datalist = busi(str(busi_raw), str(tmp_path / "out"), include_normal=True, size=16)
    entries = {Path(e["image"]).stem: e for section in datalist.values() for e in section}
    assert len(entries) == 12 and {e["class"] for e in entries.values()} == {"benign", "malignant", "normal"}
    for n in (1, 2, 3):
        assert not _read(tmp_path / "out" / entries[f"normal_{n}"]["label"])[1].any()
    _check_binary_masks(tmp_path / "out", datalist, shape=(16, 16))
    assert _read(tmp_path / "out" / "images/normal_1.png")[1].shape == (16, 16)


def test_busi_near_duplicates_share_group_and_section(busi_raw, tmp_path):
    for seed in range(4):
        datalist = busi(str(busi_raw / "Dataset_BUSI_with_GT"), str(tmp_path / f"out{seed}"), seed=seed)
        groups = {Path(e["image"]).stem: e["group"] for entries in datalist.values() for e in entries}
        assert groups["benign_2"] == groups["benign_3"] == "benign_2"
        assert all(group == name for name, group in groups.items() if name not in ("benign_2", "benign_3"))
        sections = _section_of(datalist)
        assert sections["benign_2"] == sections["benign_3"]
    datalist = busi(str(busi_raw), str(tmp_path / "single"), group_duplicates=False)
    groups = [e["group"] for entries in datalist.values() for e in entries]
    assert len(set(groups)) == len(groups) == 9


def test_near_duplicate_groups_are_transitive():
    angles = np.radians([0, 22, 44])  # neighbours correlate at cos 22 deg = 0.93, the ends at cos 44 deg = 0.72
    vectors = np.zeros((4, 3))
    vectors[:3, 0], vectors[:3, 1], vectors[3, 2] = np.cos(angles), np.sin(angles), 1
    assert near_duplicate_groups(vectors[[3, 0, 2, 1]], 0.9) == [0, 1, 1, 1]  # joined through the middle one
    assert near_duplicate_groups(vectors, 0.95) == [0, 1, 2, 3]


def test_seeded_split_is_reproducible(busi_raw, tmp_path):
    first = busi(str(busi_raw), str(tmp_path / "a"), seed=3)
    assert busi(str(busi_raw), str(tmp_path / "b"), seed=3) == first
    assert busi(str(busi_raw), str(tmp_path / "c"), seed=4) != first


def test_busi_unpaired_files_are_named(busi_raw, tmp_path):
    folder = busi_raw / "Dataset_BUSI_with_GT"
    (folder / "malignant" / "malignant (3)_mask.png").unlink()
    (folder / "benign" / "benign (4).png").unlink()
    with pytest.raises(ValueError, match=r"malignant \(3\)\.png.*benign \(4\)_mask\.png"):
        busi(str(busi_raw), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------------------------------
# UDIAT Dataset B


@pytest.fixture
def bus_raw(tmp_path: Path) -> Path:
    """Ten grey pairs in BUS_Dataset_B/original and BUS_Dataset_B/GT."""
    root = tmp_path / "raw" / "BUS_Dataset_B"
    (root / "original").mkdir(parents=True)
    (root / "GT").mkdir()
    for n in range(1, 11):
        Image.fromarray(_grey(n)).save(root / "original" / f"{n:06d}.png")
        Image.fromarray(_u8(_box(n, n))).save(root / "GT" / f"{n:06d}.png")
    return tmp_path / "raw"


def test_bus_grey_pairs_and_counts(bus_raw, tmp_path):
    out = tmp_path / "out"
    datalist = bus(str(bus_raw), str(out))
    assert {k: len(v) for k, v in datalist.items()} == {"training": 7, "validation": 1, "test": 2}
    assert sorted(_section_of(datalist)) == [f"{n:06d}" for n in range(1, 11)]
    mode, image = _read(out / "images/000004.png")
    assert mode == "L"
    np.testing.assert_array_equal(image, _grey(4))
    np.testing.assert_array_equal(_read(out / "masks/000004.png")[1], _u8(_box(4, 4)))
    _check_binary_masks(out, datalist)


def test_bus_size_mismatch_names_both_files(bus_raw, tmp_path):
    Image.fromarray(np.zeros((20, 23), np.uint8)).save(bus_raw / "BUS_Dataset_B" / "GT" / "000002.png")
    with pytest.raises(ValueError, match=r"GT/000002\.png is 23x20 pixels, its image .*original/000002\.png is 24x20"):
        bus(str(bus_raw), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------------------------------
# ISIC 2018 Task 1 / HAM10000


@pytest.fixture
def isic_raw(tmp_path: Path) -> Path:
    """Eight JPEG images and PNG masks in the ISIC 2018 folders, stray files, and a HAM10000-like metadata CSV."""
    raw = tmp_path / "raw"
    images, masks = raw / "ISIC2018_Task1-2_Training_Input", raw / "ISIC2018_Task1_Training_GroundTruth"
    images.mkdir(parents=True)
    masks.mkdir()
    for n in range(8):
        Image.fromarray(_rgb(n)).save(images / f"ISIC_00243{n:02d}.jpg", quality=95)
        Image.fromarray(_u8(_box(n, n))).save(masks / f"ISIC_00243{n:02d}_segmentation.png")
    (images / "ATTRIBUTION.txt").write_text("fake")
    Image.fromarray(_rgb(50)).save(images / "ISIC_0024300_superpixels.png")  # not an image of the set
    rows = ["lesion_id,image_id,dx,dx_type,age,sex,localization"]
    rows += [f"HAM_00000{n // 2},ISIC_00243{n:02d},{'mel' if n < 2 else 'nv'},histo,50,male,back" for n in range(4)]
    (raw / "HAM10000_metadata.csv").write_text("\n".join(rows) + "\n")
    return raw


def test_ham10000_pairs_and_lesion_groups(isic_raw, tmp_path):
    out = tmp_path / "out"
    datalist = ham10000(str(isic_raw), str(out), val_fraction=0.25, test_fraction=0.25)
    entries = {Path(e["image"]).stem: e for section in datalist.values() for e in section}
    assert sorted(entries) == [f"ISIC_00243{n:02d}" for n in range(8)]
    assert entries["ISIC_0024300"]["group"] == entries["ISIC_0024301"]["group"] == "HAM_000000"
    assert entries["ISIC_0024300"]["dx"] == "mel" and entries["ISIC_0024303"]["dx"] == "nv"
    assert entries["ISIC_0024307"]["group"] == "ISIC_0024307" and "dx" not in entries["ISIC_0024307"]
    sections = _section_of(datalist)
    assert sections["ISIC_0024300"] == sections["ISIC_0024301"]
    assert sections["ISIC_0024302"] == sections["ISIC_0024303"]
    mode, image = _read(out / "images/ISIC_0024305.png")
    assert mode == "RGB" and image.shape == (*SHAPE, 3)
    np.testing.assert_array_equal(_read(out / "masks/ISIC_0024305.png")[1], _u8(_box(5, 5)))
    _check_binary_masks(out, datalist)


def test_ham10000_image_without_mask_is_named(isic_raw, tmp_path):
    (isic_raw / "ISIC2018_Task1_Training_GroundTruth" / "ISIC_0024306_segmentation.png").unlink()
    with pytest.raises(ValueError, match=r"1 ISIC image\(s\) have no mask: .*ISIC_0024306\.jpg"):
        ham10000(str(isic_raw), str(tmp_path / "out"))


# --------------------------------------------------------------------------------------------------------------------
# Kvasir-SEG and Kvasir-Instrument


def _kvasir(root: Path, count: int, mask_format: str) -> Path:
    """``count`` RGB JPEG images in root/images and masks (JPEG or PNG) of the same stems in root/masks."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for n in range(count):
        Image.fromarray(_rgb(n)).save(root / "images" / f"frame{n:02d}.jpg", quality=95)
        mask = Image.fromarray(_u8(_box(n % 12, n % 14, 8, 10))).convert("RGB")
        mask.save(root / "masks" / f"frame{n:02d}.{mask_format}", **({"quality": 75} if mask_format == "jpg" else {}))
    return root


def test_kvasir_seg_binarises_jpeg_masks(tmp_path):
    raw = _kvasir(tmp_path / "raw" / "Kvasir-SEG", 10, "jpg").parent
    jpeg = np.asarray(Image.open(raw / "Kvasir-SEG" / "masks" / "frame03.jpg"))
    assert len(np.unique(jpeg)) > 2  # the source is really noisy
    out = tmp_path / "out"
    datalist = kvasir_seg(str(raw), str(out))
    assert {k: len(v) for k, v in datalist.items()} == {"training": 7, "validation": 1, "test": 2}
    np.testing.assert_array_equal(_read(out / "masks/frame03.png")[1], _u8(_box(3, 3, 8, 10)))
    mode, image = _read(out / "images/frame03.png")
    assert mode == "RGB" and image.shape == (*SHAPE, 3)
    _check_binary_masks(out, datalist)


def test_kvasir_seg_lists_first_ten_unpaired_and_unreadable(tmp_path):
    root = _kvasir(tmp_path / "raw", 12, "jpg")
    for mask in (root / "masks").iterdir():
        mask.unlink()
    with pytest.raises(ValueError, match=r"12 Kvasir-SEG image\(s\) have no mask: .*frame09\.jpg \(and 2 more\)$"):
        kvasir_seg(str(root), str(tmp_path / "out"))
    root = _kvasir(tmp_path / "raw2", 3, "jpg")
    (root / "images" / "frame01.jpg").write_bytes(b"not a picture")
    with pytest.raises(ValueError, match=r"frame01\.jpg cannot be read"):
        kvasir_seg(str(root), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_empty_sections_are_warned_about(tmp_path, caplog):
    root = _kvasir(tmp_path / "raw", 2, "png")
    with caplog.at_level(logging.WARNING, logger="tools.prepare_gms"):
        datalist = kvasir_seg(str(root), str(tmp_path / "out"))
    assert {k: len(v) for k, v in datalist.items()} == {"training": 2, "validation": 0, "test": 0}
    assert "the validation split is empty" in caplog.text and "the test split is empty" in caplog.text


def test_kvasir_instrument_uses_official_split_files(tmp_path):
    root = _kvasir(tmp_path / "raw" / "kvasir-instrument", 12, "png")
    (root / "train.txt").write_text("\n".join(f"frame{n:02d}" for n in range(8)) + "\n\n")
    (root / "test.txt").write_text("frame08\nframe09.jpg\nframe10\n")  # frame11 is in neither file
    out = tmp_path / "out"
    datalist = kvasir_instrument(str(tmp_path / "raw"), str(out), val_fraction=0.25)
    assert _names(datalist, "test") == ["frame08", "frame09", "frame10"]
    assert sorted(_names(datalist, "training") + _names(datalist, "validation")) == [f"frame{n:02d}" for n in range(8)]
    assert len(datalist["validation"]) == 2
    np.testing.assert_array_equal(_read(out / "masks/frame05.png")[1], _u8(_box(5, 5, 8, 10)))
    _check_binary_masks(out, datalist)
    (root / "test.txt").unlink()
    with pytest.raises(ValueError, match=r"only one of train\.txt and test\.txt"):
        kvasir_instrument(str(root), str(tmp_path / "out2"))
    (root / "train.txt").unlink()
    datalist = kvasir_instrument(str(root), str(tmp_path / "out3"), val_fraction=0.25, test_fraction=0.25)
    assert {k: len(v) for k, v in datalist.items()} == {"training": 6, "validation": 3, "test": 3}


# --------------------------------------------------------------------------------------------------------------------
# output folder and command line


def test_output_folder_must_be_new_unless_overwrite(bus_raw, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError, match=f"{re.escape(str(out))} is not empty"):
        bus(str(bus_raw), str(out))
    bus(str(bus_raw), str(out), overwrite=True)
    assert (out / "datalist.json").is_file() and (out / "notes.txt").read_text() == "keep"


def test_command_line(bus_raw, tmp_path, caplog):
    out = tmp_path / "out"
    main(["bus", "--data_dir", str(bus_raw), "--output_dir", str(out), "--size", "16"])
    assert len(load_datalist(out / "datalist.json", "test")) == 2
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="tools.prepare_gms"), pytest.raises(SystemExit) as exit_info:
        main(["bus", "--data_dir", str(bus_raw), "--output_dir", str(out)])
    assert exit_info.value.code == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0] and "is not empty" in errors[0]
