r"""Prepare the public 2D data sets of the GMS bundle (generative medical segmentation, Huo et al. 2024).

Each command reads one data set in its public layout (the input is only read) and writes a new output folder with
``images/<name>.png`` (grey for the ultrasound sets BUSI and UDIAT, RGB for the others), ``masks/<name>.png``
(binary 0/255, one channel) and a MONAI datalist ``datalist.json`` with the sections ``training``, ``validation`` and
``test``, entries ``{"image": "images/x.png", "label": "masks/x.png", ...}`` relative to the output folder. Images
keep their size unless ``--size`` (bilinear for images, nearest for masks; the bundle resizes to 224 itself).

Masks are read as the brightest channel of their RGB form and thresholded at 128 (> 127 is foreground), so JPEG
noise and RGB or palette masks become clean 0/255 masks; the log says how many masks needed it. Every pair is checked
before anything is written: a mask without its image or an image without its mask (the files are named: all, or the
first 10 and a count), an unreadable file, or a mask of another size than its image is an error.

Layouts (file extensions ``.png``, ``.jpg``, ``.jpeg``, ``.bmp``, ``.tif`` in any case are accepted everywhere; hidden
files and ``__MACOSX`` folders are skipped):

* ``busi``: BUSI, ``Dataset_BUSI_with_GT/{benign,malignant,normal}/benign (1).png`` with ``benign (1)_mask.png`` and
  for some images ``benign (1)_mask_1.png``, ``_mask_2.png`` (OR-merged), searched recursively. Output names like
  ``benign_1``; entries carry ``"class"`` and ``"group"``. 'normal' (empty masks) is left out by default, as in GMS.
  BUSI has no patient ids and many near-duplicate images: by default near-duplicates (Pearson correlation above
  0.9 of 32x32 grey thumbnails) share a ``group`` and stay on one side of the split.
* ``bus``: UDIAT "Dataset B", ``original/000001.png`` and ``GT/000001.png`` (folder names in any case), at or below
  ``data_dir``.
* ``ham10000``: ISIC 2018 Task 1 / HAM10000, images ``ISIC_0024306.jpg`` and masks ``ISIC_0024306_segmentation.png``
  anywhere below ``data_dir`` (e.g. ``ISIC2018_Task1-2_Training_Input`` and ``ISIC2018_Task1_Training_GroundTruth``,
  or ``HAM10000_images_part_1``/``_2`` and ``HAM10000_segmentations_lesion_tschandl``); other files are ignored. A
  CSV below ``data_dir`` with ``image_id`` (or ``image``) and ``lesion_id`` columns (``HAM10000_metadata.csv``,
  ``ISIC2018_Task3_Training_LesionGroupings.csv``) groups the images of one lesion, and its ``dx`` column is kept.
* ``kvasir_seg``: Kvasir-SEG, ``images/*.jpg`` and ``masks/*.jpg`` (same names; JPEG masks) at or below ``data_dir``.
* ``kvasir_instrument``: Kvasir-Instrument, ``images/*.jpg`` and ``masks/*.png`` (extract ``images.tar.gz`` and
  ``masks.tar.gz`` first) with the official ``train.txt``/``test.txt`` (one image id per line, an extension is
  allowed) beside them: the train ids are split into ``training``/``validation``, the test ids are ``test``. Without
  these files the split is seeded by ``val_fraction``/``test_fraction``.
* GlaS is not prepared here: ``python -m tools.prepare_histology glas`` writes it with its official split.

Examples (from the repository root)::

    python -m tools.prepare_gms busi --data_dir ~/data/Dataset_BUSI_with_GT --output_dir ~/data/gms_busi
    python -m tools.prepare_gms busi --data_dir ~/data/Dataset_BUSI_with_GT --output_dir ~/data/gms_busi_all \
        --include_normal True --size 256
    python -m tools.prepare_gms bus --data_dir ~/data/BUS_Dataset_B --output_dir ~/data/gms_bus
    python -m tools.prepare_gms ham10000 --data_dir ~/data/isic2018 --output_dir ~/data/gms_ham10000
    python -m tools.prepare_gms kvasir_seg --data_dir ~/data/Kvasir-SEG --output_dir ~/data/gms_kvasir_seg
    python -m tools.prepare_gms kvasir_instrument --data_dir ~/data/kvasir-instrument \
        --output_dir ~/data/gms_kvasir_instrument
    python -m tools.prepare_histology glas --data_dir "~/data/Warwick QU Dataset (Released 2016_07_08)" \
        --output_dir ~/data/gms_glas --size 0
"""

