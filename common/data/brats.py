"""BraTS 2021 multi-modal MRI: case files, label remapping and the 2D slices of Alshenoudy et al. (2023).

A BraTS 2021 case is a folder ``BraTS2021_NNNNN/`` holding ``BraTS2021_NNNNN_{t1,t1ce,t2,flair,seg}.nii.gz``, each a
240 x 240 x 155 volume (H, W, D; axial slices along the last axis). The method works on single axial slices: the four
modalities stacked as channels (T1, T1ce, T2, FLAIR), min-max normalised jointly over the whole stack, resized to
128 x 128, and the labels remapped from BraTS' {0, 1, 2, 4} to four consecutive classes (edema 1, necrotic core 2,
enhancing tumour 3), in which the evaluation regions are ``BRATS_REGIONS``.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Mapping
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from skimage.transform import resize

from common.io import atomic_output, atomic_output_dir

__all__ = [
    "BRATS_MODALITIES",
    "BRATS_REGIONS",
    "BRATS_REMAP",
    "brats_case_files",
    "brats_case_shape",
    "brats_slice",
    "normalize_slice",
    "read_brats_case",
    "remap_brats_labels",
    "restore_brats_labels",
    "restore_slice_size",
    "write_brats_slice",
    "write_synthetic_brats_case",
]

#: Modalities of a case in channel order (as the method's export: T1, T1ce, T2, FLAIR).
BRATS_MODALITIES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")

#: Raw BraTS label -> class: background 0, edema (2) 1, necrotic / non-enhancing core (1) 2, enhancing tumour (4) 3.
BRATS_REMAP: dict[int, int] = {0: 0, 2: 1, 1: 2, 4: 3}

#: Evaluation regions in the remapped classes: whole tumour, tumour core, enhancing tumour.
BRATS_REGIONS: dict[str, tuple[int, ...]] = {"WT": (1, 2, 3), "TC": (2, 3), "ET": (3,)}

_EXTENSIONS = (".nii.gz", ".nii")
_LOOKUP = np.zeros(max(BRATS_REMAP) + 1, dtype=np.uint8)
_LOOKUP[list(BRATS_REMAP)] = list(BRATS_REMAP.values())
_INVERSE = np.zeros(len(BRATS_REMAP), dtype=np.uint8)
_INVERSE[list(BRATS_REMAP.values())] = list(BRATS_REMAP)


def remap_brats_labels(label: np.ndarray, where: str) -> np.ndarray:
    """Raw BraTS labels {0, 1, 2, 4} as uint8 classes 0..3 (``BRATS_REMAP``), so they can be one-hot encoded directly.

    Raises:
        ValueError: any other value (3, negative, fractional, NaN); the message names ``where`` (a file or case) and
            the values found.
    """
    label = np.asarray(label)
    values = np.unique(label)
    bad = values[~np.isin(values, list(BRATS_REMAP))]
    if bad.size:
        shown = ", ".join(f"{value:g}" for value in bad[:8]) + (", ..." if bad.size > 8 else "")
        raise ValueError(f"{where}: label values {{{shown}}} are not BraTS labels (0, 1, 2, 4)")
    return _LOOKUP[label.astype(np.intp)]


def restore_brats_labels(classes: np.ndarray, where: str) -> np.ndarray:
    """Classes 0..3 back to raw BraTS labels {0, 1, 2, 4} as uint8 (the inverse of ``remap_brats_labels``).

    For writing predictions in the layout of the BraTS ``seg`` files that viewers and evaluators expect.

    Raises:
        ValueError: any other value; the message names ``where`` and the values found.
    """
    classes = np.asarray(classes)
    values = np.unique(classes)
    bad = values[~np.isin(values, np.arange(len(_INVERSE)))]
    if bad.size:
        shown = ", ".join(f"{value:g}" for value in bad[:8]) + (", ..." if bad.size > 8 else "")
        raise ValueError(f"{where}: values {{{shown}}} are not classes 0..{len(_INVERSE) - 1}")
    return _INVERSE[classes.astype(np.intp)]


def brats_case_files(case_dir: str | os.PathLike, require_seg: bool = True) -> dict[str, Path]:
    """The files of one BraTS 2021 case folder, keyed ``t1``, ``t1ce``, ``t2``, ``flair`` (in that order) and ``seg``.

    Files are named ``<folder name>_<key>.nii.gz`` (``.nii`` is accepted too). ``seg`` is left out when it is missing
    and ``require_seg`` is False (unlabelled cases, e.g. the BraTS validation set).

    Raises:
        FileNotFoundError: ``case_dir`` is not a folder, or files are missing; the message names the case folder and
            every missing file.
        ValueError: a file exists both as ``.nii.gz`` and ``.nii``.
    """
    case = Path(case_dir)
    if not case.is_dir():
        raise FileNotFoundError(f"BraTS case folder {case} does not exist or is not a folder")
    files: dict[str, Path] = {}
    missing = []
    for key in (*BRATS_MODALITIES, "seg"):
        found = [path for ext in _EXTENSIONS if (path := case / f"{case.name}_{key}{ext}").is_file()]
        if len(found) > 1:
            raise ValueError(f"BraTS case {case}: both {found[0].name} and {found[1].name} exist; keep one")
        if found:
            files[key] = found[0]
        elif key != "seg" or require_seg:
            missing.append(f"{case.name}_{key}.nii.gz")
    if missing:
        raise FileNotFoundError(f"BraTS case {case} lacks {', '.join(missing)} (.nii is accepted too)")
    return files


def _load(path: Path) -> nib.Nifti1Image:
    """The NIfTI image at ``path`` (header only; the data is read on access), with errors naming the file."""
    try:
        return nib.load(path)
    except (OSError, EOFError, ValueError, ImageFileError) as err:
        raise ValueError(f"{path} cannot be read as NIfTI: {err}") from err


def _case_shape(images: Mapping[str, nib.Nifti1Image], files: Mapping[str, Path], case: Path) -> tuple[int, ...]:
    """The common 3D shape of a case's images; raise ``ValueError`` naming the case and every file's shape."""
    shapes = {key: tuple(image.shape) for key, image in images.items()}
    if len(set(shapes.values())) > 1 or len(next(iter(shapes.values()))) != 3:
        listing = ", ".join(f"{files[key].name} {shape}" for key, shape in shapes.items())
        raise ValueError(f"BraTS case {case}: the volumes must be 3D and of one shape, got {listing}")
    return next(iter(shapes.values()))


def brats_case_shape(case_dir: str | os.PathLike, require_seg: bool = True) -> tuple[int, int, int]:
    """The (H, W, D) shape of a case, read from the file headers only, so a whole data set is checked quickly.

    Raises:
        FileNotFoundError: as ``brats_case_files``.
        ValueError: an unreadable file, or volumes that are not 3D or differ in shape (the case and each file's shape
            are named).
    """
    files = brats_case_files(case_dir, require_seg)
    return _case_shape({key: _load(path) for key, path in files.items()}, files, Path(case_dir))


def read_brats_case(case_dir: str | os.PathLike, require_seg: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """One case's volumes, for slicing with ``brats_slice`` (one case at a time: about 150 MB at 240 x 240 x 155).

    Returns:
        ``volumes`` ``(4, H, W, D)`` float32 in ``BRATS_MODALITIES`` order and ``seg`` ``(H, W, D)`` with the raw
        BraTS labels as stored (None when the case has no ``seg`` and ``require_seg`` is False).

    Raises:
        FileNotFoundError, ValueError: as ``brats_case_shape``, or a file whose data cannot be read (named).
    """
    case = Path(case_dir)
    files = brats_case_files(case, require_seg)
    images = {key: _load(path) for key, path in files.items()}
    shape = _case_shape(images, files, case)
    volumes = np.empty((len(BRATS_MODALITIES), *shape), dtype=np.float32)
    try:
        for channel, key in enumerate(BRATS_MODALITIES):
            volumes[channel] = np.asarray(images[key].dataobj, dtype=np.float32)
        seg = np.asarray(images["seg"].dataobj) if "seg" in images else None
    except (OSError, EOFError, ValueError, zlib.error) as err:
        raise ValueError(f"BraTS case {case}: a file's data cannot be read ({type(err).__name__}: {err})") from err
    return volumes, seg


def normalize_slice(image: np.ndarray) -> np.ndarray:
    """Min-max scale a ``(4, H, W)`` slice stack to [0, 1] jointly over all channels, as the method's export does.

    One minimum and one maximum for the whole stack (not per modality), so the modalities keep their relative
    intensities. A constant stack gives zeros.

    Raises:
        ValueError: the stack holds NaN or infinite values.
    """
    image = np.asarray(image, dtype=np.float32)
    low, high = image.min(), image.max()
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError("the slice holds NaN or infinite values and cannot be min-max normalised")
    if high <= low:
        return np.zeros_like(image)
    return (image - low) / (high - low)


def _crop_geometry(height: int, width: int, size: int) -> tuple[int, int, int, int]:
    """torchvision's ``Resize(size)`` + ``CenterCrop(size)`` of a ``height`` x ``width`` slice: the resized height and
    width, then the crop's top and left offsets."""
    new_long = int(size * max(height, width) / min(height, width))
    new_height, new_width = (size, new_long) if height <= width else (new_long, size)
    return new_height, new_width, round((new_height - size) / 2), round((new_width - size) / 2)


