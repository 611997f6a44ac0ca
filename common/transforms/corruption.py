"""Synthetic corruptions of binary masks, to train a Post-DAE (Larrazabal et al. 2019).

A denoising autoencoder learns to map corrupted masks back to clean ones. The first three kinds (edge swap, tile
deletion, disc addition) follow the unofficial Post-DAE repository (balazsborsos/dae_postprocessing), whose default
parameters were chosen for 512x512 masks; the others are the kinds named in the paper (morphological operations,
holes, salt-and-pepper noise, random blocks). Every transform works on a channel-first 2D binary mask ``(C, H, W)``
(each channel corrupted independently) and returns the same shape, type and dtype, with values still in {0, 1}.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np
from monai.config.type_definitions import NdarrayOrTensor
from monai.transforms import RandomizableTransform
from monai.utils import MAX_SEED, TransformBackends, convert_to_dst_type, convert_to_numpy
from scipy import ndimage
from skimage.draw import disk as draw_disk
from skimage.morphology import disk as disk_footprint
from skimage.segmentation import find_boundaries

from common.transforms.sdf import check_binary

__all__ = [
    "CORRUPTION_KINDS",
    "RandBlocks",
    "RandDilation",
    "RandDiscAddition",
    "RandEdgeSwap",
    "RandErosion",
    "RandHoles",
    "RandMaskCorruption",
    "RandSaltPepper",
    "RandTileDeletion",
    "make_corruption",
]


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def _check_fraction(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}.")


def _as_mask(img: NdarrayOrTensor) -> np.ndarray:
    """Validate a channel-first 2D binary mask and return it as a fresh boolean numpy array."""
    if img.ndim != 3:
        raise ValueError(f"img must be a channel-first 2D mask (C, H, W), got shape {tuple(img.shape)}.")
    mask = convert_to_numpy(img)
    check_binary(mask, "img")
    return mask.astype(bool)


class _MaskCorruption(RandomizableTransform):
    """Base of the single-kind corruptions: validation, probability, per-channel application, type restoration."""

    backend = [TransformBackends.NUMPY]

    def __init__(self, prob: float = 1.0) -> None:
        _check_fraction("prob", prob)
        RandomizableTransform.__init__(self, prob)

    @abstractmethod
    def _corrupt(self, mask: np.ndarray) -> np.ndarray:
        """Corrupt one boolean ``(H, W)`` mask with draws from ``self.R`` (may modify ``mask`` in place)."""

    def _apply(self, mask: np.ndarray) -> np.ndarray:
        """Decide with ``prob`` whether to corrupt, then corrupt each channel of a boolean ``(C, H, W)`` mask."""
        self.randomize(None)
        if not self._do_transform:
            return mask
        return np.stack([self._corrupt(channel) for channel in mask])

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Corrupt the binary mask ``img`` of shape ``(C, H, W)`` (with probability ``prob``)."""
        out, *_ = convert_to_dst_type(self._apply(_as_mask(img)), img, dtype=img.dtype)
        return out


class RandEdgeSwap(_MaskCorruption):
    """Swap labels near the mask boundary along image columns (the Post-DAE repository's "swap").

    ``num_swaps`` inner-boundary pixels are drawn without replacement (all of them when there are fewer; the
    repository used Canny edges and crashed in that case). For each drawn pixel ``(r, c)`` and a distance
    ``d ~ U{1..max_distance}``, in order: ``m[r+d, c] = m[r-d, c]`` then ``m[r-d, c] = 1 - m[r+d, c]``, with the row
    indices clamped to the image. Changes therefore stay within ``max_distance`` rows of a boundary pixel of the
    same column. An empty or all-foreground mask (no boundary) is returned unchanged.

    Args:
        num_swaps: number of boundary pixels to draw.
        max_distance: largest vertical swap distance (pixels).
        prob: probability of applying the corruption.
    """

    def __init__(self, num_swaps: int = 300, max_distance: int = 20, prob: float = 1.0) -> None:
        _check_int("num_swaps", num_swaps, 0)
        _check_int("max_distance", max_distance, 1)
        super().__init__(prob)
        self.num_swaps = num_swaps
        self.max_distance = max_distance

    def _corrupt(self, mask: np.ndarray) -> np.ndarray:
        edges = np.argwhere(find_boundaries(mask, mode="inner"))
        count = min(self.num_swaps, len(edges))
        chosen = edges[self.R.choice(len(edges), size=count, replace=False)]
        distances = self.R.randint(1, self.max_distance + 1, size=count)
        last_row = mask.shape[0] - 1
        for (row, col), dist in zip(chosen, distances, strict=True):
            below, above = min(row + dist, last_row), max(row - dist, 0)
            mask[below, col] = mask[above, col]
            mask[above, col] = not mask[below, col]
        return mask


