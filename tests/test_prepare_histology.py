"""Tests of ``tools.prepare_histology`` on tiny fake MoNuSeg and GlaS data sets in their public layouts."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.data import load_datalist
from tools.prepare_histology import glas, main, monuseg, read_aperio_polygons

TRAIN_NAMES = [f"TCGA-A{i}-000{i}-01Z-00-DX1" for i in range(1, 6)]
TEST_NAME = "TCGA-T1-0009-01Z-00-DX1"
RECTANGLE = [(10.0, 4.0), (40.0, 4.0), (40.0, 20.0), (10.0, 20.0)]  # (X, Y): 31 columns wide, 17 rows tall
CLIPPED = [(50, 40), (70, 40), (70, 60), (50, 60)]  # crosses the right edge of the 64x64 image


def _monuseg_mask() -> np.ndarray:
    """The rasterised RECTANGLE and CLIPPED polygons: rows are Y, columns are X, boundaries included."""
    mask = np.zeros((64, 64), dtype=bool)
    mask[4:21, 10:41] = True
    mask[40:61, 50:64] = True
    return mask


def _aperio_xml(polygons: list[list[tuple[float, float]]]) -> str:
    regions = "".join(
        f'<Region Id="{i}" Type="0"><Attributes/><Vertices>'
        + "".join(f'<Vertex X="{x}" Y="{y}" Z="0"/>' for x, y in vertices)
        + "</Vertices></Region>"
        for i, vertices in enumerate(polygons, start=1)
    )
    return (
        '<?xml version="1.0"?><Annotations MicronsPerPixel="0.25"><Annotation Id="1"><Regions>'
        f"<RegionAttributeHeaders/>{regions}</Regions><Plots/></Annotation></Annotations>"
    )


def _rgb(seed: int, shape: tuple[int, int]) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _read(path: Path) -> tuple[str, np.ndarray]:
    with Image.open(path) as image:
        return image.mode, np.asarray(image)


@pytest.fixture
def monuseg_raw(tmp_path: Path) -> Path:
    """Five training images (the first saved with an alpha channel) and one test image, 64x64, two polygons each."""
    raw = tmp_path / "raw"
    train = raw / "MoNuSeg 2018 Training Data"
    (train / "Tissue Images").mkdir(parents=True)
    (train / "Annotations").mkdir()
    (raw / "MoNuSegTestData").mkdir()
    xml = _aperio_xml([RECTANGLE, CLIPPED])
    for i, name in enumerate(TRAIN_NAMES):
        mode = "RGBA" if i == 0 else "RGB"
        Image.fromarray(_rgb(i, (64, 64))).convert(mode).save(train / "Tissue Images" / f"{name}.tif")
        (train / "Annotations" / f"{name}.xml").write_text(xml)
    Image.fromarray(_rgb(9, (64, 64))).save(raw / "MoNuSegTestData" / f"{TEST_NAME}.tif")
    (raw / "MoNuSegTestData" / f"{TEST_NAME}.xml").write_text(xml)
    return raw


def test_monuseg_masks_sections_and_paths(monuseg_raw, tmp_path):
    before = _snapshot(monuseg_raw)
    out = tmp_path / "out"
    datalist = monuseg(str(monuseg_raw), str(out), size=0, val_fraction=0.2)
    assert json.loads((out / "datalist.json").read_text()) == datalist
    assert {k: len(v) for k, v in datalist.items()} == {"training": 4, "validation": 1, "test": 1}
    assert [e["image"] for e in datalist["test"]] == [f"images/{TEST_NAME}.png"]
    split_names = {Path(e["image"]).stem for s in ("training", "validation") for e in datalist[s]}
    assert split_names == set(TRAIN_NAMES)
    for entry in [e for entries in datalist.values() for e in entries]:
        name = Path(entry["image"]).stem
        assert entry["group"] == name[:12] and entry["label"] == f"masks/{name}.png"
        mode, image = _read(out / entry["image"])
        assert mode == "RGB" and image.shape == (64, 64, 3)
        source = _rgb(9 if name == TEST_NAME else TRAIN_NAMES.index(name), (64, 64))
        np.testing.assert_array_equal(image, source)  # lossless, alpha dropped
        mode, mask = _read(out / entry["label"])
        assert mode == "L" and set(np.unique(mask)) == {0, 255}
        np.testing.assert_array_equal(mask, _monuseg_mask().astype(np.uint8) * 255)
    assert len(load_datalist(out / "datalist.json", "validation")) == 1
    assert _snapshot(monuseg_raw) == before


def test_monuseg_resize_and_patches(monuseg_raw, tmp_path):
    out = tmp_path / "out"
    datalist = monuseg(str(monuseg_raw), str(out), size=32, patch_size=16, val_fraction=0.2)
    area_mask = _monuseg_mask().reshape(32, 2, 32, 2).mean(axis=(1, 3)) >= 0.5
    for entry in datalist["training"] + datalist["test"]:
        assert _read(out / entry["image"])[1].shape == (32, 32, 3)
        np.testing.assert_array_equal(_read(out / entry["label"])[1], area_mask.astype(np.uint8) * 255)
    patches = datalist["training_patches"]
    assert len(patches) == 4 * len(datalist["training"])
    first = datalist["training"][0]
    stem = Path(first["image"]).stem
    patch = next(p for p in patches if p["image"] == f"patches/images/{stem}_y16_x0.png")
    assert patch == {"image": patch["image"], "label": f"patches/masks/{stem}_y16_x0.png", "group": first["group"]}
    np.testing.assert_array_equal(_read(out / patch["image"])[1], _read(out / first["image"])[1][16:, :16])
    np.testing.assert_array_equal(_read(out / patch["label"])[1], area_mask[16:, :16].astype(np.uint8) * 255)
    assert all(_read(out / p["label"])[1].shape == (16, 16) for p in patches)


def test_monuseg_test_folder_alone_goes_to_test(monuseg_raw, tmp_path):
    datalist = monuseg(str(monuseg_raw / "MoNuSegTestData"), str(tmp_path / "out"), size=16)
    assert {k: len(v) for k, v in datalist.items()} == {"training": 0, "validation": 0, "test": 1}


def test_output_folder_must_be_new_unless_overwrite(monuseg_raw, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not empty"):
        monuseg(str(monuseg_raw), str(out), size=16)
    monuseg(str(monuseg_raw), str(out), size=16, overwrite=True)
    assert (out / "datalist.json").is_file() and (out / "notes.txt").read_text() == "keep"
    with pytest.raises(ValueError, match="must not overlap"):
        monuseg(str(monuseg_raw), str(monuseg_raw / "out"), size=16)


def test_monuseg_bad_annotations_are_named(monuseg_raw, tmp_path):
    out = tmp_path / "out"
    xml = monuseg_raw / "MoNuSeg 2018 Training Data" / "Annotations" / f"{TRAIN_NAMES[2]}.xml"
    xml.write_text("<Annotations><Region><Vertex X='1'")
    with pytest.raises(ValueError, match=f"{TRAIN_NAMES[2]}.xml cannot be parsed"):
        monuseg(str(monuseg_raw), str(out))
    xml.write_text('<Annotations><Region><Vertices><Vertex X="1"/></Vertices></Region></Annotations>')
    with pytest.raises(ValueError, match=f"{TRAIN_NAMES[2]}.xml cannot be parsed"):
        read_aperio_polygons(xml)
    xml.unlink()
    with pytest.raises(ValueError, match=f"1 MoNuSeg image.*{TRAIN_NAMES[2]}.tif"):
        monuseg(str(monuseg_raw), str(out))
    assert not out.exists()
    with pytest.raises(FileNotFoundError, match=r"no \.tif images in"):
        monuseg(str(monuseg_raw / "MoNuSeg 2018 Training Data" / "Annotations"), str(out))


# --------------------------------------------------------------------------------------------------------------------
# GlaS


def _glas_label() -> np.ndarray:
    """A 30x40 instance label image with glands 1 and 2."""
    label = np.zeros((30, 40), dtype=np.uint8)
    label[2:10, 5:20] = 1
    label[15:25, 25:38] = 2
    return label


@pytest.fixture
def glas_raw(tmp_path: Path) -> Path:
    """Six training images of three patients, two testA and one testB image, Grade.csv and a stray picture."""
    folder = tmp_path / "raw" / "Warwick QU Dataset (Released 2016_07_08)"
    folder.mkdir(parents=True)
    names = [f"train_{i}" for i in range(1, 7)] + ["testA_1", "testA_2", "testB_1"]
    rows = ["name,patient ID, grade (GlaS), grade (Sirinukunwattana et al. 2015)"]
    for i, name in enumerate(names):
        Image.fromarray(_rgb(i, (30, 40))).save(folder / f"{name}.bmp")
        Image.fromarray(_glas_label()).save(folder / f"{name}_anno.bmp")
        rows.append(f"{name},{i // 2 + 1}, benign, healthy")
    (folder / "Grade.csv").write_text("\n".join(rows) + "\n")
    Image.fromarray(_rgb(99, (8, 8))).save(folder / "overview.bmp")
    return tmp_path / "raw"


def test_glas_sections_groups_and_masks(glas_raw, tmp_path):
    before = _snapshot(glas_raw)
    out = tmp_path / "out"
    datalist = glas(str(glas_raw), str(out), size=0, val_fraction=0.34)
    assert {k: len(v) for k, v in datalist.items()} == {"training": 4, "validation": 2, "test": 3}
    groups = {s: {e["group"] for e in datalist[s]} for s in ("training", "validation")}
    assert len(groups["validation"]) == 1 and not groups["training"] & groups["validation"]  # a patient is 2 images
    assert sorted((Path(e["image"]).stem, e["subset"]) for e in datalist["test"]) == [
        ("testA_1", "testA"),
        ("testA_2", "testA"),
        ("testB_1", "testB"),
    ]
    assert all(Path(e["image"]).stem.startswith("train_") for s in ("training", "validation") for e in datalist[s])
    for entry in [e for entries in datalist.values() for e in entries]:
        mode, image = _read(out / entry["image"])
        assert mode == "RGB" and image.shape == (30, 40, 3)
        mode, mask = _read(out / entry["label"])
        assert mode == "L"
        np.testing.assert_array_equal(mask, (_glas_label() > 0).astype(np.uint8) * 255)
    assert _snapshot(glas_raw) == before


def test_glas_resize_nearest(glas_raw, tmp_path):
    datalist = glas(str(glas_raw / "Warwick QU Dataset (Released 2016_07_08)"), str(tmp_path / "out"), size=20)
    rows, cols = ((np.arange(20) + 0.5) * 30 / 20).astype(int), ((np.arange(20) + 0.5) * 40 / 20).astype(int)
    expected = (_glas_label()[np.ix_(rows, cols)] > 0).astype(np.uint8) * 255
    for entry in datalist["training"] + datalist["test"]:
        assert _read(tmp_path / "out" / entry["image"])[1].shape == (20, 20, 3)
        np.testing.assert_array_equal(_read(tmp_path / "out" / entry["label"])[1], expected)


def test_glas_missing_label_is_named(glas_raw, tmp_path):
    (glas_raw / "Warwick QU Dataset (Released 2016_07_08)" / "testB_1_anno.bmp").unlink()
    with pytest.raises(ValueError, match=r"testB_1\.bmp"):
        glas(str(glas_raw), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_command_line(glas_raw, tmp_path):
    out = tmp_path / "out"
    main(["glas", "--data_dir", str(glas_raw), "--output_dir", str(out), "--size", "16"])
    assert len(load_datalist(out / "datalist.json", "test")) == 3
    with pytest.raises(SystemExit) as exit_info:
        main(["glas", "--data_dir", str(glas_raw), "--output_dir", str(out)])
    assert exit_info.value.code == 1