from __future__ import annotations

import csv
import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import fire
import numpy as np
from PIL import Image

from common.data.datalist import split_items, validate_fractions
from common.io import PNG_EXTENSIONS, split_extension
from tools.dataset_output import (
    check_size,
    finish_datalist,
    output_folders,
    resize_image,
    resize_mask,
    warn_empty_sections,
    write_pair,
)

__all__ = ["bus", "busi", "ham10000", "kvasir_instrument", "kvasir_seg", "main", "near_duplicate_groups"]

logger = logging.getLogger("tools.prepare_gms")

_SHOWN = 10  # how many offending files an error message lists
_THUMBNAIL = 32  # side of the grey thumbnails compared to find near-duplicates
_BUSI_NAME = re.compile(r"(?P<cls>benign|malignant|normal)\s*\((?P<number>\d+)\)(?P<mask>_mask(?:_\d+)?)?", re.I)
_ISIC_NAME = re.compile(r"ISIC_(?P<number>\d+)(?P<mask>_segmentation)?", re.I)


class _Pair(NamedTuple):
    """One image, its mask file(s) (OR-merged) and the extra datalist keys of its entry."""

    name: str
    image: Path
    masks: tuple[Path, ...]
    extra: dict


# --------------------------------------------------------------------------------------------------------------------
# finding files


def _natural(path: Path) -> list:
    """Sort key: the file name with its digit runs compared as numbers (``x (2)`` before ``x (10)``), then the path."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name.lower())] + [str(path)]


def _listing(items: Sequence[object]) -> str:
    """All ``items`` joined by "; ", or the first ``_SHOWN`` and how many more."""
    shown = "; ".join(str(item) for item in items[:_SHOWN])
    return shown + (f" (and {len(items) - _SHOWN} more)" if len(items) > _SHOWN else "")


def _files(folder: Path, recursive: bool = False) -> list[Path]:
    """Files in ``folder`` (or below it), naturally sorted; hidden files and ``__MACOSX`` folders are skipped."""
    paths = folder.rglob("*") if recursive else folder.iterdir()
    visible = (p for p in paths if not any(s.startswith(".") or s == "__MACOSX" for s in p.relative_to(folder).parts))
    return sorted((p for p in visible if p.is_file()), key=_natural)


def _pictures(files: Iterable[Path]) -> list[Path]:
    """The files with a picture extension (``.png``, ``.jpg``, ``.jpeg``, ``.bmp``, ``.tif``, any case)."""
    return [p for p in files if split_extension(p.name)[1] in PNG_EXTENSIONS]


def _unique(index: dict[str, list[Path]], what: str) -> dict[str, Path]:
    """``index`` with one file per key; a key with several files (e.g. ``a.jpg`` and ``a.png``) is an error."""
    clashes = [" and ".join(map(str, paths)) for paths in index.values() if len(paths) > 1]
    if clashes:
        raise ValueError(f"{len(clashes)} {what} name(s) occur more than once: {_listing(clashes)}")
    return {key: paths[0] for key, paths in index.items()}


def _by_stem(files: Iterable[Path], what: str) -> dict[str, Path]:
    """Picture files keyed by their stem (one file per stem)."""
    index: dict[str, list[Path]] = {}
    for path in _pictures(files):
        index.setdefault(split_extension(path.name)[0], []).append(path)
    return _unique(index, what)


def _match(images: dict[str, Path], masks: dict[str, list[Path]], what: str) -> list[tuple[str, Path, list[Path]]]:
    """(key, image, masks) for every key, naturally sorted; an image or a mask without its partner is an error."""
    lonely_images = sorted((images[k] for k in images.keys() - masks.keys()), key=_natural)
    lonely_masks = sorted((m for k in masks.keys() - images.keys() for m in masks[k]), key=_natural)
    problems = []
    if lonely_images:
        problems.append(f"{len(lonely_images)} {what} image(s) have no mask: {_listing(lonely_images)}")
    if lonely_masks:
        problems.append(f"{len(lonely_masks)} {what} mask(s) have no image: {_listing(lonely_masks)}")
    if problems:
        raise ValueError(". ".join(problems))
    keys = sorted(images, key=lambda k: _natural(images[k]))
    return [(key, images[key], sorted(masks[key], key=_natural)) for key in keys]


def _layout_folder(data: Path, names: tuple[str, str], what: str) -> tuple[Path, Path, Path]:
    """The one folder at or below ``data`` holding subfolders named ``names`` (any case), and those subfolders.

    Raises:
        FileNotFoundError: no such folder (the message describes ``what`` was looked for).
        ValueError: several such folders.
    """
    found = []
    for folder in [data, *sorted((d for d in data.rglob("*") if d.is_dir()), key=_natural)]:
        subfolders = {d.name.lower(): d for d in folder.iterdir() if d.is_dir()} if folder.is_dir() else {}
        if all(name.lower() in subfolders for name in names):
            found.append((folder, *(subfolders[name.lower()] for name in names)))
    if not found:
        raise FileNotFoundError(f"no folder at or below {data} holds '{names[0]}' and '{names[1]}' folders ({what})")
    if len(found) > 1:
        raise ValueError(f"several folders under {data} hold {names[0]}/{names[1]}: {_listing([f[0] for f in found])}")
    return found[0]


# --------------------------------------------------------------------------------------------------------------------
# checking, reading and writing pairs


def _size_of(path: Path) -> tuple[int, int]:
    """(width, height) of a picture file from its header."""
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, ValueError) as err:  # PIL.UnidentifiedImageError is an OSError
        raise ValueError(f"{path} cannot be read as an image: {err}") from err


def _check_pairs(pairs: Sequence[_Pair]) -> None:
    """Raise ``ValueError`` listing every unreadable file and every mask whose size differs from its image's."""
    problems = []
    for pair in pairs:
        try:
            image_size, *mask_sizes = (_size_of(path) for path in (pair.image, *pair.masks))
        except ValueError as err:
            problems.append(str(err))
            continue
        for mask, size in zip(pair.masks, mask_sizes, strict=True):
            if size != image_size:
                width, height = image_size
                problems.append(
                    f"mask {mask} is {size[0]}x{size[1]} pixels, its image {pair.image} is {width}x{height}"
                )
    if problems:
        raise ValueError(f"{len(problems)} problem(s) with the input files: {_listing(problems)}")