class RandTileDeletion(_MaskCorruption):
    """Set to 0 random tiles of a ``patch_size`` grid that contain foreground (the repository's "deletion").

    The grid starts at the top-left corner and covers the whole image (partial tiles at the bottom/right edges
    included, the repository skipped them). The number of deleted tiles is drawn from ``U{0..min(max_patches, n)}``
    where ``n`` is the number of tiles with foreground. Deviation: when ``n <= max_patches`` the repository deleted
    all ``n`` tiles, which wipes small masks out entirely.

    Args:
        patch_size: side of the square tiles (pixels).
        max_patches: largest number of tiles deleted.
        prob: probability of applying the corruption.
    """

    def __init__(self, patch_size: int = 32, max_patches: int = 15, prob: float = 1.0) -> None:
        _check_int("patch_size", patch_size, 1)
        _check_int("max_patches", max_patches, 0)
        super().__init__(prob)
        self.patch_size = patch_size
        self.max_patches = max_patches

    def _corrupt(self, mask: np.ndarray) -> np.ndarray:
        size = self.patch_size
        height, width = mask.shape
        tiles = [
            (row, col)
            for row in range(0, height, size)
            for col in range(0, width, size)
            if mask[row : row + size, col : col + size].any()
        ]
        count = self.R.randint(0, min(self.max_patches, len(tiles)) + 1)
        for index in self.R.choice(len(tiles), size=count, replace=False):
            row, col = tiles[index]
            mask[row : row + size, col : col + size] = False
        return mask


class RandDiscAddition(_MaskCorruption):
    """Add ``U{0..max_discs}`` filled discs of radius ``radius`` at uniform random centres (the repository's "circles").

    Discs are drawn with ``skimage.draw.disk`` (pixels strictly within ``radius`` of the centre) and clipped to the
    image.

    Args:
        radius: disc radius (pixels).
        max_discs: largest number of discs added.
        prob: probability of applying the corruption.
    """

    def __init__(self, radius: int = 8, max_discs: int = 10, prob: float = 1.0) -> None:
        _check_int("radius", radius, 1)
        _check_int("max_discs", max_discs, 0)
        super().__init__(prob)
        self.radius = radius
        self.max_discs = max_discs

    def _corrupt(self, mask: np.ndarray) -> np.ndarray:
        count = self.R.randint(0, self.max_discs + 1)
        for centre in self.R.randint(0, mask.shape, size=(count, 2)):
            rows, cols = draw_disk(tuple(centre), self.radius, shape=mask.shape)
            mask[rows, cols] = True
        return mask


class RandErosion(_MaskCorruption):
    """Binary erosion with a disc structuring element of random radius ``U{1..max_radius}``.

    The image edge does not erode the mask (``border_value=1``), so only object-background boundaries move.

    Args:
        max_radius: largest radius of the structuring element (pixels).
        prob: probability of applying the corruption.
    """

    def __init__(self, max_radius: int = 5, prob: float = 1.0) -> None:
        _check_int("max_radius", max_radius, 1)
        super().__init__(prob)
        self.max_radius = max_radius

    def _corrupt(self, mask: np.ndarray) -> np.ndarray:
        footprint = disk_footprint(self.R.randint(1, self.max_radius + 1))
        return ndimage.binary_erosion(mask, structure=footprint, border_value=1)


class RandDilation(_MaskCorruption):
    """Binary dilation with a disc structuring element of random radius ``U{1..max_radius}``.

    Args:
        max_radius: largest radius of the structuring element (pixels).
        prob: probability of applying the corruption.
    """

    def __init__(self, max_radius: int = 5, prob: float = 1.0) -> None:
        _check_int("max_radius", max_radius, 1)
        super().__init__(prob)
        self.max_radius = max_radius

    def _corrupt(self, mask: np.ndarray) -> np.ndarray:
        footprint = disk_footprint(self.R.randint(1, self.max_radius + 1))
        return ndimage.binary_dilation(mask, structure=footprint)


