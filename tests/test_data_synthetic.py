"""Tests of the seeded synthetic generators and of ``write_synthetic_dataset``."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from scipy import ndimage

from common.data import (
    SYNTHETIC_KINDS,
    SyntheticKind,
    brain_slice,
    brain_volume,
    chest_xray,
    ct_slice,
    lung_mask,
    nuclei_tile,
    polyp_frame,
    write_synthetic_dataset,
)

GENERATORS = {
    "lung_mask": lambda rng: (lung_mask(64, rng),),
    "chest_xray": lambda rng: chest_xray(64, rng),
    "nuclei": lambda rng: nuclei_tile(64, rng, num_nuclei=(4, 8)),
    "brain_slice": lambda rng: brain_slice(64, rng),
    "brain_volume": lambda rng: brain_volume((32, 32, 16), rng),
    "ct_slice": lambda rng: ct_slice(64, rng),
    "polyp": lambda rng: polyp_frame(64, rng),
}
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_same_seed_same_arrays_different_seed_different(name):
    generate = GENERATORS[name]
    first, again, other = generate(3), generate(np.random.default_rng(3)), generate(4)
    for a, b, c in zip(first, again, other, strict=True):
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


def test_lung_mask_two_lungs_on_their_sides_with_plausible_area():
    for seed in range(4):
        label = lung_mask(128, seed)
        assert label.shape == (128, 128) and label.dtype == np.uint8
        assert set(np.unique(label).tolist()) == {0, 1, 2}
        _, count = ndimage.label(label > 0, structure=EIGHT_CONNECTED)
        assert count == 2
        for value in (1, 2):
            _, parts = ndimage.label(label == value, structure=EIGHT_CONNECTED)
            assert parts == 1
            assert not ndimage.binary_fill_holes(label == value)[label != value].any()  # no holes
        cols_left, cols_right = np.nonzero(label == 1)[1], np.nonzero(label == 2)[1]
        assert cols_left.max() < cols_right.min()  # label 1 on the image left, side by side
        rows_left, rows_right = np.nonzero(label == 1)[0], np.nonzero(label == 2)[0]
        assert abs(np.median(rows_left) - np.median(rows_right)) < 20
        assert 0.2 <= np.count_nonzero(label) / label.size <= 0.4


def test_lung_mask_varies_between_samples():
    areas = {int(np.count_nonzero(lung_mask(64, seed))) for seed in range(4)}
    assert len(areas) == 4


def test_chest_xray_has_darker_lungs():
    image, label = chest_xray(64, 1)
    assert image.shape == (1, 64, 64) and image.dtype == np.float32
    assert image.min() >= 0.0 and image.max() <= 1.0
    np.testing.assert_array_equal(label, lung_mask(64, 1))
    body = image[0][label == 0]
    assert image[0][label > 0].mean() < np.median(body[body > 0.2])


def test_nuclei_tile_has_several_dark_purple_nuclei():
    image, mask = nuclei_tile(128, 2, num_nuclei=(10, 20))
    assert image.shape == (3, 128, 128) and image.dtype == np.float32
    assert image.min() >= 0.0 and image.max() <= 1.0
    assert mask.dtype == np.uint8 and set(np.unique(mask).tolist()) == {0, 1}
    _, count = ndimage.label(mask, structure=EIGHT_CONNECTED)
    assert count >= 8
    nuclei, background = image[:, mask == 1].mean(axis=1), image[:, mask == 0].mean(axis=1)
    assert nuclei.mean() < background.mean()  # darker
    assert nuclei[2] > nuclei[1] and background[0] > background[1]  # purple nuclei, pink background
    with pytest.raises(ValueError, match="num_nuclei"):
        nuclei_tile(64, 0, num_nuclei=(5, 2))


def _check_brats(image, label, spatial):
    assert image.shape == (4, *spatial) and image.dtype == np.float32
    assert image.min() >= 0.0 and image.max() <= 1.0
    assert label.shape == spatial and label.dtype == np.uint8
    assert set(np.unique(label).tolist()) == {0, 1, 2, 4}
    structure = ndimage.generate_binary_structure(label.ndim, label.ndim)
    core, necrotic = np.isin(label, (1, 4)), label == 1
    assert np.isin(label[ndimage.binary_dilation(necrotic, structure)], (1, 4)).all()  # necrosis inside enhancing
    assert np.isin(label[ndimage.binary_dilation(core, structure)], (1, 2, 4)).all()  # core inside edema
    means = [[image[c][label == v].mean() for v in (1, 2, 4)] for c in range(4)]
    assert means[1][2] > means[0][2] + 0.2  # enhancing rim is bright on T1ce only
    assert means[3][1] > means[0][1]  # edema is bright on FLAIR
    assert len({tuple(np.round(m, 2)) for m in means}) == 4  # four different contrasts


def test_brain_slice_nested_brats_regions():
    _check_brats(*brain_slice(128, 5), (128, 128))


def test_brain_volume_nested_brats_regions():
    _check_brats(*brain_volume((48, 48, 24), 6), (48, 48, 24))
    with pytest.raises(ValueError, match="shape"):
        brain_volume((32, 32), 0)


def test_ct_slice_hounsfield_units_and_organs():
    image, label = ct_slice(96, 7, num_organs=4)
    assert image.shape == (1, 96, 96) and image.dtype == np.float32
    assert image.min() < -900 and image.max() > 500  # air and bone
    assert set(np.unique(label).tolist()) == {0, 1, 2, 3, 4}
    assert abs(np.median(image[0][label == 1]) - 60) < 30  # liver-like soft tissue
    assert np.count_nonzero(label == 1) > np.count_nonzero(label == 3)  # liver larger than a kidney
    assert set(np.unique(ct_slice(64, 0, num_organs=6)[1]).tolist()) == set(range(7))
    assert not ct_slice(64, 0, num_organs=0)[1].any()
    with pytest.raises(ValueError, match="num_organs"):
        ct_slice(64, 0, num_organs=9)


def test_ct_slice_windowed_is_prepared_slice_layout():
    """The synthesis bundle's sample data looks like tools.prepare_ct_slices output: the wide window onto [0, 1]."""
    image, label = SYNTHETIC_KINDS["ct_slice_windowed"].generate(64, np.random.default_rng(3))
    hu, same_label = ct_slice(64, np.random.default_rng(3), num_organs=6)
    np.testing.assert_array_equal(label, same_label)
    np.testing.assert_allclose(image, np.clip((hu + 1000) / 2000, 0, 1), atol=1e-6)
    assert set(np.unique(label).tolist()) == set(range(7))