def _read_image(path: Path, mode: str) -> np.ndarray:
    """An image file as a uint8 array in ``mode`` ("L": grey, "RGB": an alpha channel is dropped)."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert(mode))
    except (OSError, ValueError) as err:
        raise ValueError(f"image {path} cannot be read: {err}") from err


def _read_mask(path: Path, issues: dict[str, list[Path]]) -> np.ndarray:
    """A mask file as a boolean array: brightest RGB channel > 127; values other than 0/255 are noted in ``issues``."""
    try:
        with Image.open(path) as image:
            grey = np.asarray(image.convert("RGB")).max(axis=-1)
    except (OSError, ValueError) as err:
        raise ValueError(f"mask {path} cannot be read: {err}") from err
    if 0 < grey.max() < 128:
        issues["faint"].append(path)
    elif np.any((grey > 0) & (grey < 255)):
        issues["noisy"].append(path)
    return grey > 127


def _log_mask_issues(issues: dict[str, list[Path]], total: int) -> None:
    """One log line per kind of mask that needed more than reading: grey values thresholded, or all below 128."""
    noisy, faint = issues["noisy"], issues["faint"]
    if noisy:
        lossy = all(split_extension(p.name)[1] in (".jpg", ".jpeg") for p in noisy)
        logger.log(
            logging.INFO if lossy else logging.WARNING,
            "%d of %d mask files held values other than 0 and 255 (JPEG noise, anti-aliasing) and were thresholded "
            "at 128: %s",
            len(noisy),
            total,
            _listing(noisy),
        )
    if faint:
        logger.warning(
            "%d mask files are not black but have no value >= 128 and were written empty (0/1 label images?): %s",
            len(faint),
            _listing(faint),
        )


def thumbnail(image: np.ndarray) -> np.ndarray:
    """The image as a flat, zero-mean, unit-norm grey 32x32 thumbnail (zeros for a constant image)."""
    grey = Image.fromarray(image).convert("L").resize((_THUMBNAIL, _THUMBNAIL), Image.Resampling.BILINEAR)
    values = np.asarray(grey, dtype=np.float64).ravel()
    values = values - values.mean()
    norm = np.linalg.norm(values)
    return values / norm if norm > 1e-8 else values


def _write_all(
    pairs: Sequence[_Pair], output: Path, mode: str, size: int, thumbnails: bool = False
) -> tuple[list[dict], np.ndarray | None]:
    """Write every pair (image in ``mode``, mask OR-merged to 0/255) and return the entries (and the thumbnails)."""
    entries, thumbs = [], []
    issues: dict[str, list[Path]] = {"noisy": [], "faint": []}
    for i, pair in enumerate(pairs, start=1):
        image = _read_image(pair.image, mode)
        mask = np.logical_or.reduce([_read_mask(path, issues) for path in pair.masks])
        entry = write_pair(output, pair.name, resize_image(image, size), resize_mask(mask, size, area=False))
        entries.append({**entry, **pair.extra})
        if thumbnails:
            thumbs.append(thumbnail(image))
        if i % 1000 == 0:
            logger.info("%d of %d pairs written", i, len(pairs))
    _log_mask_issues(issues, sum(len(pair.masks) for pair in pairs))
    return entries, (np.stack(thumbs) if thumbnails else None)


def _split_and_finish(
    output: Path,
    entries: list[dict],
    fractions: tuple[float, float],
    seed: int,
    overwrite: bool,
    group_key: str | None = None,
) -> dict[str, list[dict]]:
    """Split ``entries`` (seeded, groups kept together), warn about empty sections, write the datalist."""
    datalist = split_items(entries, *fractions, seed=seed, group_key=group_key)
    warn_empty_sections(datalist, {"validation": fractions[0], "test": fractions[1]})
    return finish_datalist(output, datalist, overwrite)


def _start(
    data_dir: str, output_dir: str, overwrite: bool, size: int, fractions: tuple[float, float]
) -> tuple[Path, Path]:
    """Check the folders and the common arguments; return the input and output folders."""
    data, output = output_folders(data_dir, output_dir, overwrite)
    check_size("size", size)
    validate_fractions(*fractions)
    return data, output


# --------------------------------------------------------------------------------------------------------------------
# BUSI


def near_duplicate_groups(thumbnails: np.ndarray, threshold: float = 0.9) -> list[int]:
    """Group near-duplicate images: union-find over every pair whose thumbnails correlate above ``threshold``.

    Args:
        thumbnails: ``(N, D)`` flat, zero-mean, unit-norm thumbnails, so a dot product is the Pearson correlation.
        threshold: correlation above which two images are near-duplicates.

    Returns:
        For each image the index of its group's first image (an image alone is its own group).
    """
    parent = list(range(len(thumbnails)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    similar = np.triu(thumbnails @ thumbnails.T > threshold, k=1)
    for i, j in zip(*np.nonzero(similar), strict=True):
        first, second = sorted((root(int(i)), root(int(j))))
        parent[second] = first
    return [root(i) for i in range(len(thumbnails))]


def _busi_pairs(data: Path, include_normal: bool) -> list[_Pair]:
    """The BUSI pairs below ``data``; 'normal' ones only with ``include_normal``; stray pictures are logged."""
    images: dict[str, list[Path]] = {}
    masks: dict[str, list[Path]] = {}
    stray, normal = [], 0
    for path in _pictures(_files(data, recursive=True)):
        match = _BUSI_NAME.fullmatch(split_extension(path.name)[0])
        if match is None:
            stray.append(path)
            continue
        name = f"{match['cls'].lower()}_{int(match['number'])}"
        if match["cls"].lower() == "normal" and not include_normal:
            normal += not match["mask"]
            continue
        key = name + (match["mask"] or "").lower()
        (masks if match["mask"] else images).setdefault(key, []).append(path)
    if stray:
        logger.warning("skipping %d picture(s) that are not BUSI images or masks: %s", len(stray), _listing(stray))
    if normal:
        logger.info("leaving out %d 'normal' images (pass --include_normal True to keep them)", normal)
    by_image: dict[str, list[Path]] = {}
    for key, path in _unique(masks, "BUSI mask").items():
        by_image.setdefault(key.split("_mask")[0], []).append(path)
    pairs = _match(_unique(images, "BUSI image"), by_image, "BUSI")
    return [_Pair(name, image, tuple(files), {"class": name.split("_")[0]}) for name, image, files in pairs]


def _busi_groups(names: Sequence[str], thumbnails: np.ndarray | None, threshold: float) -> list[str]:
    """The ``group`` of each BUSI image: the name of its near-duplicate group's first image (or its own name)."""
    if thumbnails is None:
        return list(names)
    roots = near_duplicate_groups(thumbnails, threshold)
    sizes = Counter(roots)
    shared = [count for count in sizes.values() if count > 1]
    logger.info("near-duplicates: %d group(s) of 2 or more hold %d of %d images", len(shared), sum(shared), len(names))
    return [names[r] for r in roots]


