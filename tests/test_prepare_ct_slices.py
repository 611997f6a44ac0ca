"""Tests of ``tools.prepare_ct_slices`` on tiny synthetic CT volumes in the TotalSegmentator and nnU-Net layouts."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.transforms import LoadImage
from nibabel.orientations import apply_orientation, axcodes2ornt, ornt_transform

from common.data import ct_slice, load_datalist
from tools.prepare_ct_slices import CT_WINDOWS, main, prepare_ct_slices, read_class_names, remove_background

SIZE, DEPTH = 32, 6  # in-plane side and depth of the synthetic volumes
#: Storage in the radiological orientation the tool writes (rows posterior, columns to the left): read unchanged.
PLS = np.array([[0.0, -1.0, 0.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
ORGANS = ("liver", "spleen", "kidney_right")  # ct_slice's first three labels


def _volume(seed: int, depth: int = DEPTH) -> tuple[np.ndarray, np.ndarray]:
    """A CT volume (HU) and its labels (0..3) from ``ct_slice``; the first and last slices carry no label."""
    slices = [ct_slice(SIZE, rng=seed * 100 + z, num_organs=len(ORGANS)) for z in range(depth)]
    ct = np.stack([image[0] for image, _ in slices], axis=-1)
    label = np.stack([lab for _, lab in slices], axis=-1)
    label[..., 0] = label[..., -1] = 0
    return ct.astype(np.float32), label.astype(np.uint8)


def _save(path: Path, array: np.ndarray, affine: np.ndarray = PLS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def _read(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


def _window(hu: np.ndarray, low: float = -1000.0, high: float = 1000.0) -> np.ndarray:
    return np.clip((hu - low) / (high - low), 0, 1).astype(np.float32)


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _masks_case(root: Path, name: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A TotalSegmentator-style case: ct.nii.gz and one binary mask per organ; the spleen mask also claims a block of
    the liver (an overlap)."""
    ct, label = _volume(seed)
    _save(root / name / "ct.nii.gz", ct)
    masks = {organ: label == value for value, organ in enumerate(ORGANS, start=1)}
    liver = np.argwhere(masks["liver"])
    masks["spleen"][tuple(liver[:5].T)] = True
    for organ, mask in masks.items():
        _save(root / name / "segmentations" / f"{organ}.nii.gz", mask.astype(np.uint8))
    return ct, label


@pytest.fixture(scope="module")
def masks_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("totalseg") / "Totalsegmentator_dataset"
    for seed, name in enumerate(("s0000", "s0001")):
        _masks_case(root, name, seed)
    return root


