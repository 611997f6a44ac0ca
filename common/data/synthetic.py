"""Seeded synthetic samples shaped like each imaging domain of the collection, and a writer for small datasets.

The generators give tests, smoke runs and examples data with the right layout (channel-first images, integer label
maps, value ranges, label conventions) and a plausible look, without shipping or downloading any real data. Every
generator takes its sizes and an ``rng`` (a ``numpy.random.Generator`` or an ``int`` seed) and is deterministic
given the seed.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from common.data.brats import normalize_slice, remap_brats_labels
from common.data.datalist import split_items, validate_fractions
from common.io import atomic_output_dir, atomic_write_json, read_json
from common.transforms.intensity import CT_WINDOWS, CTWindow

__all__ = [
    "BRATS_LABELS",
    "CT_ORGANS",
    "SYNTHETIC_KINDS",
    "SyntheticKind",
    "brain_slice",
    "brain_volume",
    "chest_xray",
    "ct_slice",
    "lung_mask",
    "nuclei_tile",
    "polyp_frame",
    "write_synthetic_dataset",
]

logger = logging.getLogger(__name__)

RngLike = np.random.Generator | int

#: BraTS label values: necrotic / non-enhancing core, peritumoural edema, enhancing tumour.
BRATS_LABELS: dict[str, int] = {"necrotic_core": 1, "edema": 2, "enhancing": 4}

#: Organ names of ``ct_slice`` in label order (label = index + 1).
CT_ORGANS: tuple[str, ...] = ("liver", "spleen", "kidney_right", "kidney_left", "aorta", "stomach")

_MIN_SIZE = 32
_LUNG_AREA_RANGE = (0.20, 0.40)
_MAX_TRIES = 20


# --------------------------------------------------------------------------------------------------------------------
# small helpers


def _as_rng(rng: RngLike) -> np.random.Generator:
    """Accept a generator or an integer seed, so every public function can be called either way."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise ValueError(f"rng must be a numpy.random.Generator or an int seed, got {type(rng).__name__}")


def _check_size(value: int, name: str = "size", minimum: int = _MIN_SIZE) -> int:
    """Validate an image side length: an int of at least ``minimum`` pixels, so every structure stays visible."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _grid(shape: Sequence[int]) -> list[np.ndarray]:
    """Pixel-centre coordinates in [0, 1] along each axis of ``shape`` (``ij`` indexing, full arrays)."""
    axes = [(np.arange(n, dtype=np.float64) + 0.5) / n for n in shape]
    return np.meshgrid(*axes, indexing="ij")


def _upsampling_matrix(size: int, cells: int) -> np.ndarray:
    """``(size, cells)`` matrix of cubic-spline upsampling along one axis (``ndimage.zoom`` of the unit impulses)."""
    return ndimage.zoom(np.eye(cells), (size / cells, 1), order=3, mode="reflect")


def _smooth_noise(shape: Sequence[int], rng: np.random.Generator, cells: int) -> np.ndarray:
    """Zero-mean, unit-std noise that varies over about ``cells`` bumps per axis (cubic upsampling of coarse noise).

    The upsampling is applied one axis at a time (the spline is separable), which is much faster in 3D than
    ``ndimage.zoom`` of the whole array and gives the same result.
    """
    cells = max(2, cells)
    noise = rng.standard_normal([cells] * len(shape))
    for axis, size in enumerate(shape):
        noise = np.moveaxis(np.tensordot(_upsampling_matrix(size, cells), noise, axes=(1, axis)), 0, axis)
    return (noise - noise.mean()) / (noise.std() + 1e-8)


def _ellipsoid_radius(
    coords: Sequence[np.ndarray], center: Sequence[float], radii: Sequence[float], angle: float = 0.0
) -> np.ndarray:
    """Normalised radial distance (1 on the surface) of an ellipsoid; ``angle`` rotates the first two axes."""
    d = [c - m for c, m in zip(coords, center, strict=True)]
    if angle:
        cos, sin = math.cos(angle), math.sin(angle)
        d[0], d[1] = cos * d[0] - sin * d[1], sin * d[0] + cos * d[1]
    return np.sqrt(sum((di / r) ** 2 for di, r in zip(d, radii, strict=True)))


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep the largest connected component of a boolean mask and fill its holes."""
    labels, count = ndimage.label(mask)
    if count == 0:
        return mask
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, count + 1))
    return ndimage.binary_fill_holes(labels == int(np.argmax(sizes)) + 1)


def _erode(mask: np.ndarray, iterations: int) -> np.ndarray:
    """Binary erosion with a full (8/26-connected) structuring element."""
    structure = ndimage.generate_binary_structure(mask.ndim, mask.ndim)
    return ndimage.binary_erosion(mask, structure, iterations=iterations)


# --------------------------------------------------------------------------------------------------------------------
# chest X-ray