def busi(
    data_dir: str,
    output_dir: str,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    include_normal: bool = False,
    group_duplicates: bool = True,
    duplicate_threshold: float = 0.9,
    size: int = 0,
    overwrite: bool = False,
) -> dict[str, list[dict]]:
    """Prepare BUSI (breast ultrasound): grey images, OR-merged binary masks, a seeded split kept by duplicate groups.

    Args:
        data_dir: ``Dataset_BUSI_with_GT`` or a folder above it, searched recursively for ``<class> (N).png`` files
            and their ``<class> (N)_mask.png`` / ``_mask_1.png`` ... masks.
        output_dir: new (or empty) output folder.
        val_fraction: fraction of the images for validation.
        test_fraction: fraction of the images for test.
        seed: seed of the split.
        include_normal: keep the 'normal' images (empty masks), left out by default as in the GMS paper.
        group_duplicates: give near-duplicate images one ``group`` so that the split keeps them together; without
            it each image is its own group.
        duplicate_threshold: Pearson correlation of the 32x32 grey thumbnails above which two images are
            near-duplicates, in (0, 1].
        size: side of the written square images (bilinear) and masks (nearest); 0 keeps each image's size.
        overwrite: write into a non-empty output folder, replacing files of the same name.

    Returns:
        The datalist as written; entries carry ``"class"`` (benign, malignant, normal) and ``"group"``.

    Raises:
        FileNotFoundError: ``data_dir`` is missing or holds no BUSI image.
        FileExistsError: the output folder is not empty and ``overwrite`` is False.
        ValueError: unpaired, unreadable or mis-sized files (named), duplicate names, or a bad argument.
    """
    data, output = _start(data_dir, output_dir, overwrite, size, (val_fraction, test_fraction))
    threshold = duplicate_threshold
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
        raise ValueError(f"duplicate_threshold must be a number in (0, 1], got {duplicate_threshold!r}")
    pairs = _busi_pairs(data, include_normal)
    if not pairs:
        raise FileNotFoundError(f"no BUSI images ('benign (1).png', 'malignant (1).png', ...) in {data} or below")
    _check_pairs(pairs)
    entries, thumbnails = _write_all(pairs, output, "L", size, thumbnails=bool(group_duplicates))
    groups = _busi_groups([pair.name for pair in pairs], thumbnails, duplicate_threshold)
    entries = [{**entry, "group": group} for entry, group in zip(entries, groups, strict=True)]
    logger.info("BUSI: %s", ", ".join(f"{n} {c}" for c, n in sorted(Counter(e["class"] for e in entries).items())))
    return _split_and_finish(output, entries, (val_fraction, test_fraction), seed, overwrite, group_key="group")


