"""Property-based tests (hypothesis) of the mask transforms in ``common`` that every bundle's data pipeline relies on.

The example-based tests pin a few hand-made cases; these draw many small random inputs (masks up to 24 x 24,
volumes up to 6 x 6 x 6) and check the contracts the docstrings state, for every input:

1. ``common.transforms.sdf``: ``mask -> SDF -> mask`` gives the mask back exactly (``mask == (sdf <= 0)``), the SDF is
   zero on the inner one-pixel boundary, negative inside, positive outside, its magnitude is the clipped,
   normalised, scaled Euclidean distance to the boundary, and the empty/all-foreground masks give the documented
   constants ``+limit * scale`` / ``-limit * scale``. Score-based segmentation on SDFs relies on this inversion.
2. ``common.transforms.corruption``: every Post-DAE corruption (each kind alone and ``RandMaskCorruption``) keeps
   the input's type, shape and dtype, leaves the input untouched, outputs only 0/1, is reproducible from a seed, and
   moves pixels only in the direction its docstring says (dilation/disc addition only add, erosion/holes/tile
   deletion only remove, salt-and-pepper flips exactly ``round(density * H * W)`` pixels, edge swaps stay near
   boundaries).
3. Slice extraction (``common.transforms.slices`` and ``common.data.volume_slices``): the selected indices lie in
   ``[0, size)``, are sorted and unique (explicit indices are returned as given), follow Python slice semantics and
   the label filters, and every extracted slice equals the volume indexed at its index.

Sizes and ``max_examples`` are small so that the file runs in well under a minute on two CPU cores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from common.data.brats import BRATS_MODALITIES, brats_slice, normalize_slice, remap_brats_labels
from common.data.volume_slices import _labelled_slices
from common.transforms.corruption import CORRUPTION_KINDS, RandMaskCorruption, make_corruption
from common.transforms.sdf import MaskToSDF, SDFToMask, mask_to_sdf
from common.transforms.slices import ExtractSlicesd, select_slice_indices

SETTINGS = settings(max_examples=60, deadline=None, database=None)
FEW = settings(max_examples=30, deadline=None, database=None)

# ----------------------------------------------------------------------------------------------------------------------
# strategies


def binary_masks(max_side: int = 24, min_side: int = 1) -> st.SearchStrategy[np.ndarray]:
    """Random 2D uint8 masks of 0/1 with sides in ``[min_side, max_side]`` (hypothesis shrinks towards empty)."""
    shapes = st.tuples(st.integers(min_side, max_side), st.integers(min_side, max_side))
    return shapes.flatmap(lambda shape: arrays(np.uint8, shape, elements=st.integers(0, 1)))


def channel_masks(max_side: int = 16, max_channels: int = 2) -> st.SearchStrategy[np.ndarray]:
    """Random channel-first boolean masks ``(C, H, W)``."""
    shapes = st.tuples(st.integers(1, max_channels), st.integers(1, max_side), st.integers(1, max_side))
    return shapes.flatmap(lambda shape: arrays(np.bool_, shape, elements=st.booleans()))


def _as_container(mask: np.ndarray, dtype: str, as_torch: bool) -> np.ndarray | torch.Tensor:
    """``mask`` (0/1) cast to ``dtype`` (a numpy dtype name), as a numpy array or a torch tensor."""
    array = mask.astype(dtype)
    return torch.from_numpy(array.copy()) if as_torch else array


def _to_numpy(value: np.ndarray | torch.Tensor) -> np.ndarray:
    return value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def _inner_boundary(mask: np.ndarray) -> np.ndarray:
    """Foreground pixels with a 4-neighbour in the background; neighbours outside the image do not count."""
    fg = mask.astype(bool)
    touches = np.zeros_like(fg)
    touches[1:, :] |= ~fg[:-1, :]
    touches[:-1, :] |= ~fg[1:, :]
    touches[:, 1:] |= ~fg[:, :-1]
    touches[:, :-1] |= ~fg[:, 1:]
    return fg & touches


EMPTY = np.zeros((5, 7), dtype=np.uint8)
FULL = np.ones((6, 4), dtype=np.uint8)
SINGLE = np.pad(np.ones((1, 1), dtype=np.uint8), 3)

# ----------------------------------------------------------------------------------------------------------------------
# 1. SDF round trip


@SETTINGS
@given(
    mask=binary_masks(),
    truncation=st.floats(0.5, 30.0),
    normalize=st.booleans(),
    scale=st.floats(1e-3, 10.0),
)
@example(mask=EMPTY, truncation=15.0, normalize=True, scale=1.0)
@example(mask=FULL, truncation=15.0, normalize=True, scale=1.0)
@example(mask=SINGLE, truncation=15.0, normalize=False, scale=0.2)
def test_sdf_round_trip_sign_and_magnitude(mask: np.ndarray, truncation: float, normalize: bool, scale: float) -> None:
    sdf = mask_to_sdf(mask, truncation=truncation, normalize=normalize, scale=scale)
    assert sdf.shape == mask.shape
    assert sdf.dtype == np.float32
    # the round trip is exact: foreground == (sdf <= 0)
    np.testing.assert_array_equal((sdf <= 0).astype(np.uint8), mask)
    limit = (1.0 if normalize else truncation) * scale
    assert np.all(np.abs(sdf) <= np.float32(limit) * (1 + 1e-6))
    if not mask.any():  # documented: "outside everywhere"
        np.testing.assert_array_equal(sdf, np.full(mask.shape, limit, dtype=np.float32))
        return
    if mask.all():  # documented: no boundary, "inside everywhere"
        np.testing.assert_array_equal(sdf, np.full(mask.shape, -limit, dtype=np.float32))
        return
    boundary = _inner_boundary(mask)
    inside = mask.astype(bool) & ~boundary
    outside = ~mask.astype(bool)
    assert np.all(sdf[boundary] == 0)
    assert np.all(sdf[inside] < 0)
    assert np.all(sdf[outside] > 0)
    # magnitude: the brute-force Euclidean distance to the nearest boundary pixel, clipped, normalised, scaled
    points = np.argwhere(np.ones_like(mask, dtype=bool))
    edge = np.argwhere(boundary)
    distance = np.sqrt(((points[:, None, :] - edge[None, :, :]) ** 2).sum(-1)).min(1).reshape(mask.shape)
    expected = np.minimum(distance, truncation) / (truncation if normalize else 1.0) * scale
    np.testing.assert_allclose(np.abs(sdf), expected, rtol=1e-5, atol=1e-6 * scale)


@FEW
@given(
    mask=st.tuples(*[st.integers(1, 6)] * 3).flatmap(lambda shape: arrays(np.uint8, shape, elements=st.integers(0, 1))),
    truncation=st.floats(0.5, 10.0),
)
def test_sdf_round_trip_3d(mask: np.ndarray, truncation: float) -> None:
    sdf = mask_to_sdf(mask, truncation=truncation)
    assert sdf.shape == mask.shape
    np.testing.assert_array_equal((sdf <= 0).astype(np.uint8), mask)
    assert np.all(np.abs(sdf) <= 1.0)


@FEW
@given(
    masks=channel_masks(max_side=12, max_channels=3),
    dtype=st.sampled_from(["uint8", "float32", "float64", "int64", "bool"]),
    as_torch=st.booleans(),
)
def test_sdf_transforms_round_trip_channel_first(masks: np.ndarray, dtype: str, as_torch: bool) -> None:
    img = _as_container(masks, dtype, as_torch)
    sdf = MaskToSDF(truncation=5.0, scale=0.2)(img)
    assert type(sdf) is type(img)
    assert tuple(sdf.shape) == masks.shape
    expected_float = dtype if dtype in ("float32", "float64") else "float32"
    assert str(sdf.dtype).removeprefix("torch.") == expected_float
    back = SDFToMask()(sdf)
    assert type(back) is type(img)
    assert str(back.dtype).removeprefix("torch.") == expected_float
    np.testing.assert_array_equal(_to_numpy(back), masks.astype(expected_float))


@FEW
@given(mask=binary_masks(max_side=8), bad=st.sampled_from([2, -1, 0.5, 255]))
def test_sdf_rejects_non_binary_masks(mask: np.ndarray, bad: float) -> None:
    corrupted = mask.astype(np.float32)
    corrupted.flat[0] = bad
    with pytest.raises(ValueError, match="must be binary"):
        mask_to_sdf(corrupted)
    with pytest.raises(ValueError, match="must be binary"):
        MaskToSDF()(corrupted[None])


def test_sdf_scale_that_does_not_fit_float32_is_refused() -> None:
    """A scale so small that one pixel's distance underflows to 0 would lose the sign: refused up front."""
    mask = np.zeros((5, 5), dtype=np.uint8)
    mask[1:4, 1:4] = 1
    with pytest.raises(ValueError, match="does not fit a float32 SDF"):
        mask_to_sdf(mask, truncation=15.0, normalize=True, scale=1e-46)
    with pytest.raises(ValueError, match="does not fit a float32 SDF"):
        mask_to_sdf(mask, truncation=15.0, normalize=False, scale=1e38)