def _resize_crop(array: np.ndarray, size: int, order: int) -> np.ndarray:
    """A ``(H, W)`` or channels-first ``(C, H, W)`` array with its shorter side resized to ``size``, centre-cropped.

    The output sizes and the crop offsets follow torchvision's ``Resize(size)`` and ``CenterCrop(size)``. ``order`` 1
    is anti-aliased linear interpolation, 0 nearest neighbour (no anti-aliasing, so only input values appear).
    """
    new_height, new_width, top, left = _crop_geometry(*array.shape[-2:], size)
    channels_last = np.moveaxis(array, 0, -1) if array.ndim == 3 else array  # skimage keeps trailing axes
    resized = resize(channels_last, (new_height, new_width), order=order, anti_aliasing=order > 0, preserve_range=True)
    cropped = resized[top : top + size, left : left + size].astype(array.dtype)
    return np.ascontiguousarray(np.moveaxis(cropped, -1, 0) if array.ndim == 3 else cropped)


def brats_slice(
    volumes: np.ndarray, seg: np.ndarray | None, index: int, size: int = 128, where: str = "volume"
) -> tuple[np.ndarray, np.ndarray | None]:
    """Axial slice ``index`` of a case as the method's network input: joint min-max, resized, labels remapped.

    The slice is min-max normalised jointly (``normalize_slice``) at its full size, then resized as the original's
    ``Resize(size)`` + ``CenterCrop(size)``: the shorter side is scaled to ``size`` and the longer side centre-cropped
    (a square 240 x 240 BraTS slice is simply resized). The image is resized with anti-aliased linear interpolation
    (``skimage.transform.resize``, close to torchvision's antialiased bilinear resize), the label with nearest
    neighbour only, so it holds no interpolated values.

    Args:
        volumes: ``(4, H, W, D)`` stack in ``BRATS_MODALITIES`` order.
        seg: ``(H, W, D)`` raw BraTS labels {0, 1, 2, 4}, or None for an unlabelled case.
        index: axial slice index along the last axis.
        size: side of the output square (>= 1).
        where: the case (folder or name) for error messages.

    Returns:
        ``image`` ``(4, size, size)`` float32 in [0, 1] and ``label`` ``(size, size)`` uint8 in 0..3 (None without
        ``seg``).

    Raises:
        ValueError: wrong shapes, ``index`` outside the volume (the message names ``where`` and the depth), a bad
            ``size``, or labels other than 0, 1, 2, 4.
    """
    volumes = np.asarray(volumes)
    if volumes.ndim != 4 or volumes.shape[0] != len(BRATS_MODALITIES):
        raise ValueError(f"{where}: volumes must be (4, H, W, D), got shape {volumes.shape}")
    if seg is not None and np.shape(seg) != volumes.shape[1:]:
        raise ValueError(f"{where}: seg has shape {np.shape(seg)}, the volumes {volumes.shape[1:]}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be an int >= 1, got {size!r}")
    depth = volumes.shape[-1]
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < depth:
        raise ValueError(f"{where}: slice index {index!r} is outside the volume of depth {depth} (0..{depth - 1})")
    image = _resize_crop(normalize_slice(volumes[..., index]), int(size), order=1)
    if seg is None:
        return image, None
    label = remap_brats_labels(np.asarray(seg)[..., index], f"{where}, slice {index}")
    return image, _resize_crop(label, int(size), order=0)