# --------------------------------------------------------------------------------------------------------------------
# UDIAT Dataset B, Kvasir-SEG


def _folder_pairs(images_dir: Path, masks_dir: Path, what: str) -> list[_Pair]:
    """Pairs of the pictures of two folders with the same stems."""
    images = _by_stem(_files(images_dir), f"{what} image")
    masks = {stem: [path] for stem, path in _by_stem(_files(masks_dir), f"{what} mask").items()}
    return [_Pair(name, image, tuple(files), {}) for name, image, files in _match(images, masks, what)]


def _prepare_folders(
    data_dir: str,
    output_dir: str,
    folders: tuple[str, str],
    what: str,
    mode: str,
    fractions: tuple[float, float],
    seed: int,
    size: int,
    overwrite: bool,
) -> dict[str, list[dict]]:
    """Prepare a data set laid out as an images folder and a masks folder with the same file stems."""
    data, output = _start(data_dir, output_dir, overwrite, size, fractions)
    _, images_dir, masks_dir = _layout_folder(data, folders, what)
    pairs = _folder_pairs(images_dir, masks_dir, what)
    if not pairs:
        raise FileNotFoundError(f"no images in {images_dir}")
    _check_pairs(pairs)
    entries, _ = _write_all(pairs, output, mode, size)
    return _split_and_finish(output, entries, fractions, seed, overwrite)