# ----------------------------------------------------------------------------------------------------------------------
# 2. corruptions keep shape, dtype and binarity, and are reproducible

# parameters sized for masks of a few pixels (the defaults are for 512 x 512)
SMALL_KWARGS: dict[str, dict[str, Any]] = {
    "edge_swap": {"num_swaps": 6, "max_distance": 3},
    "tile_deletion": {"patch_size": 4, "max_patches": 3},
    "disc_addition": {"radius": 2, "max_discs": 3},
    "erosion": {"max_radius": 2},
    "dilation": {"max_radius": 2},
    "holes": {"max_holes": 3, "max_radius": 3},
    "salt_pepper": {"density": 0.1},
    "blocks": {"max_blocks": 3, "max_size": 5},
}
DTYPES = st.sampled_from(["uint8", "float32", "int64", "bool"])
SEEDS = st.integers(0, 2**32 - 1)


def _corrupt(kind: str, img: np.ndarray | torch.Tensor, seed: int) -> np.ndarray | torch.Tensor:
    return make_corruption(kind, **SMALL_KWARGS[kind]).set_random_state(seed=seed)(img)


def _assert_same_container(out: Any, img: np.ndarray | torch.Tensor) -> np.ndarray:
    """Same type, shape and dtype as ``img``, values in {0, 1}; return ``out`` as a boolean numpy array."""
    assert type(out) is type(img)
    assert tuple(out.shape) == tuple(img.shape)
    assert out.dtype == img.dtype
    values = _to_numpy(out)
    assert np.all((values == 0) | (values == 1))
    return values.astype(bool)