def _lung_field(
    x: np.ndarray,
    y: np.ndarray,
    side: int,
    medial: float,
    top: float,
    width: float,
    height: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Boolean mask of one lung field, from its medial border (``medial``) towards ``side``.

    Straight medial border, rounded apex, convex lateral border widening downwards, diaphragm dome with a sharp
    costophrenic angle. ``side`` is -1 for the lung on the image left (lateral = smaller x), +1 for the right one.
    """
    v = (y - top) / height
    depth = (x - medial) * side - rng.uniform(-0.02, 0.03) * v  # distance from the medial border, slightly tilted
    apex = np.clip(v / rng.uniform(0.3, 0.45), 0.0, 1.0)
    lateral = width * np.sqrt(2 * apex - apex**2) * (0.72 + 0.28 * np.clip(v, 0, 1))
    medial_apex = np.clip(v / rng.uniform(0.1, 0.2), 0.0, 1.0)
    medial_edge = rng.uniform(0.03, 0.07) * (1 - np.sqrt(2 * medial_apex - medial_apex**2))
    u = np.clip(depth / width, 0.0, 1.0)
    dome = np.sin(np.pi * u**0.75) * (1 - 0.25 * u) + rng.uniform(0.0, 0.5) * (1 - u) ** 2
    bottom = 1 - rng.uniform(0.1, 0.2) * dome
    return (v >= 0) & (v <= bottom) & (depth >= medial_edge) & (depth <= lateral)


def _draw_lungs(size: int, rng: np.random.Generator) -> np.ndarray:
    """One draw of the two lung fields (labels 1 image-left, 2 image-right) and the heart shadow cut out of them."""
    y, x = _grid((size, size))
    angle = math.radians(rng.uniform(-4, 4))
    xr = 0.5 + math.cos(angle) * (x - 0.5) - math.sin(angle) * (y - 0.5)
    yr = 0.5 + math.sin(angle) * (x - 0.5) + math.cos(angle) * (y - 0.5)
    xw = xr + 0.012 * _smooth_noise((size, size), rng, 5)
    yw = yr + 0.012 * _smooth_noise((size, size), rng, 5)
    mid = 0.5 + rng.uniform(-0.03, 0.03)
    top, height = rng.uniform(0.07, 0.16), rng.uniform(0.62, 0.78)
    gap, width = rng.uniform(0.035, 0.08), rng.uniform(0.27, 0.36)
    heart = (
        _ellipsoid_radius(
            (xw, yw),
            (mid + rng.uniform(0.03, 0.07), top + height * rng.uniform(0.95, 1.1)),
            (rng.uniform(0.13, 0.19), rng.uniform(0.2, 0.28)),
        )
        <= 1
    )
    margin = max(0.01, 2.0 / size)
    label = np.zeros((size, size), dtype=np.uint8)
    for value, side in ((1, -1), (2, 1)):
        # the patient's left lung (image right) is narrower and reaches lower: the heart and a lower hemidiaphragm
        lung_width = width * rng.uniform(0.9, 1.08) * (0.94 if side > 0 else 1.0)
        lung_top = float(np.clip(top + rng.uniform(-0.02, 0.02), 0.04, 0.2))
        lung_height = min(height * rng.uniform(0.95, 1.05) + (0.03 if side > 0 else 0.0), 0.96 - lung_top)
        medial = mid + side * gap * rng.uniform(0.85, 1.2)
        lung = _lung_field(xw, yw, side, medial, lung_top, lung_width, lung_height, rng) & ~heart
        lung &= (xr < mid - margin) if side < 0 else (xr > mid + margin)
        label[_largest_component(lung)] = value
    return label


def lung_mask(size: int = 256, rng: RngLike = 0) -> np.ndarray:
    """Two-lung mask of a frontal chest X-ray, for mask-only generative models and tests.

    Args:
        size: image side length in pixels (>= 32).
        rng: random generator or seed.

    Returns:
        ``(size, size)`` uint8 label map: 0 background, 1 the lung on the image left (the patient's right),
        2 the lung on the image right. The lungs are disjoint, hole-free, and cover about 20-40 % of the image;
        ``label > 0`` is the binary mask.
    """
    size, rng = _check_size(size), _as_rng(rng)
    label = _draw_lungs(size, rng)
    for _ in range(_MAX_TRIES - 1):
        fraction = np.count_nonzero(label) / label.size
        if _LUNG_AREA_RANGE[0] <= fraction <= _LUNG_AREA_RANGE[1] and set(np.unique(label)) == {0, 1, 2}:
            break
        label = _draw_lungs(size, rng)
    return label


def _ribs(x: np.ndarray, y: np.ndarray, mid: float, rng: np.random.Generator) -> np.ndarray:
    """Curved, evenly spaced rib bands (0..1) that bend down laterally, as posterior ribs do on a frontal film."""
    spacing = rng.uniform(0.075, 0.095)
    phase = (y - rng.uniform(1.5, 2.5) * (x - mid) ** 2 - rng.uniform(0, spacing)) / spacing
    return np.clip(np.cos(2 * np.pi * phase), 0.0, 1.0) ** 3


def chest_xray(size: int = 256, rng: RngLike = 0) -> tuple[np.ndarray, np.ndarray]:
    """Frontal chest X-ray-like image with its lung labels, for image-and-mask chest pipelines.

    Dark lung fields (from ``lung_mask``) with vessel markings, a bright mediastinum, spine and heart shadow, rib
    bands, a soft-tissue body outline on a dark background, blur and noise.

    Returns:
        ``image`` ``(1, size, size)`` float32 in [0, 1] and ``label`` ``(size, size)`` uint8 as ``lung_mask``.
    """
    size, rng = _check_size(size), _as_rng(rng)
    label = lung_mask(size, rng)
    lungs = ndimage.gaussian_filter((label > 0).astype(np.float64), sigma=size / 128)
    y, x = _grid((size, size))
    cols = np.nonzero((label > 0).any(axis=0))[0]
    mid = (cols.min() + cols.max() + 1) / (2 * size) if cols.size else 0.5
    body = _ellipsoid_radius((x, y), (mid, 0.58), (rng.uniform(0.46, 0.52), rng.uniform(0.6, 0.7)))
    image = 0.06 + 0.5 * ndimage.gaussian_filter((body <= 1).astype(np.float64), sigma=size / 64)
    image += 0.15 * np.clip(y - 0.5, 0, None)  # abdomen below the diaphragm is denser
    image += 0.28 * np.exp(-(((x - mid) / rng.uniform(0.06, 0.09)) ** 2))  # mediastinum and spine
    heart = _ellipsoid_radius((x, y), (mid + 0.05, 0.78), (0.17, 0.18)) <= 1
    image += 0.12 * ndimage.gaussian_filter(heart.astype(np.float64), sigma=size / 40)
    image += 0.07 * _ribs(x, y, mid, rng) * (body <= 1) / (1 + np.exp((y - 0.8) * 40))
    markings = 0.05 * _smooth_noise((size, size), rng, 24) + 0.1 * np.exp(-(((x - mid) / 0.2) ** 2))
    image -= lungs * (0.42 - markings)
    image += 0.02 * _smooth_noise((size, size), rng, 6) + 0.015 * rng.standard_normal((size, size))
    image = ndimage.gaussian_filter(image, sigma=size / 256)
    return np.clip(image, 0.0, 1.0).astype(np.float32)[None], label


# --------------------------------------------------------------------------------------------------------------------
# H&E nuclei


_HEMATOXYLIN = np.array([0.65, 0.70, 0.29])  # optical density per unit stain (Ruifrok & Johnston)
_EOSIN = np.array([0.07, 0.99, 0.11])


def _nucleus(size: int, center: tuple[float, float], radius: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of one irregular elliptical nucleus (a polar outline with smooth harmonics: no holes)."""
    y, x = np.ogrid[:size, :size]
    dy, dx = y + 0.5 - center[0], x + 0.5 - center[1]
    theta = np.arctan2(dy, dx)
    aspect, angle = rng.uniform(0.55, 1.0), rng.uniform(0, np.pi)
    outline = 1 + sum(rng.uniform(0, 0.08) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in (2, 3))
    du = dx * math.cos(angle) + dy * math.sin(angle)
    dv = -dx * math.sin(angle) + dy * math.cos(angle)
    return np.sqrt(du**2 + (dv / aspect) ** 2) <= radius * outline


def _place_nuclei(size: int, count: int, rng: np.random.Generator) -> list[tuple[float, float, float]]:
    """Random non-touching nucleus centres and radii (``(row, col, radius)``); fewer when the tile is full."""
    placed: list[tuple[float, float, float]] = []
    for _ in range(count * 50):
        if len(placed) == count:
            break
        radius = rng.uniform(0.018, 0.035) * size
        cy, cx = rng.uniform(0, size, 2)
        if all(math.hypot(cy - py, cx - px) > 1.2 * (radius + pr) + 2 for py, px, pr in placed):
            placed.append((cy, cx, radius))
    return placed


def nuclei_tile(
    size: int = 256, rng: RngLike = 0, num_nuclei: tuple[int, int] = (20, 60)
) -> tuple[np.ndarray, np.ndarray]:
    """H&E-stained histology tile with nuclei and their mask, for nuclei segmentation pipelines.

    Colours follow Beer-Lambert stain mixing: a pink eosin stroma with fibre texture and pale spaces, and darker
    purple hematoxylin nuclei with chromatin texture, separated from each other.

    Args:
        size: tile side length in pixels (>= 32).
        rng: random generator or seed.
        num_nuclei: inclusive range of the number of nuclei to place (fewer when they do not fit).

    Returns:
        ``image`` ``(3, size, size)`` float32 RGB in [0, 1] and ``mask`` ``(size, size)`` uint8 0/1.
    """
    size, rng = _check_size(size), _as_rng(rng)
    low, high = num_nuclei
    if not 0 <= low <= high:
        raise ValueError(f"num_nuclei must be a range (low, high) with 0 <= low <= high, got {num_nuclei!r}")
    shape = (size, size)
    fibres = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=(size / 256, size / 32))
    fibres = ndimage.rotate(fibres, rng.uniform(0, 180), reshape=False, mode="reflect")
    fibres /= fibres.std() + 1e-8
    eosin = 0.45 + 0.12 * _smooth_noise(shape, rng, 8) + 0.08 * fibres
    eosin *= np.clip(1.5 + _smooth_noise(shape, rng, 5), 0.15, 1.0)  # pale spaces between tissue
    hematoxylin = 0.06 + 0.02 * _smooth_noise(shape, rng, 20)
    mask = np.zeros(shape, dtype=bool)
    for cy, cx, radius in _place_nuclei(size, int(rng.integers(low, high + 1)), rng):
        nucleus = _nucleus(size, (cy, cx), radius, rng)
        mask |= nucleus
        hematoxylin[nucleus] += rng.uniform(0.9, 1.5)
    chromatin = 1 + 0.2 * _smooth_noise(shape, rng, size // 4)
    hematoxylin = ndimage.gaussian_filter(hematoxylin * np.where(mask, chromatin, 1.0), sigma=0.7)
    density = hematoxylin[..., None] * _HEMATOXYLIN + np.clip(eosin, 0, None)[..., None] * _EOSIN
    image = np.exp(-density) + 0.012 * rng.standard_normal((*shape, 3))
    return np.clip(image, 0.0, 1.0).astype(np.float32).transpose(2, 0, 1), mask.astype(np.uint8)


# --------------------------------------------------------------------------------------------------------------------
# brain MRI (BraTS layout)

# tissue -> intensity in (T1, T1ce, T2, FLAIR)
_BRAIN_CONTRASTS: dict[str, tuple[float, float, float, float]] = {
    "scalp": (0.85, 0.85, 0.60, 0.60),
    "skull": (0.08, 0.08, 0.08, 0.08),
    "csf": (0.15, 0.15, 0.95, 0.10),
    "grey": (0.50, 0.50, 0.62, 0.60),
    "white": (0.72, 0.72, 0.45, 0.48),
    "edema": (0.42, 0.42, 0.85, 0.92),
    "enhancing": (0.50, 0.95, 0.70, 0.75),
    "necrotic_core": (0.22, 0.22, 0.90, 0.50),
}


def _head_tissues(shape: Sequence[int], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Scalp, skull, CSF, grey and white matter of an ellipsoidal head in any number of dimensions (2D or 3D)."""
    coords = _grid(shape)
    center = [0.5 + rng.uniform(-0.03, 0.03) for _ in shape]
    radii = [rng.uniform(0.40, 0.45), rng.uniform(0.33, 0.38), rng.uniform(0.40, 0.46)][: len(shape)]
    r = _ellipsoid_radius(coords, center, radii) + 0.02 * _smooth_noise(shape, rng, 4)
    brain = r < 0.86
    gyri = 0.07 + 0.04 * _smooth_noise(shape, rng, 12)
    grey = brain & (r > 0.86 - gyri) | brain & (_smooth_noise(shape, rng, 14) > 1.6)
    ventricle_radii = [0.12, 0.035, 0.15][: len(shape)]
    ventricles = np.zeros(shape, dtype=bool)
    for side in (-1, 1):
        offset = [0.0, side * rng.uniform(0.045, 0.06), 0.0][: len(shape)]
        centre = [c + o for c, o in zip(center, offset, strict=True)]
        ventricles |= _ellipsoid_radius(coords, centre, ventricle_radii, angle=side * 0.15) <= 1
    csf = (r >= 0.86) & (r < 0.89) | ventricles & brain
    return {
        "scalp": (r >= 0.95) & (r <= 1),
        "skull": (r >= 0.89) & (r < 0.95),
        "csf": csf,
        "grey": grey & ~csf,
        "white": brain & ~grey & ~csf,
    }


def _tumour(brain: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Nested tumour regions inside ``brain``: necrotic core within the enhancing rim within the edema.

    Each region lies inside the eroded region around it, so a one-voxel step never jumps a level. Radii are in
    voxels with a floor (5, 3, 1.5), so the regions stay visible in small or thin volumes.
    """
    shape = brain.shape
    coords = [g * n for g, n in zip(_grid(shape), shape, strict=True)]  # voxel units
    inside = np.argwhere(_erode(brain, max(2, min(shape) // 6)))
    center = inside[rng.integers(len(inside))] + 0.5
    radii = [rng.uniform(0.12, 0.2) * n for n in shape]
    gap = max(1, round(min(shape) / 64))  # voxels between a region and the one around it
    levels = (
        ("edema", 1.0, 5.0, 0.2),
        ("enhancing", rng.uniform(0.5, 0.7), 3.0, 0.1),
        ("necrotic_core", rng.uniform(0.45, 0.6), 1.5, 0.1),
    )
    regions: dict[str, np.ndarray] = {}
    outer = _erode(brain, 1)
    for name, scale, minimum, roughness in levels:
        radii = [max(r * scale * rng.uniform(0.85, 1.15), minimum) for r in radii]
        shift = [c + rng.uniform(-0.15, 0.15) * r for c, r in zip(center, radii, strict=True)]
        blob = _ellipsoid_radius(coords, shift, radii) + roughness * _smooth_noise(shape, rng, 6) <= 1
        region = ndimage.binary_fill_holes(blob & outer)
        regions[name] = region if region.any() else outer  # a blob that missed: the whole interior of its parent
        outer = _erode(regions[name], gap)
    return regions


def _brain(shape: Sequence[int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Four-contrast brain image and BraTS labels for a 2D or 3D ``shape``."""
    tissues = _head_tissues(shape, rng)
    brain = tissues["grey"] | tissues["white"] | tissues["csf"]
    for _ in range(_MAX_TRIES):
        tumour = _tumour(brain, rng)
        if all(region.any() for region in tumour.values()):
            break
    else:
        raise ValueError(f"could not fit a nested tumour into a brain of shape {tuple(shape)}; use a larger shape")
    label = np.zeros(shape, dtype=np.uint8)
    for name, region in tumour.items():  # edema first, each inner region overwrites the one around it
        label[region] = BRATS_LABELS[name]
        for tissue in tissues.values():
            tissue &= ~region
    regions = {**tissues, **{name: label == value for name, value in BRATS_LABELS.items()}}
    contrasts = np.array([_BRAIN_CONTRASTS[name] for name in regions])  # (tissues, 4)
    stack = np.stack([region.astype(np.float64) for region in regions.values()], axis=-1)
    image = np.moveaxis(stack @ contrasts, -1, 0)
    bias = 1 + 0.05 * _smooth_noise(shape, rng, 3)
    channels = [
        ndimage.gaussian_filter(channel, 0.6) * bias * (1 + 0.05 * _smooth_noise(shape, rng, 16))
        + 0.015 * rng.standard_normal(shape)
        for channel in image
    ]
    return np.clip(np.stack(channels), 0.0, 1.0).astype(np.float32), label


def brain_slice(size: int = 128, rng: RngLike = 0) -> tuple[np.ndarray, np.ndarray]:
    """Axial brain MRI slice with a glioma, in the BraTS layout, for multi-contrast 2D pipelines.

    A head with scalp, skull and CSF rings, a grey-matter cortex and white matter, ventricles, and a tumour made of
    nested regions (edema around an enhancing rim around a necrotic core), each channel with its own contrast.

    Returns:
        ``image`` ``(4, size, size)`` float32 in [0, 1], channels T1, T1ce, T2, FLAIR; ``label`` ``(size, size)``
        uint8 with BraTS values 0, 1 necrotic core, 2 edema, 4 enhancing tumour.
    """
    size, rng = _check_size(size), _as_rng(rng)
    return _brain((size, size), rng)


def brain_volume(shape: Sequence[int] = (64, 64, 32), rng: RngLike = 0) -> tuple[np.ndarray, np.ndarray]:
    """3D brain MRI volume with an ellipsoidal glioma (as ``brain_slice``, in 3D), for BraTS-layout 3D tests.

    Returns:
        ``image`` ``(4, H, W, D)`` float32 in [0, 1] (T1, T1ce, T2, FLAIR) and ``label`` ``(H, W, D)`` uint8 with
        BraTS values 0, 1, 2, 4.
    """
    if len(shape) != 3:
        raise ValueError(f"shape must be (H, W, D), got {tuple(shape)!r}")
    dims = tuple(_check_size(n, f"shape[{i}]", minimum=16) for i, n in enumerate(shape))
    return _brain(dims, _as_rng(rng))


# --------------------------------------------------------------------------------------------------------------------
# abdominal CT

# organ -> (centre offset (row, col) in body radii, radii (row, col) in body radii, Hounsfield units)
_CT_TEMPLATES: dict[str, tuple[tuple[float, float], tuple[float, float], float]] = {
    "liver": ((-0.25, -0.38), (0.45, 0.32), 60.0),
    "spleen": ((0.15, 0.62), (0.28, 0.13), 50.0),
    "kidney_right": ((0.32, -0.33), (0.17, 0.11), 150.0),
    "kidney_left": ((0.32, 0.33), (0.17, 0.11), 150.0),
    "aorta": ((0.28, 0.07), (0.07, 0.05), 180.0),
    "stomach": ((-0.35, 0.3), (0.25, 0.2), 20.0),
}
_HU = {"air": -1000.0, "fat": -100.0, "soft_tissue": 40.0, "muscle": 50.0, "bone": 700.0, "cortex": 1000.0}


def _spine(y: np.ndarray, x: np.ndarray, center: tuple[float, float], ry: float) -> dict[str, np.ndarray]:
    """Vertebral body with cortex, spinal canal, spinous process and paraspinal muscles, posterior in the body."""
    body_row = center[0] + 0.5 * ry
    vertebra = _ellipsoid_radius((y, x), (body_row, center[1]), (0.045, 0.05))
    canal = _ellipsoid_radius((y, x), (body_row + 0.07, center[1]), (0.022, 0.02)) <= 1
    process = _ellipsoid_radius((y, x), (body_row + 0.12, center[1]), (0.05, 0.012)) <= 1
    muscles = np.zeros_like(canal)
    for side in (-1, 1):
        muscles |= _ellipsoid_radius((y, x), (body_row + 0.1, center[1] + side * 0.07), (0.06, 0.05)) <= 1
    return {
        "vertebra": vertebra <= 1,
        "cortex": (vertebra <= 1) & (vertebra > 0.8) | process,
        "canal": canal,
        "muscles": muscles,
    }


def ct_slice(size: int = 256, rng: RngLike = 0, num_organs: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Axial abdominal CT slice in Hounsfield units with organ labels, for CT multi-organ pipelines.

    Anterior is up and the patient's right on the image left (radiological view): a body with a subcutaneous fat
    layer and muscle wall, organs in ``CT_ORGANS`` order (liver, spleen, kidneys, aorta, stomach), a vertebra with
    paraspinal muscles, bowel gas and noise.

    Args:
        size: image side length in pixels (>= 32).
        rng: random generator or seed.
        num_organs: how many organs of ``CT_ORGANS`` to draw and label (0..6).

    Returns:
        ``image`` ``(1, size, size)`` float32 in HU (air -1000, fat -100, soft tissue 40, bone 700) and ``label``
        ``(size, size)`` uint8 with 0 background and ``i`` for ``CT_ORGANS[i - 1]``.
    """
    size, rng = _check_size(size), _as_rng(rng)
    if isinstance(num_organs, bool) or not isinstance(num_organs, (int, np.integer)):
        raise ValueError(f"num_organs must be an int in 0..{len(CT_ORGANS)}, got {num_organs!r}")
    if not 0 <= num_organs <= len(CT_ORGANS):
        raise ValueError(f"num_organs must be in 0..{len(CT_ORGANS)}, got {num_organs}")
    shape = (size, size)
    y, x = _grid(shape)
    center = (0.5 + rng.uniform(-0.03, 0.03), 0.5 + rng.uniform(-0.03, 0.03))
    ry, rx = rng.uniform(0.30, 0.36), rng.uniform(0.40, 0.46)
    r = _ellipsoid_radius((y, x), center, (ry, rx)) + 0.015 * _smooth_noise(shape, rng, 4)
    fat_layer, wall = rng.uniform(0.05, 0.12), rng.uniform(0.04, 0.07)
    cavity = r < 1 - fat_layer - wall
    image = np.full(shape, _HU["air"])
    image[r < 1] = _HU["fat"]
    image[r < 1 - fat_layer] = _HU["muscle"]
    image[cavity] = np.where(_smooth_noise(shape, rng, 28) > 1.0, _HU["fat"], _HU["soft_tissue"])[cavity]
    spine = _spine(y, x, center, ry)
    image[spine["muscles"]] = _HU["muscle"]
    image[spine["vertebra"]] = _HU["bone"]
    image[spine["cortex"]] = _HU["cortex"]
    image[spine["canal"]] = 10.0
    occupied = spine["muscles"] | spine["vertebra"] | spine["canal"] | spine["cortex"]
    label = np.zeros(shape, dtype=np.uint8)
    for value, name in enumerate(CT_ORGANS[:num_organs], start=1):
        (dy, dx), (oy, ox), hu = _CT_TEMPLATES[name]
        organ_center = (center[0] + dy * ry + rng.uniform(-0.02, 0.02), center[1] + dx * rx + rng.uniform(-0.02, 0.02))
        radii = (oy * ry * rng.uniform(0.85, 1.15), ox * rx * rng.uniform(0.85, 1.15))
        organ = _ellipsoid_radius((y, x), organ_center, radii, angle=rng.uniform(-0.3, 0.3))
        organ = (organ + 0.08 * _smooth_noise(shape, rng, 6) <= 1) & cavity & ~occupied & (label == 0)
        organ = _largest_component(organ) & ~occupied & (label == 0)
        label[organ] = value
        image[organ] = hu
    gas = (_smooth_noise(shape, rng, 20) > 2.2) & cavity & (label == 0) & ~occupied
    image[gas] = -900.0
    image = ndimage.gaussian_filter(image, sigma=size / 512) + 12.0 * rng.standard_normal(shape)
    return np.clip(image, -1024.0, 3071.0).astype(np.float32)[None], label


# --------------------------------------------------------------------------------------------------------------------
# colonoscopy polyp


def polyp_frame(size: int = 256, rng: RngLike = 0) -> tuple[np.ndarray, np.ndarray]:
    """Colonoscopy frame with one polyp and its mask, for polyp segmentation pipelines.

    Reddish mucosa with uneven lighting, folds and vessels, a brighter, redder dome-shaded polyp with a textured
    surface, specular highlights, vignetting and the black corners of the endoscope's circular field of view.

    Returns:
        ``image`` ``(3, size, size)`` float32 RGB in [0, 1] and ``mask`` ``(size, size)`` uint8 0/1.
    """
    size, rng = _check_size(size), _as_rng(rng)
    shape = (size, size)
    y, x = _grid(shape)
    radial = np.hypot(y - 0.5, x - 0.5)
    fov = radial <= rng.uniform(0.6, 0.68)
    base = np.array([0.78, 0.42, 0.35]) + rng.uniform(-0.05, 0.05, 3)
    light = 1 + 0.15 * _smooth_noise(shape, rng, 3)
    folds = 1 + 0.08 * np.cos(2 * np.pi * (radial + 0.05 * _smooth_noise(shape, rng, 4)) / rng.uniform(0.12, 0.2))
    image = base * (light * folds)[..., None]
    vessels = np.abs(_smooth_noise(shape, rng, 12)) < 0.06
    image[vessels] *= np.array([0.85, 0.65, 0.65])
    center = 0.5 + rng.uniform(-0.3, 0.3, 2) / math.sqrt(2)
    radius, aspect = rng.uniform(0.08, 0.2), rng.uniform(0.7, 1.0)
    polyp_r = _ellipsoid_radius((y, x), center, (radius, radius * aspect), angle=rng.uniform(0, np.pi))
    polyp_r = polyp_r + 0.08 * _smooth_noise(shape, rng, 6)
    mask = _largest_component((polyp_r <= 1) & fov)
    dome = 0.8 + 0.35 * np.sqrt(np.clip(1 - polyp_r**2, 0, 1))
    pits = 1 + 0.05 * _smooth_noise(shape, rng, size // 6)
    polyp_color = np.array([0.92, 0.45, 0.38]) * (dome * pits)[..., None]
    image = np.where(ndimage.gaussian_filter(mask.astype(np.float64), 1.0)[..., None] > 0.5, polyp_color, image)
    highlights = (_smooth_noise(shape, rng, size // 8) > 2.6) | mask & (_smooth_noise(shape, rng, size // 10) > 2.2)
    image[highlights] = 0.97
    image *= np.clip(1 - 0.5 * (radial / 0.7) ** 2.5, 0, 1)[..., None]
    image[~fov] = 0.0
    image += 0.01 * rng.standard_normal(image.shape)
    return np.clip(image, 0.0, 1.0).astype(np.float32).transpose(2, 0, 1), mask.astype(np.uint8)


# --------------------------------------------------------------------------------------------------------------------
# dataset writer


@dataclass(frozen=True)
class SyntheticKind:
    """How ``write_synthetic_dataset`` makes and stores one kind of sample.

    Attributes:
        generate: ``(size, rng) -> (image or None, label)``; ``size`` None means the generator's default.
        extension: file extension of images and labels (``.png`` or ``.nii.gz``).
        binary: whether the label is a 0/1 mask (stored as 0/255 in PNG) rather than a multi-label map.
    """

    generate: Callable[[int | None, np.random.Generator], tuple[np.ndarray | None, np.ndarray]]
    extension: str
    binary: bool


def _sized(function: Callable[..., Any], default: int) -> Callable[[int | None, np.random.Generator], Any]:
    """Adapt a ``(size, rng)`` generator to accept ``size=None`` for its default size."""
    return lambda size, rng: function(default if size is None else size, rng)


def _volume(size: int | None, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``brain_volume`` with a single size: ``(size, size, size // 2)``, default ``(64, 64, 32)``."""
    size = 64 if size is None else size
    return brain_volume((size, size, size // 2), rng)


def _brats_slice(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``brain_slice`` as the BraTS slice preparation leaves it: joint min-max image, labels remapped to 0..3."""
    image, label = brain_slice(size, rng)
    return normalize_slice(image), remap_brats_labels(label, "synthetic brain_slice")


def _ct_slice_windowed(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``ct_slice`` with every organ, as ``tools.prepare_ct_slices`` leaves a slice: the wide HU window onto [0, 1]."""
    image, label = ct_slice(size, rng, num_organs=len(CT_ORGANS))
    low, high = CT_WINDOWS["wide"]
    return np.asarray(CTWindow(center=(low + high) / 2, width=high - low)(image)), label


#: Dataset kinds of ``write_synthetic_dataset`` and how each is generated and stored.
SYNTHETIC_KINDS: dict[str, SyntheticKind] = {
    "lung_mask": SyntheticKind(_sized(lambda size, rng: (None, lung_mask(size, rng) > 0), 256), ".png", True),
    "lung_labels": SyntheticKind(_sized(lambda size, rng: (None, lung_mask(size, rng)), 256), ".png", False),
    "chest_xray": SyntheticKind(_sized(chest_xray, 256), ".png", False),
    "nuclei": SyntheticKind(_sized(nuclei_tile, 256), ".png", True),
    "brain_slice": SyntheticKind(_sized(brain_slice, 128), ".nii.gz", False),
    "brats_slice": SyntheticKind(_sized(_brats_slice, 128), ".nii.gz", False),
    "brain_volume": SyntheticKind(_volume, ".nii.gz", False),
    "ct_slice": SyntheticKind(_sized(ct_slice, 256), ".nii.gz", False),
    "ct_slice_windowed": SyntheticKind(_sized(_ct_slice_windowed, 256), ".nii.gz", False),
    "polyp": SyntheticKind(_sized(polyp_frame, 256), ".png", True),
}


def _write_png(path: Path, array: np.ndarray) -> None:
    """Save a uint8 ``(H, W)`` or ``(H, W, 3)`` array as PNG."""
    from PIL import Image

    path.parent.mkdir(exist_ok=True)
    Image.fromarray(array).save(path)


def _write_nifti(path: Path, array: np.ndarray) -> None:
    """Save an array as NIfTI with an identity affine (1 mm voxels)."""
    import nibabel as nib

    path.parent.mkdir(exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))


def _write_sample(folder: Path, name: str, kind: SyntheticKind, image: np.ndarray | None, label: np.ndarray) -> dict:
    """Write one sample's image (if any) and label under ``folder`` and return its relative datalist entry."""
    entry: dict[str, str] = {}
    if image is not None:
        entry["image"] = f"images/{name}{kind.extension}"
        if kind.extension == ".png":
            rgb_or_grey = np.moveaxis(image, 0, -1) if image.shape[0] == 3 else image[0]
            _write_png(folder / entry["image"], np.round(rgb_or_grey * 255).astype(np.uint8))
        else:  # channels last on disk (the MSD layout), a single channel stored as a plain (H, W) image
            _write_nifti(folder / entry["image"], image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1))
    entry["label"] = f"labels/{name}{kind.extension}"
    if kind.extension == ".png":
        _write_png(folder / entry["label"], (label * 255 if kind.binary else label).astype(np.uint8))
    else:
        _write_nifti(folder / entry["label"], label.astype(np.uint8))
    return entry


def _manifest(kind: str, num: int, seed: int, size: int | None, val_fraction: float, test_fraction: float) -> dict:
    """The parameters that identify a synthetic dataset, stored in ``synthetic.json`` for reuse checks."""
    return {
        "kind": kind,
        "num": num,
        "seed": seed,
        "size": size,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
    }


def _reusable(out_dir: Path, manifest: dict) -> dict | None:
    """The datalist of a finished dataset in ``out_dir`` written with ``manifest``, or None if there is none yet.

    Raises:
        FileExistsError: ``out_dir`` holds anything else (another dataset, other files).
    """
    if not out_dir.exists() or (out_dir.is_dir() and not any(out_dir.iterdir())):
        return None
    manifest_path, datalist_path = out_dir / "synthetic.json", out_dir / "datalist.json"
    finished = manifest_path.is_file() and datalist_path.is_file()
    if finished and read_json(manifest_path, "synthetic manifest") == manifest:
        return read_json(datalist_path, "datalist")
    raise FileExistsError(
        f"{out_dir} already exists and is not a synthetic dataset written with {manifest}; "
        "choose another folder or remove it"
    )


def write_synthetic_dataset(
    kind: str,
    out_dir: str | os.PathLike,
    num: int = 8,
    seed: int = 0,
    size: int | None = None,
    val_fraction: float = 0.25,
    test_fraction: float = 0.25,
) -> dict:
    """Write ``num`` seeded samples of ``kind`` with a MONAI datalist, so pipelines can run without real data.

    Layout: ``out_dir/images``, ``out_dir/labels``, ``out_dir/datalist.json`` (``training``/``validation``/``test``
    entries ``{"image": "images/<kind>_0000.png", "label": "labels/<kind>_0000.png"}`` relative to ``out_dir``;
    ``{"label": ...}`` only for the mask-only kinds ``lung_mask`` (binary, both lungs) and ``lung_labels``
    (1 image-left, 2 image-right lung)) and ``out_dir/synthetic.json`` (the parameters). 2D samples with one or
    three channels are uint8 PNG (images scaled to 0..255, binary masks 0/255, label maps their values); brain and
    CT samples are NIfTI with channels last (``(H, W, 4)``, ``(H, W, D, 4)``; load 2D brain slices with
    ``channel_dim=-1``), CT in HU. ``brain_slice`` and ``brain_volume`` keep the raw BraTS labels 0, 1, 2, 4;
    ``brats_slice`` is a ``brain_slice`` as ``tools.prepare_brats`` writes real slices (``common.data.brats``): the
    four channels min-max normalised jointly, labels remapped to 0..3. Files of the same seed are identical.

    The dataset is written to a temporary folder beside ``out_dir`` and renamed into place, so a half-written one
    never looks complete. An existing ``out_dir`` written by this function with the same parameters is reused.

    Args:
        kind: one of ``SYNTHETIC_KINDS``.
        out_dir: folder to create.
        num: number of samples (>= 1).
        seed: seed of the samples and of the split.
        size: image side length; None for the kind's default (``brain_volume``: ``(size, size, size // 2)``).
        val_fraction: fraction of samples in ``validation``.
        test_fraction: fraction of samples in ``test``.

    Returns:
        The datalist (paths relative to ``out_dir``).

    Raises:
        ValueError: unknown ``kind`` or bad ``num``/``size``/fractions.
        FileExistsError: ``out_dir`` exists with anything else than this dataset.
    """
    if kind not in SYNTHETIC_KINDS:
        raise ValueError(f"unknown synthetic kind {kind!r}; valid kinds: {', '.join(SYNTHETIC_KINDS)}")
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ValueError(f"num must be an int >= 1, got {num!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if size is not None:
        _check_size(size)
    validate_fractions(val_fraction, test_fraction)
    out_dir = Path(out_dir)
    manifest = _manifest(kind, num, seed, size, val_fraction, test_fraction)
    existing = _reusable(out_dir, manifest)
    if existing is not None:
        logger.info("reusing synthetic %s dataset in %s", kind, out_dir)
        return existing
    spec, rng = SYNTHETIC_KINDS[kind], np.random.default_rng(seed)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_output_dir(out_dir) as tmp:
            entries = [_write_sample(tmp, f"{kind}_{i:04d}", spec, *spec.generate(size, rng)) for i in range(num)]
            datalist = split_items(entries, val_fraction, test_fraction, seed=seed)
            atomic_write_json(tmp / "datalist.json", datalist)
            atomic_write_json(tmp / "synthetic.json", manifest)
    except FileExistsError:  # another process finished the same folder meanwhile
        existing = _reusable(out_dir, manifest)
        if existing is None:
            raise
        return existing
    logger.info("wrote %d synthetic %s samples to %s", num, kind, out_dir)
    return datalist