class RandHoles(_MaskCorruption):
    """Punch ``U{1..max_holes}`` holes: discs of radius ``U{1..max_radius}`` set to 0, centred on foreground pixels.

    Centres are distinct foreground pixels (fewer holes when the mask has fewer pixels); an empty mask is returned
    unchanged.

    Args:
        max_holes: largest number of holes.
        max_radius: largest hole radius (pixels); radius 1 removes the centre pixel only.
        prob: probability of applying the corruption.
    """

    def __init__(self, max_holes: int = 5, max_radius: int = 12, prob: float = 1.0) -> None:
        _check_int("max_holes", max_holes, 1)
        _check_int("max_radius", max_radius, 1)
        super().__init__(prob)
        self.max_holes = max_holes
        self.max_radius = max_radius

    def _corrupt(self, mask: np.ndarray) -> np.ndarray:
        foreground = np.argwhere(mask)
        count = min(self.R.randint(1, self.max_holes + 1), len(foreground))
        centres = foreground[self.R.choice(len(foreground), size=count, replace=False)]
        radii = self.R.randint(1, self.max_radius + 1, size=count)
        for centre, radius in zip(centres, radii, strict=True):
            rows, cols = draw_disk(tuple(centre), radius, shape=mask.shape)
            mask[rows, cols] = False
        return mask


class RandSaltPepper(_MaskCorruption):
    """Flip ``round(density * H * W)`` distinct pixels drawn uniformly (salt-and-pepper noise).

    Args:
        density: fraction of the pixels flipped, in [0, 1].
        prob: probability of applying the corruption.
    """

    def __init__(self, density: float = 0.02, prob: float = 1.0) -> None:
        _check_fraction("density", density)
        super().__init__(prob)
        self.density = density

    def _corrupt(self, mask: np.ndarray) -> np.ndarray:
        flips = np.zeros(mask.size, dtype=bool)
        flips[self.R.choice(mask.size, size=round(self.density * mask.size), replace=False)] = True
        return mask ^ flips.reshape(mask.shape)


class RandBlocks(_MaskCorruption):
    """Paint ``U{1..max_blocks}`` axis-aligned rectangles, each set to 1 or to 0 with equal chance.

    Each block has height and width drawn from ``U{1..max_size}`` and a top-left corner uniform in the image; it is
    clipped to the image.

    Args:
        max_blocks: largest number of blocks.
        max_size: largest block side (pixels).
        prob: probability of applying the corruption.
    """

    def __init__(self, max_blocks: int = 5, max_size: int = 40, prob: float = 1.0) -> None:
        _check_int("max_blocks", max_blocks, 1)
        _check_int("max_size", max_size, 1)
        super().__init__(prob)
        self.max_blocks = max_blocks
        self.max_size = max_size

    def _corrupt(self, mask: np.ndarray) -> np.ndarray:
        for _ in range(self.R.randint(1, self.max_blocks + 1)):
            block_h, block_w = self.R.randint(1, self.max_size + 1, size=2)
            row, col = self.R.randint(0, mask.shape)
            mask[row : row + block_h, col : col + block_w] = self.R.rand() < 0.5
        return mask


_KIND_TO_CLASS: dict[str, type[_MaskCorruption]] = {
    "edge_swap": RandEdgeSwap,
    "tile_deletion": RandTileDeletion,
    "disc_addition": RandDiscAddition,
    "erosion": RandErosion,
    "dilation": RandDilation,
    "holes": RandHoles,
    "salt_pepper": RandSaltPepper,
    "blocks": RandBlocks,
}

#: Names of the corruption kinds, in the order :py:class:`RandMaskCorruption` applies them.
CORRUPTION_KINDS: tuple[str, ...] = tuple(_KIND_TO_CLASS)


def make_corruption(kind: str, **kwargs: Any) -> RandomizableTransform:
    """Build the single-kind corruption transform named ``kind`` (one of :py:data:`CORRUPTION_KINDS`).

    Args:
        kind: corruption kind, e.g. ``"edge_swap"``.
        kwargs: constructor arguments of that transform (including ``prob``).

    Raises:
        ValueError: if ``kind`` is unknown.
    """
    if kind not in _KIND_TO_CLASS:
        raise ValueError(f"unknown corruption kind {kind!r}, expected one of {list(CORRUPTION_KINDS)}.")
    return _KIND_TO_CLASS[kind](**kwargs)