def test_polyp_frame_redder_polyp_and_dark_corners():
    image, mask = polyp_frame(64, 8)
    assert image.shape == (3, 64, 64) and image.dtype == np.float32
    assert image.min() >= 0.0 and image.max() <= 1.0
    assert set(np.unique(mask).tolist()) == {0, 1}
    red, green = image[0], image[1]
    assert red.mean() > green.mean()  # reddish mucosa
    assert red[mask == 1].mean() > red[mask == 0].mean()  # brighter, redder polyp
    assert image[:, 0, 0].max() < 0.05  # vignetted, black corner


@pytest.mark.parametrize("bad", [0, 8, "64", True])
def test_bad_size_is_a_clear_value_error(bad):
    with pytest.raises(ValueError, match="size"):
        lung_mask(bad, 0)


def test_bad_rng_is_a_clear_value_error():
    with pytest.raises(ValueError, match="rng"):
        lung_mask(64, "seed")


# write_synthetic_dataset ----------------------------------------------------------------------------------------------

EXPECTED_SHAPES = {  # kind -> (size, image shape after LoadImage(ensure_channel_first), label shape)
    "lung_mask": (64, None, (1, 64, 64)),
    "lung_labels": (64, None, (1, 64, 64)),
    "chest_xray": (64, (1, 64, 64), (1, 64, 64)),
    "nuclei": (64, (3, 64, 64), (1, 64, 64)),
    "polyp": (64, (3, 64, 64), (1, 64, 64)),
    "brain_slice": (64, (4, 64, 64), (1, 64, 64)),
    "brats_slice": (64, (4, 64, 64), (1, 64, 64)),
    "brain_volume": (32, (4, 32, 32, 16), (1, 32, 32, 16)),
    "ct_slice": (64, (1, 64, 64), (1, 64, 64)),
    "ct_slice_windowed": (64, (1, 64, 64), (1, 64, 64)),
}