def bus(
    data_dir: str,
    output_dir: str,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    size: int = 0,
    overwrite: bool = False,
) -> dict[str, list[dict]]:
    """Prepare UDIAT "Dataset B" (breast ultrasound, 163 images): grey images, binary masks, a seeded split.

    Args:
        data_dir: the folder holding ``original/`` and ``GT/`` (same file names), or a folder above it.
        output_dir: new (or empty) output folder.
        val_fraction: fraction of the images for validation.
        test_fraction: fraction of the images for test.
        seed: seed of the split.
        size: side of the written square images (bilinear) and masks (nearest); 0 keeps each image's size.
        overwrite: write into a non-empty output folder, replacing files of the same name.

    Returns:
        The datalist as written.

    Raises:
        FileNotFoundError: ``data_dir`` is missing or holds no ``original``/``GT`` folders.
        FileExistsError: the output folder is not empty and ``overwrite`` is False.
        ValueError: unpaired, unreadable or mis-sized files (named), or a bad argument.
    """
    fractions = (val_fraction, test_fraction)
    what = "UDIAT Dataset B"
    return _prepare_folders(data_dir, output_dir, ("original", "GT"), what, "L", fractions, seed, size, overwrite)


def kvasir_seg(
    data_dir: str,
    output_dir: str,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    size: int = 0,
    overwrite: bool = False,
) -> dict[str, list[dict]]:
    """Prepare Kvasir-SEG (polyps, 1000 images): RGB images, JPEG masks thresholded at 128, a seeded split.

    Args:
        data_dir: the ``Kvasir-SEG`` folder holding ``images/`` and ``masks/`` (same names), or a folder above it.
        output_dir: new (or empty) output folder.
        val_fraction: fraction of the images for validation.
        test_fraction: fraction of the images for test.
        seed: seed of the split.
        size: side of the written square images (bilinear) and masks (nearest); 0 keeps each image's size.
        overwrite: write into a non-empty output folder, replacing files of the same name.

    Returns:
        The datalist as written.

    Raises:
        FileNotFoundError: ``data_dir`` is missing or holds no ``images``/``masks`` folders.
        FileExistsError: the output folder is not empty and ``overwrite`` is False.
        ValueError: unpaired, unreadable or mis-sized files (named), or a bad argument.
    """
    fractions = (val_fraction, test_fraction)
    what = "Kvasir-SEG"
    return _prepare_folders(data_dir, output_dir, ("images", "masks"), what, "RGB", fractions, seed, size, overwrite)


# --------------------------------------------------------------------------------------------------------------------
# ISIC 2018 Task 1 / HAM10000


def _isic_pairs(files: Sequence[Path]) -> list[_Pair]:
    """Pairs of ``ISIC_<n>`` images and ``ISIC_<n>_segmentation`` masks among ``files`` (other files ignored)."""
    images: dict[str, list[Path]] = {}
    masks: dict[str, list[Path]] = {}
    for path in _pictures(files):
        match = _ISIC_NAME.fullmatch(split_extension(path.name)[0])
        if match is not None:
            (masks if match["mask"] else images).setdefault(f"ISIC_{match['number']}", []).append(path)
    single_masks = {key: [path] for key, path in _unique(masks, "ISIC mask").items()}
    pairs = _match(_unique(images, "ISIC image"), single_masks, "ISIC")
    return [_Pair(name, image, tuple(files), {}) for name, image, files in pairs]