class RandMaskCorruption(RandomizableTransform):
    """Apply the corruption kinds in the order of :py:data:`CORRUPTION_KINDS`, each with its own probability.

    The defaults reproduce the Post-DAE repository: edge swap, tile deletion and disc addition always applied, in
    that order, with its parameters; the paper's kinds (erosion, dilation, holes, salt-and-pepper, blocks) are off
    and, when enabled, come after. ``set_random_state`` seeds every kind from this transform's generator.

    Args:
        edge_swap_prob: probability of :py:class:`RandEdgeSwap`.
        tile_deletion_prob: probability of :py:class:`RandTileDeletion`.
        disc_addition_prob: probability of :py:class:`RandDiscAddition`.
        erosion_prob: probability of :py:class:`RandErosion`.
        dilation_prob: probability of :py:class:`RandDilation`.
        holes_prob: probability of :py:class:`RandHoles`.
        salt_pepper_prob: probability of :py:class:`RandSaltPepper`.
        blocks_prob: probability of :py:class:`RandBlocks`.
        edge_swap_kwargs: constructor arguments of :py:class:`RandEdgeSwap` other than ``prob``.
        tile_deletion_kwargs: constructor arguments of :py:class:`RandTileDeletion` other than ``prob``.
        disc_addition_kwargs: constructor arguments of :py:class:`RandDiscAddition` other than ``prob``.
        erosion_kwargs: constructor arguments of :py:class:`RandErosion` other than ``prob``.
        dilation_kwargs: constructor arguments of :py:class:`RandDilation` other than ``prob``.
        holes_kwargs: constructor arguments of :py:class:`RandHoles` other than ``prob``.
        salt_pepper_kwargs: constructor arguments of :py:class:`RandSaltPepper` other than ``prob``.
        blocks_kwargs: constructor arguments of :py:class:`RandBlocks` other than ``prob``.
        prob: probability of corrupting at all.
    """

    backend = [TransformBackends.NUMPY]

    def __init__(
        self,
        edge_swap_prob: float = 1.0,
        tile_deletion_prob: float = 1.0,
        disc_addition_prob: float = 1.0,
        erosion_prob: float = 0.0,
        dilation_prob: float = 0.0,
        holes_prob: float = 0.0,
        salt_pepper_prob: float = 0.0,
        blocks_prob: float = 0.0,
        edge_swap_kwargs: dict[str, Any] | None = None,
        tile_deletion_kwargs: dict[str, Any] | None = None,
        disc_addition_kwargs: dict[str, Any] | None = None,
        erosion_kwargs: dict[str, Any] | None = None,
        dilation_kwargs: dict[str, Any] | None = None,
        holes_kwargs: dict[str, Any] | None = None,
        salt_pepper_kwargs: dict[str, Any] | None = None,
        blocks_kwargs: dict[str, Any] | None = None,
        prob: float = 1.0,
    ) -> None:
        _check_fraction("prob", prob)
        RandomizableTransform.__init__(self, prob)
        probs = (
            edge_swap_prob,
            tile_deletion_prob,
            disc_addition_prob,
            erosion_prob,
            dilation_prob,
            holes_prob,
            salt_pepper_prob,
            blocks_prob,
        )
        all_kwargs = (
            edge_swap_kwargs,
            tile_deletion_kwargs,
            disc_addition_kwargs,
            erosion_kwargs,
            dilation_kwargs,
            holes_kwargs,
            salt_pepper_kwargs,
            blocks_kwargs,
        )
        self.transforms: list[_MaskCorruption] = []
        for kind, kind_prob, kwargs in zip(CORRUPTION_KINDS, probs, all_kwargs, strict=True):
            _check_fraction(f"{kind}_prob", kind_prob)
            kwargs = dict(kwargs or {})
            if "prob" in kwargs:
                raise ValueError(f"{kind}_kwargs must not contain 'prob', use {kind}_prob instead.")
            self.transforms.append(_KIND_TO_CLASS[kind](prob=kind_prob, **kwargs))

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> RandMaskCorruption:
        super().set_random_state(seed, state)
        for transform in self.transforms:
            transform.set_random_state(seed=int(self.R.randint(MAX_SEED, dtype="uint32")))
        return self

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Corrupt the binary mask ``img`` of shape ``(C, H, W)`` (with probability ``prob``)."""
        mask = _as_mask(img)
        self.randomize(None)
        if self._do_transform:
            for transform in self.transforms:
                mask = transform._apply(mask)
        out, *_ = convert_to_dst_type(mask, img, dtype=img.dtype)
        return out