@pytest.fixture(scope="module")
def nnunet_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five AutoPET-like cases: ``_0000`` CT, ``_0001`` PET (random, must be ignored), multi-label ``labelsTr``."""
    root = tmp_path_factory.mktemp("nnunet") / "Dataset001"
    for seed in range(5):
        ct, label = _volume(seed + 10)
        _save(root / "imagesTr" / f"patient{seed}_0000.nii.gz", ct)
        _save(root / "imagesTr" / f"patient{seed}_0001.nii.gz", np.random.default_rng(seed).random(ct.shape) * 9)
        _save(root / "labelsTr" / f"patient{seed}.nii.gz", label)
    return root


# --------------------------------------------------------------------------------------------------------------------
# layouts and classes


def test_masks_layout_merges_in_class_order_first_listed_wins(masks_root, tmp_path):
    before = _snapshot(masks_root)
    out = tmp_path / "out"
    datalist = prepare_ct_slices(str(masks_root), str(out), classes="spleen,liver", size=SIZE, seed=1)
    assert _snapshot(masks_root) == before  # the input is only read
    table = json.loads((out / "classes.json").read_text())
    assert table["labels"] == {"0": "background", "1": "spleen", "2": "liver"} and table["num_classes"] == 3
    assert "first" in table["overlap_rule"]
    record = json.loads((out / "preparation.json").read_text())["cases"]["s0000"]
    assert record["overlapping_voxels"] == 5 and record["slices"] == DEPTH - 2
    ct, label = _volume(0)
    expected = np.where(label == 2, 1, np.where(label == 1, 2, 0))  # spleen 1, liver 2, the kidney left out
    liver = np.argwhere(label == 1)
    expected[tuple(liver[:5].T)] = 1  # the overlap goes to spleen, listed first
    for z in range(1, DEPTH - 1):
        np.testing.assert_array_equal(_read(out / "labels" / f"s0000_s{z:03d}.nii.gz"), expected[..., z])
        np.testing.assert_allclose(_read(out / "images" / f"s0000_s{z:03d}.nii.gz"), _window(ct[..., z]), atol=1e-6)
    entries = [e for section in datalist.values() for e in section]
    assert {(e["case"], e["slice_index"]) for e in entries} == {(c, z) for c in ("s0000", "s0001") for z in range(1, 5)}


def test_masks_layout_default_classes_sorted_and_num_classes(masks_root, tmp_path):
    prepare_ct_slices(str(masks_root), str(tmp_path / "out"), size=SIZE)
    names = json.loads((tmp_path / "out" / "classes.json").read_text())["labels"]
    assert names == {"0": "background", "1": "kidney_right", "2": "liver", "3": "spleen"}
    with pytest.raises(ValueError, match=r"3 classes .* more than --num_classes 3"):
        prepare_ct_slices(str(masks_root), str(tmp_path / "other"), size=SIZE, num_classes=3)


def test_multi_label_case_folders_keep_or_select_values(tmp_path):
    root = tmp_path / "data"
    ct, label = _volume(3)
    _save(root / "case_a" / "ct.nii.gz", ct)
    _save(root / "case_a" / "seg.nii.gz", (label * 10).astype(np.uint8))  # values 0, 10, 20, 30
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"labels": {"background": 0, "liver": 10, "spleen": 20, "kidney_right": 30}}))
    prepare_ct_slices(str(root), str(tmp_path / "kept"), label_name="seg.nii.gz", class_names=str(names), size=SIZE)
    kept = json.loads((tmp_path / "kept" / "classes.json").read_text())
    assert kept["num_classes"] == 31 and kept["labels"]["20"] == "spleen"
    np.testing.assert_array_equal(_read(tmp_path / "kept" / "labels" / "case_a_s002.nii.gz"), label[..., 2] * 10)
    out = tmp_path / "chosen"
    prepare_ct_slices(
        str(root), str(out), label_name="seg.nii.gz", class_names=str(names), classes="spleen,10", size=SIZE
    )
    chosen = json.loads((out / "classes.json").read_text())
    assert chosen["labels"] == {"0": "background", "1": "spleen", "2": "liver"}
    assert chosen["sources"] == {"1": 20, "2": 10}
    np.testing.assert_array_equal(
        _read(out / "labels" / "case_a_s002.nii.gz"), np.select([label == 2, label == 1], [1, 2], 0)[..., 2]
    )


def test_paired_layout_reads_the_ct_channel_and_loads_with_monai(nnunet_root, tmp_path):
    out = tmp_path / "out"
    prepare_ct_slices(str(nnunet_root), str(out), size=SIZE, val_fraction=0.2, test_fraction=0.2)
    ct, _ = _volume(12)
    np.testing.assert_allclose(_read(out / "images" / "patient2_s003.nii.gz"), _window(ct[..., 3]), atol=1e-6)
    loader = LoadImage(image_only=True, ensure_channel_first=True)
    for section in ("training", "validation", "test"):
        for entry in load_datalist(out / "datalist.json", section):
            image, lab = loader(entry["image"]), loader(entry["label"])
            assert image.shape == lab.shape == (1, SIZE, SIZE)
            assert float(image.min()) >= 0 and float(image.max()) <= 1
    assert nib.load(out / "images" / "patient2_s003.nii.gz").get_data_dtype() == np.float32
    assert nib.load(out / "labels" / "patient2_s003.nii.gz").get_data_dtype() == np.uint8


def test_read_class_names_forms(tmp_path):
    path = tmp_path / "names.json"
    path.write_text(json.dumps({"labels_present": {"a": {"1": "liver"}, "b": {"1": "lung"}, "c": {"2": "spleen"}}}))
    assert read_class_names(path, ["a", "c"]) == {1: "liver", 2: "spleen"}
    with pytest.raises(ValueError, match="value 1 is both 'liver' and 'lung'"):
        read_class_names(path, ["a", "b"])
    path.write_text(json.dumps({"0": "background", "3": "aorta"}))
    assert read_class_names(path) == {3: "aorta"}


# --------------------------------------------------------------------------------------------------------------------
# intensities, resizing, selection, orientation


def test_hu_window_values_default_and_named(tmp_path):
    root = tmp_path / "data"
    ct = np.zeros((SIZE, SIZE, 3), dtype=np.float32)
    ct[:, :8], ct[:, 8:16], ct[:, 16:24], ct[:, 24:] = -2000, -1000, 500, 3000
    ct[:4] = -600
    label = np.ones(ct.shape, dtype=np.uint8)
    _save(root / "c" / "ct.nii.gz", ct)
    _save(root / "c" / "seg.nii.gz", label)
    prepare_ct_slices(str(root), str(tmp_path / "wide"), label_name="seg.nii.gz", size=SIZE)
    image = _read(tmp_path / "wide" / "images" / "c_s001.nii.gz")
    assert image[10, 0] == 0 and image[10, 8] == 0 and image[10, 16] == 0.75 and image[10, 24] == 1
    assert image[0, 0] == pytest.approx(0.2)
    prepare_ct_slices(str(root), str(tmp_path / "lung"), label_name="seg.nii.gz", size=SIZE, window="lung")
    low, high = CT_WINDOWS["lung"]
    lung = _read(tmp_path / "lung" / "images" / "c_s001.nii.gz")
    assert lung[0, 0] == pytest.approx(0.5) and lung[10, 8] == pytest.approx((-1000 - low) / (high - low))
    with pytest.raises(ValueError, match="--window must be one of"):
        prepare_ct_slices(str(root), str(tmp_path / "x"), label_name="seg.nii.gz", window="liverish")
    with pytest.raises(ValueError, match="--window_max must be above"):
        prepare_ct_slices(str(root), str(tmp_path / "x"), label_name="seg.nii.gz", window_min=100, window_max=100)


@pytest.mark.parametrize("size", [12, 50])
def test_labels_resized_by_nearest_neighbour_only(tmp_path, size):
    root = tmp_path / "data"
    ct, label = _volume(5)
    ct, values = ct[:, 3:27], np.array([0, 3, 7, 200], dtype=np.uint8)  # a non-square 32 x 24 slice
    _save(root / "c" / "ct.nii.gz", ct)
    _save(root / "c" / "seg.nii.gz", values[label[:, 3:27]])
    prepare_ct_slices(str(root), str(tmp_path / "out"), label_name="seg.nii.gz", size=size)
    for path in sorted((tmp_path / "out" / "labels").iterdir()):
        written = _read(path)
        assert written.shape == (size, size) and set(np.unique(written)) <= {0, 3, 7, 200}
        assert written[:, 0].max() == 0  # the padding to a square is background
    image = _read(tmp_path / "out" / "images" / "c_s002.nii.gz")
    assert image.shape == (size, size) and image.min() >= 0 and image.max() <= 1


def test_keep_if_labelled_and_constant_slices(tmp_path):
    root = tmp_path / "data"
    ct, label = _volume(6)
    ct[..., 1] = -1000  # a labelled but constant slice
    _save(root / "c" / "ct.nii.gz", ct)
    _save(root / "c" / "seg.nii.gz", label)
    kept = prepare_ct_slices(str(root), str(tmp_path / "kept"), label_name="seg.nii.gz", size=SIZE)
    assert sorted(e["slice_index"] for s in kept.values() for e in s) == [2, 3, 4]
    assert json.loads((tmp_path / "kept" / "preparation.json").read_text())["cases"]["c"]["dropped_constant"] == 1
    every = prepare_ct_slices(
        str(root), str(tmp_path / "all"), label_name="seg.nii.gz", size=SIZE, keep_if_labelled=False
    )
    assert sorted(e["slice_index"] for s in every.values() for e in s) == [0, 2, 3, 4, 5]


def test_orientation_independent_of_storage_order(tmp_path):
    ct, label = _volume(7)
    to_ras = ornt_transform(axcodes2ornt(("P", "L", "S")), axcodes2ornt(("R", "A", "S")))
    ras = [apply_orientation(array, to_ras) for array in (ct, label)]
    assert not np.array_equal(ras[0], ct)  # the RAS files store the voxels in another order
    for name, affine, (image, lab) in (("pls", PLS, (ct, label)), ("ras", np.eye(4), ras)):
        _save(tmp_path / name / "images" / "c.nii.gz", image, affine)
        _save(tmp_path / name / "labels" / "c.nii.gz", lab.astype(np.uint8), affine)
        prepare_ct_slices(str(tmp_path / name), str(tmp_path / f"{name}_out"), size=SIZE)
    for z in range(1, DEPTH - 1):
        for kind in ("images", "labels"):
            np.testing.assert_array_equal(
                _read(tmp_path / "pls_out" / kind / f"c_s{z:03d}.nii.gz"),
                _read(tmp_path / "ras_out" / kind / f"c_s{z:03d}.nii.gz"),
            )


def test_remove_background_keeps_large_components_only():
    image = np.full((64, 64), 0.05, dtype=np.float32)
    yy, xx = np.mgrid[:64, :64]
    image[(yy - 30) ** 2 + (xx - 32) ** 2 < 20**2] = 0.5  # the body: about 1250 pixels
    image[58:60, 10:54] = 0.6  # the table: 88 pixels
    cleaned, body = remove_background(image, threshold=0.1, min_area=1000)
    assert body is not None and body[30, 32] and not body[59, 20]
    assert cleaned[59, 20] == 0 and cleaned[30, 32] == 0.5 and cleaned[0, 0] == 0
    unchanged, none = remove_background(image, threshold=0.1, min_area=5000)
    assert none is None and unchanged is image


def test_background_removal_through_the_tool(nnunet_root, tmp_path):
    out = tmp_path / "out"
    prepare_ct_slices(str(nnunet_root), str(out), size=SIZE, remove_background=True, background_min_area=50)
    image = _read(out / "images" / "patient0_s002.nii.gz")
    assert image[0, 0] == 0 and image[SIZE // 2, SIZE // 2] > 0


# --------------------------------------------------------------------------------------------------------------------
# splits


def test_split_by_case_is_seeded_and_keeps_cases_together(nnunet_root, tmp_path):
    runs = [
        prepare_ct_slices(str(nnunet_root), str(tmp_path / f"r{i}"), size=16, val_fraction=0.2, test_fraction=0.2)
        for i in range(2)
    ]
    assert runs[0] == runs[1]
    sections = {}
    for section, entries in runs[0].items():
        assert entries, section
        for entry in entries:
            assert sections.setdefault(entry["case"], section) == section
    assert len(sections) == 5
    slabs = prepare_ct_slices(str(nnunet_root), str(tmp_path / "slabs"), size=16, slab_size=2, seed=3)
    assert all(e["group"] == f"{e['case']}:{e['slice_index'] // 2}" for s in slabs.values() for e in s)


# --------------------------------------------------------------------------------------------------------------------
# bad input


def test_missing_files_name_the_case(masks_root, nnunet_root, tmp_path):
    root = tmp_path / "data"
    ct, label = _volume(8)
    _save(root / "good" / "ct.nii.gz", ct)
    _save(root / "good" / "seg.nii.gz", label)
    _save(root / "no_ct" / "seg.nii.gz", label)
    with pytest.raises(FileNotFoundError, match=r"case no_ct has no CT .*no_ct/ct\.nii\.gz"):
        prepare_ct_slices(str(root), str(tmp_path / "o1"), layout="case_folders", label_name="seg.nii.gz")
    (root / "no_ct" / "seg.nii.gz").rename(root / "no_ct" / "ct.nii.gz")
    with pytest.raises(FileNotFoundError, match=r"case no_ct has no label file .*seg\.nii\.gz"):
        prepare_ct_slices(str(root), str(tmp_path / "o2"), label_name="seg.nii.gz")
    with pytest.raises(FileNotFoundError, match=r"s0001: pancreas"):
        prepare_ct_slices(str(masks_root), str(tmp_path / "o3"), classes="liver,pancreas")
    paired = tmp_path / "paired"
    _save(paired / "imagesTr" / "p1_0000.nii.gz", ct)
    _save(paired / "labelsTr" / "p2.nii.gz", label)
    with pytest.raises(FileNotFoundError, match=r"p1 have no label file.*p2 have no CT image"):
        prepare_ct_slices(str(paired), str(tmp_path / "o4"))
    with pytest.raises(ValueError, match=r"--cases nobody not found"):
        prepare_ct_slices(str(nnunet_root), str(tmp_path / "o5"), cases="nobody")


def test_shape_mismatch_names_both_shapes_and_the_case(tmp_path):
    ct, label = _volume(9)
    _save(tmp_path / "d" / "images" / "p.nii.gz", ct)
    _save(tmp_path / "d" / "labels" / "p.nii.gz", label[:, :30])
    with pytest.raises(
        ValueError, match=r"case p: label .*p\.nii\.gz has shape \(32, 30, 6\) but the CT .* \(32, 32, 6\)"
    ):
        prepare_ct_slices(str(tmp_path / "d"), str(tmp_path / "out"))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (np.float32(1.5), "non-integer values"),
        (np.float32(np.nan), "non-integer values"),
        (np.int16(-2), r"values outside 0\.\.65535"),
    ],
)
def test_non_integer_label_names_the_file(tmp_path, values, message):
    ct, label = _volume(9)
    bad = label.astype(type(values))
    bad[3, 3, 2] = values
    _save(tmp_path / "d" / "images" / "p.nii.gz", ct)
    _save(tmp_path / "d" / "labels" / "p.nii.gz", bad)
    with pytest.raises(ValueError, match=rf"labels/p\.nii\.gz is not a label map: it holds {message}"):
        prepare_ct_slices(str(tmp_path / "d"), str(tmp_path / "out"))


def test_more_classes_than_num_classes_names_the_file(nnunet_root, tmp_path):
    with pytest.raises(ValueError, match=r"labelsTr/patient0\.nii\.gz has label values 3: more classes than --num_cl"):
        prepare_ct_slices(str(nnunet_root), str(tmp_path / "out"), num_classes=3)
    prepare_ct_slices(str(nnunet_root), str(tmp_path / "fits"), num_classes=4, size=16)


def test_command_line_errors_exit_1(nnunet_root, tmp_path, caplog):
    out = tmp_path / "out"
    out.mkdir()
    (out / "x.txt").write_text("taken")
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as exit_info:
        main(["--data_dir", str(nnunet_root), "--output_dir", str(out)])
    assert exit_info.value.code == 1 and "is not empty" in caplog.text
    with pytest.raises(SystemExit):
        main(["--data_dir", str(tmp_path / "nowhere"), "--output_dir", str(tmp_path / "o")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"neither case folders holding ct\.nii\.gz"):
        prepare_ct_slices(str(tmp_path / "empty"), str(tmp_path / "o"))


# --------------------------------------------------------------------------------------------------------------------
# the TotalSegmentator example the bundle's benchmark uses

EXAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "totalseg_example_ct_mr"


@pytest.mark.skipif(not (EXAMPLE / "images" / "ct_example.nii.gz").is_file(), reason="shared example data absent")
def test_totalsegmentator_example(tmp_path):
    out = tmp_path / "out"
    datalist = prepare_ct_slices(
        str(EXAMPLE), str(out), cases="ct_example", class_names=str(EXAMPLE / "labels.json"), size=64, slab_size=3
    )
    assert all(datalist.values()) and sum(len(s) for s in datalist.values()) == 30
    table = json.loads((out / "classes.json").read_text())
    assert table["labels"]["5"] == "liver" and table["num_classes"] == 118
    image = LoadImage(image_only=True, ensure_channel_first=True)(str(out / datalist["training"][0]["image"]))
    assert image.shape == (1, 64, 64)