def _csv_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file with lower-case, stripped column names and stripped values ([] if unreadable)."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        logger.warning("skipping %s: %s", path, err)
        return []
    rows = list(csv.reader(lines))
    header = [column.strip().lower() for column in rows[0]] if rows else []
    return [dict(zip(header, (value.strip() for value in row), strict=False)) for row in rows[1:]]


def _lesions(files: Sequence[Path]) -> dict[str, dict[str, str]]:
    """ISIC image id -> ``{"group": lesion id, "dx": diagnosis}`` from the CSVs among ``files`` that have them."""
    table: dict[str, dict[str, str]] = {}
    for path in (p for p in files if p.suffix.lower() == ".csv"):
        rows = _csv_rows(path)
        columns = rows[0].keys() if rows else set()
        image_column = next((c for c in ("image_id", "image") if c in columns), None)
        if image_column is None or "lesion_id" not in columns:
            continue
        logger.info("lesion ids from %s", path)
        for row in rows:
            match = _ISIC_NAME.fullmatch(row.get(image_column, ""))
            if match and row.get("lesion_id"):
                info = {"group": row["lesion_id"], **({"dx": row["dx"]} if row.get("dx") else {})}
                table.setdefault(f"ISIC_{match['number']}", info)
    return table


def ham10000(
    data_dir: str,
    output_dir: str,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    size: int = 0,
    overwrite: bool = False,
) -> dict[str, list[dict]]:
    """Prepare ISIC 2018 Task 1 / HAM10000 (skin lesions): RGB images, binary masks, a seeded split by lesion.

    Args:
        data_dir: folder searched recursively for ``ISIC_<n>.jpg`` images and ``ISIC_<n>_segmentation.png`` masks
            (and lesion-id CSVs); every image found needs its mask, so leave out image folders without ground truth.
        output_dir: new (or empty) output folder.
        val_fraction: fraction of the images for validation.
        test_fraction: fraction of the images for test.
        seed: seed of the split.
        size: side of the written square images (bilinear) and masks (nearest); 0 keeps each image's size.
        overwrite: write into a non-empty output folder, replacing files of the same name.

    Returns:
        The datalist as written; entries carry ``"group"`` (the lesion id, else the image name) and, where the CSV
        gives it, ``"dx"``.

    Raises:
        FileNotFoundError: ``data_dir`` is missing or holds no ISIC image.
        FileExistsError: the output folder is not empty and ``overwrite`` is False.
        ValueError: unpaired, unreadable or mis-sized files (named), duplicate names, or a bad argument.
    """
    fractions = (val_fraction, test_fraction)
    data, output = _start(data_dir, output_dir, overwrite, size, fractions)
    files = _files(data, recursive=True)
    pairs = _isic_pairs(files)
    if not pairs:
        raise FileNotFoundError(f"no ISIC images ('ISIC_0024306.jpg' with 'ISIC_0024306_segmentation.png') in {data}")
    lesions = _lesions(files)
    logger.info("%d of %d images have a lesion id", sum(p.name in lesions for p in pairs), len(pairs))
    pairs = [pair._replace(extra=lesions.get(pair.name, {"group": pair.name})) for pair in pairs]
    _check_pairs(pairs)
    entries, _ = _write_all(pairs, output, "RGB", size)
    return _split_and_finish(output, entries, fractions, seed, overwrite, group_key="group")


# --------------------------------------------------------------------------------------------------------------------
# Kvasir-Instrument


def _split_ids(folder: Path) -> tuple[list[str], list[str]] | None:
    """The image ids of ``train.txt`` and ``test.txt`` in ``folder`` (any case), or None when neither is there."""
    files = {p.name.lower(): p for p in folder.iterdir() if p.is_file()}
    present = [files.get(name) for name in ("train.txt", "test.txt")]
    if not any(present):
        return None
    if not all(present):
        raise ValueError(f"{folder} holds only one of train.txt and test.txt; give both or neither")
    lists = []
    for path in present:
        lines = (line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines())
        ids = [split_extension(Path(line).name)[0] for line in lines if line]
        if not ids:
            raise ValueError(f"split file {path} lists no image ids")
        lists.append(ids)
    return lists[0], lists[1]