@SETTINGS
@given(
    masks=channel_masks(),
    kind=st.sampled_from(CORRUPTION_KINDS),
    dtype=DTYPES,
    as_torch=st.booleans(),
    seed=SEEDS,
)
@example(masks=np.zeros((1, 6, 6), bool), kind="edge_swap", dtype="uint8", as_torch=False, seed=0)
@example(masks=np.zeros((1, 6, 6), bool), kind="holes", dtype="uint8", as_torch=False, seed=0)
@example(masks=np.zeros((1, 6, 6), bool), kind="tile_deletion", dtype="uint8", as_torch=False, seed=0)
@example(masks=np.ones((2, 5, 3), bool), kind="edge_swap", dtype="float32", as_torch=True, seed=1)
@example(masks=np.ones((1, 1, 1), bool), kind="erosion", dtype="bool", as_torch=False, seed=2)
def test_single_corruption_keeps_shape_dtype_binary_and_is_seeded(
    masks: np.ndarray, kind: str, dtype: str, as_torch: bool, seed: int
) -> None:
    img = _as_container(masks, dtype, as_torch)
    before = _to_numpy(img).copy()
    out = _corrupt(kind, img, seed)
    result = _assert_same_container(out, img)
    np.testing.assert_array_equal(_to_numpy(img), before)  # the input is not modified in place
    np.testing.assert_array_equal(_to_numpy(_corrupt(kind, img, seed)), _to_numpy(out))  # same seed, same output

    if kind in ("dilation", "disc_addition"):  # only add foreground
        assert np.all(result >= masks)
    if kind in ("erosion", "holes", "tile_deletion"):  # only remove foreground
        assert np.all(result <= masks)
    if kind == "salt_pepper":  # exactly round(density * H * W) flips per channel
        flips = (result ^ masks).reshape(len(masks), -1).sum(1)
        assert np.all(flips == round(SMALL_KWARGS[kind]["density"] * masks[0].size))
    if kind in ("edge_swap", "holes") and not masks.any():  # documented: an empty mask is returned unchanged
        np.testing.assert_array_equal(result, masks)
    if kind == "edge_swap":
        if masks.all():  # no boundary: unchanged
            np.testing.assert_array_equal(result, masks)
        # changes stay within max_distance rows of an inner-boundary pixel of the same column
        reach = SMALL_KWARGS[kind]["max_distance"]
        for channel, changed in zip(masks, result ^ masks, strict=True):
            boundary_rows = [np.flatnonzero(col) for col in _inner_boundary(channel).T]
            for row, col in np.argwhere(changed):
                assert boundary_rows[col].size and np.abs(boundary_rows[col] - row).min() <= reach


