"""Tests of common.transforms.masks: binary mask checks and file-seeded corruption."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from common.data.synthetic import lung_mask
from common.transforms import CorruptMaskd, EnsureBinaryMask, EnsureBinaryMaskd, RandMaskCorruption, source_name

FILE = "/data/masks/case_007.png"
PATTERN = np.array([[0, 1, 1, 0], [0, 1, 0, 0], [1, 1, 0, 0]], dtype=np.uint8)  # not symmetric
CORRUPTION_32 = {
    "tile_deletion_kwargs": {"patch_size": 8, "max_patches": 3},
    "disc_addition_kwargs": {"radius": 3, "max_discs": 3},
    "edge_swap_kwargs": {"num_swaps": 20, "max_distance": 3},
}


def _meta(array, name: str = FILE) -> MetaTensor:
    return MetaTensor(torch.as_tensor(np.asarray(array)), meta={"filename_or_obj": name})


@pytest.mark.parametrize(
    "make",
    [
        lambda: PATTERN[None].astype(np.float32),
        lambda: PATTERN[None].astype(np.int64),
        lambda: (PATTERN[None] * 255).astype(np.uint8),
        lambda: PATTERN[None].astype(bool),
        lambda: torch.as_tensor(PATTERN[None] * 255, dtype=torch.uint8),
        lambda: torch.as_tensor(PATTERN[None], dtype=torch.bool),
        lambda: _meta(PATTERN[None] * 255),
        lambda: _meta(PATTERN[None].astype(np.float64)),
    ],
    ids=["np-float01", "np-int01", "np-uint8-255", "np-bool", "torch-uint8-255", "torch-bool", "meta-255", "meta-01"],
)
def test_accepts_binary_masks_and_returns_float01_of_same_type(make):
    mask = make()
    out = EnsureBinaryMask()(mask)
    assert type(out) is type(mask)
    if isinstance(out, torch.Tensor):
        assert out.dtype == torch.float32
    else:
        assert out.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(out), PATTERN[None].astype(np.float32))


def test_metatensor_keeps_its_metadata():
    out = EnsureBinaryMask()(_meta(PATTERN[None] * 255))
    assert isinstance(out, MetaTensor)
    assert out.meta["filename_or_obj"] == FILE


@pytest.mark.parametrize("scale", [1, 255])
def test_identical_channels_reduced_to_one(scale):
    mask = _meta(np.repeat(PATTERN[None] * scale, 3, axis=0).astype(np.uint8))
    out = EnsureBinaryMask()(mask)
    assert out.shape == (1, *PATTERN.shape)
    np.testing.assert_array_equal(np.asarray(out), PATTERN[None].astype(np.float32))


def test_differing_channels_rejected():
    channels = np.stack([PATTERN, PATTERN, 1 - PATTERN])
    with pytest.raises(ValueError, match=re.escape(FILE)) as err:
        EnsureBinaryMask()(_meta(channels))
    assert "got 3" in str(err.value)


def test_wrong_channel_count_rejected():
    with pytest.raises(ValueError, match=re.escape(FILE)) as err:
        EnsureBinaryMask(num_channels=2)(_meta(PATTERN[None]))
    assert "expected 2 channel(s), got 1" in str(err.value)


def test_two_channel_mask_accepted_when_expected():
    mask = np.stack([PATTERN, 1 - PATTERN]).astype(np.float32)
    np.testing.assert_array_equal(EnsureBinaryMask(num_channels=2)(mask), mask)


@pytest.mark.parametrize(
    "values, shown",
    [([0, 1, 2], "0, 1, 2"), ([0, 0.5, 1], "0, 0.5, 1"), ([0, 1, 255], "0, 1, 255"), ([0, 128], "0, 128")],
)
def test_non_binary_values_rejected_naming_file_and_values(values, shown):
    array = np.array(values * 4, dtype=np.float32).reshape(1, 2, -1)
    with pytest.raises(ValueError, match=re.escape(FILE)) as err:
        EnsureBinaryMask()(_meta(array))
    assert f"found values {shown}" in str(err.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_rejected(bad):
    array = PATTERN[None].astype(np.float32)
    array[0, 0, 0] = bad
    with pytest.raises(ValueError, match=re.escape(FILE)) as err:
        EnsureBinaryMask()(_meta(array))
    assert "NaN" in str(err.value)


def test_empty_mask_rejected_unless_allowed():
    empty = np.zeros((1, 4, 4), dtype=np.uint8)
    with pytest.raises(ValueError, match=re.escape(FILE)) as err:
        EnsureBinaryMask()(_meta(empty))
    assert "empty" in str(err.value)
    out = EnsureBinaryMask(allow_empty=True)(_meta(empty))
    assert out.dtype == torch.float32
    assert not out.any()


def test_plain_array_named_generically():
    with pytest.raises(ValueError, match="mask 'mask'"):
        EnsureBinaryMask()(np.full((1, 2, 2), 3))


def test_dictionary_version_names_file_and_key():
    check = EnsureBinaryMaskd(keys=["label", "pred"], allow_empty=False)
    good = _meta(PATTERN[None] * 255)
    out = check({"label": good, "pred": _meta(PATTERN[None]), "image": "untouched"})
    np.testing.assert_array_equal(np.asarray(out["label"]), PATTERN[None])
    assert out["image"] == "untouched"
    with pytest.raises(ValueError, match=re.escape(FILE)) as err:
        check({"label": good, "pred": _meta(np.full((1, 2, 2), 7))})
    assert "'pred'" in str(err.value)
    assert "7" in str(err.value)
    with pytest.raises(ValueError, match="key 'label'"):
        check({"label": np.zeros((1, 2, 2)), "pred": good})


def test_source_name():
    assert source_name(_meta(PATTERN[None])) == FILE
    assert source_name(PATTERN[None], default="x") == "x"


# ----------------------------------------------------------------------------------------------------------------
# CorruptMaskd


def _lung(name: str, seed: int = 0) -> MetaTensor:
    return _meta((lung_mask(32, seed) > 0)[None].astype(np.float32), name)


def _corrupt(fixed_seed: int | None = None) -> CorruptMaskd:
    return CorruptMaskd(keys="image", corruption=RandMaskCorruption(**CORRUPTION_32), fixed_seed=fixed_seed)


def _run(transform: CorruptMaskd, mask: MetaTensor) -> np.ndarray:
    return np.asarray(transform({"image": mask})["image"])


def test_fixed_seed_same_file_same_corruption():
    transform = _corrupt(fixed_seed=7)
    mask = _lung("/data/a/case_001.png")
    first = _run(transform, mask)
    _run(transform, _lung("/data/a/case_002.png"))  # other draws in between change nothing
    second = _run(transform, mask)
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, np.asarray(mask))
    # a fresh transform with the same seed, and the same file name in another folder, give the same corruption
    np.testing.assert_array_equal(_run(_corrupt(fixed_seed=7), _lung("/elsewhere/case_001.png")), first)


def test_fixed_seed_different_files_different_corruptions():
    transform = _corrupt(fixed_seed=7)
    mask = _lung("/data/a/case_001.png")
    first = _run(transform, mask)
    others = [_run(transform, _lung(f"/data/a/case_{i:03d}.png")) for i in range(2, 5)]
    assert all(not np.array_equal(first, other) for other in others)
    assert not np.array_equal(first, _run(_corrupt(fixed_seed=8), mask))


def test_fixed_seed_ignores_set_random_state():
    transform = _corrupt(fixed_seed=3)
    mask = _lung("/data/case_001.png")
    first = _run(transform.set_random_state(0), mask)
    np.testing.assert_array_equal(_run(transform.set_random_state(99), mask), first)


def test_without_fixed_seed_reproducible_with_set_random_state_and_fresh_each_call():
    mask = _lung("/data/case_001.png")
    transform = _corrupt().set_random_state(5)
    first, second = _run(transform, mask), _run(transform, mask)
    assert not np.array_equal(first, second)
    again = _corrupt().set_random_state(5)
    np.testing.assert_array_equal(_run(again, mask), first)
    np.testing.assert_array_equal(_run(again, mask), second)


def test_corrupt_keeps_type_and_binary_values():
    out = _corrupt(fixed_seed=1)({"image": _lung("/data/case_001.png"), "label": "kept"})
    assert isinstance(out["image"], MetaTensor)
    assert out["image"].meta["filename_or_obj"] == "/data/case_001.png"
    assert set(np.unique(np.asarray(out["image"]))) <= {0.0, 1.0}
    assert out["label"] == "kept"


def test_corruption_must_be_randomizable():
    with pytest.raises(TypeError, match="randomizable"):
        CorruptMaskd(keys="image", corruption=EnsureBinaryMask())