def _official_split(pairs: list[_Pair], train_ids: list[str], test_ids: list[str]) -> list[_Pair]:
    """The pairs listed in the split files; an unlisted image is left out with a warning, an unknown id is an error."""
    listed = set(train_ids) | set(test_ids)
    both = sorted(set(train_ids) & set(test_ids))
    if both:
        raise ValueError(f"{len(both)} image id(s) are in both train.txt and test.txt: {_listing(both)}")
    unknown = sorted(listed - {pair.name for pair in pairs})
    if unknown:
        raise ValueError(f"{len(unknown)} image id(s) of train.txt/test.txt have no image: {_listing(unknown)}")
    unlisted = [pair.image for pair in pairs if pair.name not in listed]
    if unlisted:
        logger.warning(
            "leaving out %d image(s) in neither train.txt nor test.txt: %s", len(unlisted), _listing(unlisted)
        )
    return [pair for pair in pairs if pair.name in listed]


def kvasir_instrument(
    data_dir: str,
    output_dir: str,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    size: int = 0,
    overwrite: bool = False,
) -> dict[str, list[dict]]:
    """Prepare Kvasir-Instrument (endoscopic tools, 590 images): RGB images, binary masks, the official split.

    With ``train.txt`` and ``test.txt`` beside ``images/`` and ``masks/``, the train ids are split (seeded) into
    ``training``/``validation`` by ``val_fraction`` and the test ids are ``test`` (``test_fraction`` is unused);
    images in neither file are left out. Without those files all images are split by both fractions.

    Args:
        data_dir: the folder holding ``images/``, ``masks/`` (same stems) and the split files, or a folder above it.
        output_dir: new (or empty) output folder.
        val_fraction: fraction of the (train) images for validation.
        test_fraction: fraction of the images for test, when there are no split files.
        seed: seed of the split.
        size: side of the written square images (bilinear) and masks (nearest); 0 keeps each image's size.
        overwrite: write into a non-empty output folder, replacing files of the same name.

    Returns:
        The datalist as written.

    Raises:
        FileNotFoundError: ``data_dir`` is missing or holds no ``images``/``masks`` folders.
        FileExistsError: the output folder is not empty and ``overwrite`` is False.
        ValueError: unpaired, unreadable or mis-sized files (named), split files naming missing images or one image
            twice, only one split file, or a bad argument.
    """
    fractions = (val_fraction, test_fraction)
    data, output = _start(data_dir, output_dir, overwrite, size, fractions)
    folder, images_dir, masks_dir = _layout_folder(
        data, ("images", "masks"), "Kvasir-Instrument: extract images.tar.gz and masks.tar.gz first"
    )
    pairs = _folder_pairs(images_dir, masks_dir, "Kvasir-Instrument")
    if not pairs:
        raise FileNotFoundError(f"no images in {images_dir}")
    split_ids = _split_ids(folder)
    if split_ids is None:
        logger.info("no train.txt/test.txt in %s: seeded split of all images", folder)
        _check_pairs(pairs)
        entries, _ = _write_all(pairs, output, "RGB", size)
        return _split_and_finish(output, entries, fractions, seed, overwrite)
    logger.info("official split from %s/train.txt and test.txt (test_fraction unused)", folder)
    pairs = _official_split(pairs, *split_ids)
    _check_pairs(pairs)
    entries, _ = _write_all(pairs, output, "RGB", size)
    test_ids = set(split_ids[1])
    train = [entry for pair, entry in zip(pairs, entries, strict=True) if pair.name not in test_ids]
    datalist = split_items(train, val_fraction, 0.0, seed=seed)
    datalist["test"] = [entry for pair, entry in zip(pairs, entries, strict=True) if pair.name in test_ids]
    warn_empty_sections(datalist, {"validation": val_fraction})
    return finish_datalist(output, datalist, overwrite)


# --------------------------------------------------------------------------------------------------------------------
# command line


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point: logs at INFO and turns bad input into a one-line error and exit status 1."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    command = list(argv) if argv is not None else None
    commands = {
        "busi": busi,
        "bus": bus,
        "ham10000": ham10000,
        "kvasir_seg": kvasir_seg,
        "kvasir_instrument": kvasir_instrument,
    }
    try:
        fire.Fire(commands, command=command, name="prepare_gms", serialize=lambda _: None)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        logger.error("%s", err)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