@SETTINGS
@given(
    masks=channel_masks(),
    probs=st.lists(st.sampled_from([0.0, 0.5, 1.0]), min_size=len(CORRUPTION_KINDS), max_size=len(CORRUPTION_KINDS)),
    dtype=DTYPES,
    as_torch=st.booleans(),
    seed=SEEDS,
    default_kwargs=st.booleans(),
)
def test_rand_mask_corruption_keeps_shape_dtype_binary_and_is_seeded(
    masks: np.ndarray, probs: list[float], dtype: str, as_torch: bool, seed: int, default_kwargs: bool
) -> None:
    kwargs: dict[str, Any] = {f"{kind}_prob": prob for kind, prob in zip(CORRUPTION_KINDS, probs, strict=True)}
    if not default_kwargs:  # the defaults (sized for 512 x 512) must also work on tiny masks
        kwargs |= {f"{kind}_kwargs": SMALL_KWARGS[kind] for kind in CORRUPTION_KINDS}
    img = _as_container(masks, dtype, as_torch)
    before = _to_numpy(img).copy()
    out = RandMaskCorruption(**kwargs).set_random_state(seed=seed)(img)
    _assert_same_container(out, img)
    np.testing.assert_array_equal(_to_numpy(img), before)
    again = RandMaskCorruption(**kwargs).set_random_state(seed=seed)(img)
    np.testing.assert_array_equal(_to_numpy(again), _to_numpy(out))
    if not any(probs):  # every kind off: the identity
        np.testing.assert_array_equal(_to_numpy(out), before)


@FEW
@given(masks=channel_masks(), kind=st.sampled_from(CORRUPTION_KINDS), seed=SEEDS)
def test_corruption_with_prob_zero_is_identity(masks: np.ndarray, kind: str, seed: int) -> None:
    img = masks.astype(np.uint8)
    out = make_corruption(kind, prob=0.0, **SMALL_KWARGS[kind]).set_random_state(seed=seed)(img)
    np.testing.assert_array_equal(out, img)
    out = RandMaskCorruption(prob=0.0).set_random_state(seed=seed)(img)
    np.testing.assert_array_equal(out, img)


# ----------------------------------------------------------------------------------------------------------------------
# 3. slice extraction


@st.composite
def label_volumes(draw: st.DrawFn, max_side: int = 6, max_class: int = 3) -> np.ndarray:
    """A ``(1, H, W, D)`` uint8 label volume with classes ``0..max_class``, mostly background."""
    shape = tuple(draw(st.integers(1, max_side)) for _ in range(3))
    elements = st.sampled_from([0, 0, 0, *range(1, max_class + 1)])
    return draw(arrays(np.uint8, (1, *shape), elements=elements))


OPTIONAL_BOUND = st.none() | st.integers(-8, 8)
LABEL_PATH = Path("label.nii.gz")  # only named in messages, never read


@SETTINGS
@given(
    label=label_volumes(),
    axis=st.integers(0, 2),
    start=OPTIONAL_BOUND,
    stop=OPTIONAL_BOUND,
    step=st.integers(1, 3),
    keep_if_labelled=st.booleans(),
    num_per_class=st.none() | st.integers(1, 3),
    seed=st.integers(0, 1000),
)
def test_select_slice_indices_in_range_sorted_unique_and_filtered(
    label: np.ndarray,
    axis: int,
    start: int | None,
    stop: int | None,
    step: int,
    keep_if_labelled: bool,
    num_per_class: int | None,
    seed: int,
) -> None:
    volume = label[0]
    size = volume.shape[axis]
    kwargs = {"stop": stop, "step": step, "keep_if_labelled": keep_if_labelled, "num_per_class": num_per_class}
    if start is not None:
        kwargs["start"] = start
    candidates = list(range(size)[start:stop:step])
    selected = select_slice_indices(label, axis, seed=seed, **kwargs)

    assert all(isinstance(index, int) and 0 <= index < size for index in selected)
    assert selected == sorted(set(selected))
    assert set(selected) <= set(candidates)
    assert select_slice_indices(label, axis, seed=seed, **kwargs) == selected  # deterministic for a seed
    slices = np.moveaxis(volume, axis, 0)
    if not keep_if_labelled and num_per_class is None:
        assert selected == candidates
    elif num_per_class is None:
        assert selected == [i for i in candidates if slices[i].any()]
    else:
        assert all(slices[i].any() for i in selected)
        for value in np.unique(volume[volume > 0]):
            available = [i for i in candidates if (slices[i] == value).any()]
            chosen = [i for i in selected if (slices[i] == value).any()]
            assert len(chosen) >= min(num_per_class, len(available))
        assert len(selected) <= sum(
            min(num_per_class, sum((slices[i] == value).any() for i in candidates))
            for value in np.unique(volume[volume > 0])
        )


@pytest.mark.parametrize("filters", [{"keep_if_labelled": True}, {"num_per_class": 1}])
def test_empty_range_with_label_filter_selects_nothing(filters: dict[str, Any]) -> None:
    label = np.zeros((1, 1, 1, 1), dtype=np.uint8)
    assert select_slice_indices(label, 0, stop=0) == []  # passes: no filter
    assert select_slice_indices(label, 0, stop=0, **filters) == []