@pytest.fixture(scope="module")
def load_image():
    from monai.transforms import LoadImage

    return LoadImage(image_only=True, ensure_channel_first=True)


def test_every_kind_has_an_expected_shape():
    assert set(EXPECTED_SHAPES) == set(SYNTHETIC_KINDS)


@pytest.mark.parametrize("kind", sorted(EXPECTED_SHAPES))
def test_written_dataset_loads_with_monai(kind, tmp_path, load_image):
    from monai.transforms import LoadImage

    size, image_shape, label_shape = EXPECTED_SHAPES[kind]
    datalist = write_synthetic_dataset(kind, tmp_path / "ds", num=4, seed=1, size=size)
    assert json.loads((tmp_path / "ds" / "datalist.json").read_text()) == datalist
    assert [len(datalist[s]) for s in ("training", "validation", "test")] == [2, 1, 1]
    entry = datalist["training"][0]
    assert set(entry) == ({"label"} if image_shape is None else {"image", "label"})
    label = load_image(str(tmp_path / "ds" / entry["label"]))
    assert tuple(label.shape) == label_shape
    assert set(np.unique(label.numpy()).tolist()) <= {0, 1, 2, 4, 255} | set(range(7))
    if image_shape is not None:
        path = str(tmp_path / "ds" / entry["image"])
        loader = (
            load_image
            if kind not in ("brain_slice", "brats_slice")
            else LoadImage(image_only=True, ensure_channel_first=True, reader="NibabelReader", channel_dim=-1)
        )
        assert tuple(loader(path).shape) == image_shape


def test_png_values_binary_and_multi_label(tmp_path):
    from PIL import Image

    polyp = write_synthetic_dataset("polyp", tmp_path / "polyp", num=1, size=32, val_fraction=0, test_fraction=0)
    assert set(np.unique(np.asarray(Image.open(tmp_path / "polyp" / polyp["training"][0]["label"])))) == {0, 255}
    for kind, values in (("lung_mask", {0, 255}), ("lung_labels", {0, 1, 2})):
        lungs = write_synthetic_dataset(kind, tmp_path / kind, num=1, size=64, val_fraction=0, test_fraction=0)
        assert set(np.unique(np.asarray(Image.open(tmp_path / kind / lungs["training"][0]["label"])))) == values
        assert not (tmp_path / kind / "images").exists()


def _contents(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("kind", ["nuclei", "ct_slice"])  # PNG and NIfTI
def test_same_seed_identical_files_and_different_seed_different(kind, tmp_path):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        write_synthetic_dataset(kind, tmp_path / name, num=2, seed=seed, size=32)
    assert _contents(tmp_path / "a") == _contents(tmp_path / "b")
    assert _contents(tmp_path / "a") != _contents(tmp_path / "c")
    assert sorted(os.listdir(tmp_path)) == ["a", "b", "c"]  # no temporary folders left


def test_existing_dataset_is_reused_and_anything_else_refused(tmp_path):
    out = tmp_path / "ds"
    first = write_synthetic_dataset("polyp", out, num=2, size=32)
    stamp = (out / "datalist.json").stat().st_mtime_ns
    assert write_synthetic_dataset("polyp", out, num=2, size=32) == first
    assert (out / "datalist.json").stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match="ds"):
        write_synthetic_dataset("polyp", out, num=3, size=32)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="other"):
        write_synthetic_dataset("polyp", other, num=2, size=32)
    assert (other / "notes.txt").read_text() == "mine"


def test_unknown_kind_lists_valid_kinds(tmp_path):
    with pytest.raises(ValueError, match=r"lung_mask.*polyp"):
        write_synthetic_dataset("xray", tmp_path / "ds")


def test_failed_generation_leaves_nothing(tmp_path, monkeypatch):
    def broken(size, rng):
        raise RuntimeError("generator failed")

    monkeypatch.setitem(SYNTHETIC_KINDS, "polyp", SyntheticKind(broken, ".png", True))
    with pytest.raises(RuntimeError, match="generator failed"):
        write_synthetic_dataset("polyp", tmp_path / "ds", num=2, size=32)
    assert os.listdir(tmp_path) == []
