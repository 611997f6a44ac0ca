"""Tests of common.transforms.corruption: synthetic corruptions of binary masks for Post-DAE."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from monai.data import MetaTensor
from skimage.draw import disk as draw_disk
from skimage.segmentation import find_boundaries

from common.transforms.corruption import (
    CORRUPTION_KINDS,
    RandBlocks,
    RandDilation,
    RandDiscAddition,
    RandEdgeSwap,
    RandErosion,
    RandHoles,
    RandMaskCorruption,
    RandSaltPepper,
    RandTileDeletion,
    make_corruption,
)

ALL_ON = {f"{kind}_prob": 1.0 for kind in CORRUPTION_KINDS}


def _blob(size: int = 64) -> np.ndarray:
    """A (1, size, size) float32 mask: a rectangle plus a disc, away from the image edge."""
    rows, cols = np.mgrid[:size, :size]
    mask = ((rows - size // 2) ** 2 + (cols - size // 3) ** 2 < (size // 5) ** 2) | (
        (rows > size // 4) & (rows < 3 * size // 4) & (cols > size // 2) & (cols < 7 * size // 8)
    )
    return mask[None].astype(np.float32)


def _seeded(transform, seed: int = 0):
    transform.set_random_state(seed)
    return transform


def test_kinds_and_factory():
    assert CORRUPTION_KINDS == (
        "edge_swap",
        "tile_deletion",
        "disc_addition",
        "erosion",
        "dilation",
        "holes",
        "salt_pepper",
        "blocks",
    )
    expected = [RandEdgeSwap, RandTileDeletion, RandDiscAddition, RandErosion, RandDilation, RandHoles]
    expected += [RandSaltPepper, RandBlocks]
    for kind, cls in zip(CORRUPTION_KINDS, expected, strict=True):
        assert type(make_corruption(kind)) is cls
    built = make_corruption("holes", max_holes=2, max_radius=3, prob=0.5)
    assert (built.max_holes, built.max_radius, built.prob) == (2, 3, 0.5)
    with pytest.raises(ValueError, match=r"'speckle'.*edge_swap.*blocks"):
        make_corruption("speckle")


def test_repository_defaults():
    swap, tiles, discs = RandEdgeSwap(), RandTileDeletion(), RandDiscAddition()
    assert (swap.num_swaps, swap.max_distance) == (300, 20)
    assert (tiles.patch_size, tiles.max_patches) == (32, 15)
    assert (discs.radius, discs.max_discs) == (8, 10)
    composite = RandMaskCorruption()
    assert [type(t) for t in composite.transforms[:3]] == [RandEdgeSwap, RandTileDeletion, RandDiscAddition]
    assert [t.prob for t in composite.transforms] == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_erosion_only_removes_and_dilation_only_adds(seed):
    mask = _blob()
    eroded = _seeded(RandErosion(max_radius=3), seed)(mask)
    dilated = _seeded(RandDilation(max_radius=3), seed)(mask)
    assert np.all(eroded <= mask) and eroded.sum() < mask.sum()
    assert np.all(dilated >= mask) and dilated.sum() > mask.sum()


def test_erosion_radius_one_matches_a_cross():
    mask = np.zeros((1, 7, 7), dtype=np.uint8)
    mask[0, 1:6, 1:6] = 1
    eroded = RandErosion(max_radius=1)(mask)
    expected = np.zeros_like(mask)
    expected[0, 2:5, 2:5] = 1
    np.testing.assert_array_equal(eroded, expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_holes_only_remove_and_discs_only_add(seed):
    mask = _blob()
    holed = _seeded(RandHoles(max_holes=3, max_radius=4), seed)(mask)
    assert np.all(holed <= mask) and holed.sum() < mask.sum()
    added = _seeded(RandDiscAddition(radius=3, max_discs=10), seed)(mask)
    assert np.all(added >= mask)


def test_disc_addition_draws_discs_of_the_given_radius():
    full_disc = len(draw_disk((20, 20), 3)[0])
    for seed in range(8):
        added = _seeded(RandDiscAddition(radius=3, max_discs=1), seed)(np.zeros((1, 40, 40)))
        assert added.sum() <= full_disc  # none, or one disc (clipped at the image edge)
        if added.sum() == full_disc:
            rows, cols = np.nonzero(added[0])
            assert rows.max() - rows.min() == cols.max() - cols.min() == 4


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_tile_deletion_removes_whole_tiles_only(seed):
    mask = _blob()
    out = _seeded(RandTileDeletion(patch_size=8, max_patches=6), seed)(mask)
    assert np.all(out <= mask)
    deleted = 0
    for row in range(0, 64, 8):
        for col in range(0, 64, 8):
            tile, before = out[0, row : row + 8, col : col + 8], mask[0, row : row + 8, col : col + 8]
            assert np.array_equal(tile, before) or not tile.any()
            deleted += int(before.any() and not tile.any())
    assert deleted <= 6


def test_tile_deletion_does_not_wipe_small_masks():
    mask = np.zeros((1, 64, 64), dtype=np.uint8)
    mask[0, 10:14, 10:14] = 1  # a single candidate tile: the repository always deleted it
    outcomes = {int(_seeded(RandTileDeletion(), seed)(mask).sum()) for seed in range(10)}
    assert outcomes == {0, 16}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_edge_swap_changes_stay_near_the_boundary(seed):
    mask = _blob()
    max_distance = 4
    out = _seeded(RandEdgeSwap(num_swaps=60, max_distance=max_distance), seed)(mask)
    changed = np.argwhere(out[0] != mask[0])
    assert len(changed) > 0
    boundary = find_boundaries(mask[0].astype(bool), mode="inner")
    for row, col in changed:
        lo, hi = max(row - max_distance, 0), row + max_distance + 1
        assert boundary[lo:hi, col].any(), (row, col)


def test_edge_swap_uses_all_edges_when_there_are_few():
    mask = np.zeros((1, 20, 20), dtype=np.uint8)
    mask[0, 8:10, 8:10] = 1  # four boundary pixels, far fewer than num_swaps
    out = _seeded(RandEdgeSwap(num_swaps=300, max_distance=3), 0)(mask)
    assert out.shape == mask.shape and not np.array_equal(out, mask)


def test_salt_pepper_flips_the_requested_fraction():
    mask = _blob(32)
    out = _seeded(RandSaltPepper(density=0.1), 0)(mask)
    assert int((out != mask).sum()) == round(0.1 * 32 * 32)


def test_blocks_are_bounded_rectangles():
    mask = _blob()
    for seed in range(5):
        out = _seeded(RandBlocks(max_blocks=1, max_size=6), seed)(mask)
        changed = np.argwhere(out[0] != mask[0])
        if len(changed):
            extent = changed.max(axis=0) - changed.min(axis=0) + 1
            assert np.all(extent <= 6)
            assert len(np.unique(out[0][tuple(changed.T)])) == 1  # one block: all set to 1 or all to 0


@pytest.mark.parametrize("kind", CORRUPTION_KINDS)
def test_small_and_empty_masks_do_not_crash(kind):
    transform = _seeded(make_corruption(kind), 0)
    empty = np.zeros((1, 16, 16), dtype=np.uint8)
    tiny = empty.copy()
    tiny[0, 5, 6:8] = 1
    for mask in (empty, tiny, np.ones((1, 3, 3), dtype=np.uint8)):
        out = transform(mask)
        assert out.shape == mask.shape and out.dtype == mask.dtype
        assert set(np.unique(out).tolist()) <= {0, 1}
    if kind in ("edge_swap", "tile_deletion", "erosion", "dilation", "holes"):
        np.testing.assert_array_equal(transform(empty), empty)


@pytest.mark.parametrize("kind", CORRUPTION_KINDS)
def test_each_kind_is_reproducible_and_seed_dependent(kind):
    mask = _blob()
    first = _seeded(make_corruption(kind), 3)(mask)
    again = _seeded(make_corruption(kind), 3)(mask)
    np.testing.assert_array_equal(first, again)
    outputs = [_seeded(make_corruption(kind), seed)(mask) for seed in range(4, 8)]
    assert any(not np.array_equal(first, out) for out in outputs)


def test_composite_is_reproducible_and_seed_dependent():
    mask = _blob()
    first = _seeded(RandMaskCorruption(**ALL_ON), 0)(mask)
    again = _seeded(RandMaskCorruption(**ALL_ON), 0)(mask)
    other = _seeded(RandMaskCorruption(**ALL_ON), 1)(mask)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert not np.array_equal(first, mask)


def test_composite_applies_kinds_in_order_with_their_parameters():
    mask = _blob()
    kwargs = {"holes_kwargs": {"max_holes": 2, "max_radius": 3}, "erosion_kwargs": {"max_radius": 2}}
    composite = _seeded(RandMaskCorruption(0.0, 0.0, 0.0, erosion_prob=1.0, holes_prob=1.0, **kwargs), 5)
    assert composite.transforms[5].max_radius == 3 and composite.transforms[3].max_radius == 2
    out = composite(mask)
    assert np.all(out <= mask) and out.sum() < mask.sum()

    manual = RandMaskCorruption(0.0, 0.0, 0.0, erosion_prob=1.0, holes_prob=1.0, **kwargs)
    manual.set_random_state(5)
    erosion, holes = manual.transforms[3], manual.transforms[5]
    np.testing.assert_array_equal(out, holes(erosion(mask)))


def test_probabilities_zero_leave_the_mask_unchanged():
    mask = _blob()
    off = {f"{kind}_prob": 0.0 for kind in CORRUPTION_KINDS}
    np.testing.assert_array_equal(_seeded(RandMaskCorruption(**off), 0)(mask), mask)
    np.testing.assert_array_equal(_seeded(RandMaskCorruption(**ALL_ON, prob=0.0), 0)(mask), mask)
    np.testing.assert_array_equal(_seeded(RandErosion(prob=0.0), 0)(mask), mask)


def test_types_dtypes_and_channels_are_preserved():
    mask = np.concatenate([_blob(32), np.zeros((1, 32, 32), dtype=np.float32)])
    out = _seeded(RandMaskCorruption(**ALL_ON), 0)(torch.as_tensor(mask))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == (2, 32, 32)
    meta = MetaTensor(torch.as_tensor(mask).to(torch.uint8), meta={"filename": "m.png"})
    out = _seeded(RandDilation(), 0)(meta)
    assert isinstance(out, MetaTensor) and out.dtype == torch.uint8 and out.meta["filename"] == "m.png"
    out = _seeded(RandHoles(), 0)(mask.astype(bool))
    assert isinstance(out, np.ndarray) and out.dtype == bool
    channels = _seeded(RandDilation(max_radius=2), 0)(mask)
    assert channels[0].sum() > mask[0].sum() and channels[1].sum() == 0  # channels corrupted independently


@settings(max_examples=25, deadline=None)
@given(
    mask=arrays(np.uint8, st.tuples(st.just(1), st.integers(1, 12), st.integers(1, 12)), elements=st.integers(0, 1)),
    kind=st.sampled_from(CORRUPTION_KINDS),
    seed=st.integers(0, 2**16),
)
def test_corruption_keeps_shape_dtype_and_binary_values(mask, kind, seed):
    out = _seeded(make_corruption(kind), seed)(mask)
    assert out.shape == mask.shape and out.dtype == mask.dtype
    assert set(np.unique(out).tolist()) <= {0, 1}


def test_invalid_input_is_rejected():
    with pytest.raises(ValueError, match=r"binary.*\[0, 1, 2\]"):
        RandErosion()(np.array([[[0, 1, 2]]]))
    with pytest.raises(ValueError, match=r"binary"):
        RandMaskCorruption(prob=0.0)(np.full((1, 4, 4), 0.5))
    with pytest.raises(ValueError, match=r"\(C, H, W\).*\(4, 4\)"):
        RandMaskCorruption()(np.zeros((4, 4)))


@pytest.mark.parametrize(
    ("factory", "name"),
    [
        (lambda: RandEdgeSwap(max_distance=0), "max_distance"),
        (lambda: RandTileDeletion(patch_size=0), "patch_size"),
        (lambda: RandDiscAddition(radius=2.5), "radius"),
        (lambda: RandHoles(max_holes=0), "max_holes"),
        (lambda: RandSaltPepper(density=1.5), "density"),
        (lambda: RandBlocks(prob=2.0), "prob"),
        (lambda: RandMaskCorruption(holes_prob=-0.1), "holes_prob"),
        (lambda: RandMaskCorruption(erosion_kwargs={"prob": 0.5}), "erosion_kwargs"),
        (lambda: RandMaskCorruption(blocks_kwargs={"max_size": -1}), "max_size"),
    ],
)
def test_bad_arguments(factory, name):
    with pytest.raises(ValueError, match=name):
        factory()