@FEW
@given(
    size=st.integers(1, 8),
    axis=st.integers(0, 2),
    indices=st.lists(st.integers(-10, 10), max_size=6),
)
def test_explicit_indices_are_returned_as_given_or_rejected(size: int, axis: int, indices: list[int]) -> None:
    if all(0 <= index < size for index in indices):
        assert select_slice_indices(None, axis, indices=indices, size=size) == indices
    else:
        with pytest.raises(ValueError, match="out of range"):
            select_slice_indices(None, axis, indices=indices, size=size)


@SETTINGS
@given(
    label=label_volumes(),
    channels=st.integers(1, 2),
    axis=st.integers(0, 2),
    step=st.integers(1, 2),
    keep_if_labelled=st.booleans(),
    num_per_class=st.none() | st.integers(1, 2),
    as_torch=st.booleans(),
)
def test_extract_slices_equals_volume_indexed_at_slice_index(
    label: np.ndarray,
    channels: int,
    axis: int,
    step: int,
    keep_if_labelled: bool,
    num_per_class: int | None,
    as_torch: bool,
) -> None:
    image = np.arange(channels * label[0].size, dtype=np.float32).reshape(channels, *label.shape[1:])
    data: dict[str, Any] = {"image": image, "label": label, "name": "case"}
    if as_torch:
        data = {**data, "image": torch.from_numpy(image.copy()), "label": torch.from_numpy(label.copy())}
    transform = ExtractSlicesd(
        ["image", "label"], axis=axis, step=step, keep_if_labelled=keep_if_labelled, num_per_class=num_per_class
    )
    samples = transform(data)
    expected = select_slice_indices(
        label, axis, step=step, keep_if_labelled=keep_if_labelled, num_per_class=num_per_class
    )
    assert [sample["slice_index"] for sample in samples] == expected
    for sample in samples:
        index = sample["slice_index"]
        assert sample["name"] == "case"
        for key, volume in (("image", image), ("label", label)):
            piece = sample[key]
            assert type(piece) is type(data[key])
            np.testing.assert_array_equal(_to_numpy(piece), np.take(volume, index, axis=axis + 1))
        # a copy: writing into a slice leaves the input volume alone
        sample["image"][...] = -1
    np.testing.assert_array_equal(_to_numpy(data["image"]), image)


@SETTINGS
@given(
    label=label_volumes(max_side=5),
    chosen=st.none() | st.lists(st.integers(-2, 7), min_size=1, max_size=5),
)
def test_labelled_slices_in_range_sorted_unique(label: np.ndarray, chosen: list[int] | None) -> None:
    raw = label[0]
    depth = raw.shape[-1]
    found = [i for i in range(depth) if raw[..., i].any()]
    if chosen is None:
        if not found:
            with pytest.raises(ValueError, match="no foreground"):
                _labelled_slices(raw, None, label_path=LABEL_PATH)
            return
        assert _labelled_slices(raw, None, label_path=LABEL_PATH) == found
        return
    if not all(0 <= index < depth for index in chosen):
        with pytest.raises(ValueError, match="is not an axial slice"):
            _labelled_slices(raw, chosen, label_path=LABEL_PATH)
        return
    result = _labelled_slices(raw, chosen, label_path=LABEL_PATH)
    assert result == sorted(set(chosen))
    assert all(0 <= index < depth for index in result)


@FEW
@given(
    side=st.integers(2, 8),
    depth=st.integers(1, 4),
    data=st.data(),
)
def test_brats_slice_at_native_size_is_the_volume_at_index(side: int, depth: int, data: st.DataObject) -> None:
    shape = (len(BRATS_MODALITIES), side, side, depth)
    volumes = data.draw(arrays(np.float32, shape, elements=st.floats(-100, 100, width=32)), label="volumes")
    seg = data.draw(arrays(np.uint8, shape[1:], elements=st.sampled_from([0, 1, 2, 4])), label="seg")
    index = data.draw(st.integers(0, depth - 1), label="index")
    image, label = brats_slice(volumes, seg, index, size=side)
    assert image.shape == (len(BRATS_MODALITIES), side, side)
    assert label is not None
    assert label.shape == (side, side)
    np.testing.assert_array_equal(label, remap_brats_labels(seg[..., index], "seg"))
    np.testing.assert_allclose(image, normalize_slice(volumes[..., index]), atol=1e-5)
    with pytest.raises(ValueError, match="outside the volume"):
        brats_slice(volumes, seg, depth, size=side)