def restore_slice_size(label: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A ``(size, size)`` label map of a ``brats_slice`` output put back on the slice's original ``(H, W)`` grid.

    Undoes the resize and centre crop of ``brats_slice`` with nearest neighbour, so only the label's values appear.
    The border a non-square slice lost to the centre crop was never seen by the network and is background (0).
    """
    label = np.asarray(label)
    if label.ndim != 2 or label.shape[0] != label.shape[1]:
        raise ValueError(f"label must be a square (size, size) map, got shape {label.shape}")
    size = label.shape[0]
    new_height, new_width, top, left = _crop_geometry(*shape, size)
    canvas = np.zeros((new_height, new_width), dtype=label.dtype)
    canvas[top : top + size, left : left + size] = label
    restored = resize(canvas, tuple(shape), order=0, anti_aliasing=False, preserve_range=True)
    return restored.astype(label.dtype)


def write_brats_slice(
    output_dir: str | os.PathLike, name: str, image: np.ndarray, label: np.ndarray | None = None
) -> dict[str, str]:
    """Write one ``brats_slice`` output as the bundle reads it; return its datalist entry (paths relative).

    ``images/<name>.nii.gz`` is ``(H, W, 4)`` float32 channels last (load with ``channel_dim=-1``) and
    ``labels/<name>.nii.gz`` ``(H, W)`` uint8 (only when ``label`` is given), both with an identity affine, each
    written atomically (folders created).
    """
    output = Path(output_dir)
    entry = {"image": f"images/{name}.nii.gz"}
    arrays = {"image": np.moveaxis(np.asarray(image, dtype=np.float32), 0, -1)}
    if label is not None:
        entry["label"] = f"labels/{name}.nii.gz"
        arrays["label"] = np.asarray(label, dtype=np.uint8)
    for key, array in arrays.items():
        path = output / entry[key]
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as tmp:
            nib.save(nib.Nifti1Image(array, np.eye(4)), str(tmp))
    return entry


def write_synthetic_brats_case(
    folder: str | os.PathLike,
    name: str,
    shape: tuple[int, int, int] | list[int] = (64, 64, 24),
    seed: int = 0,
    affine: np.ndarray | None = None,
) -> Path:
    """A seeded synthetic case in the BraTS 2021 layout, ``folder/name/name_{t1,t1ce,t2,flair,seg}.nii.gz``.

    Made by ``common.data.brain_volume`` (raw BraTS labels 0, 1, 2, 4), written atomically, and reused when the
    folder exists; for running the BraTS pipeline end to end without data. Returns the case folder.
    """
    case = Path(folder) / name
    if case.is_dir():
        return case
    from common.data.synthetic import brain_volume  # here: the synthetic module imports this one

    case.parent.mkdir(parents=True, exist_ok=True)
    volumes, seg = brain_volume(tuple(shape), seed)
    affine = np.eye(4) if affine is None else affine
    with atomic_output_dir(case) as tmp:
        for key, array in (*zip(BRATS_MODALITIES, volumes, strict=True), ("seg", seg)):
            nib.save(nib.Nifti1Image(array, affine), str(tmp / f"{name}_{key}.nii.gz"))
    return case
