"""MONAI datalists: seeded (grouped) splits, checked reading and writing, and pairing a folder of images and masks.

A datalist is a JSON object of sections (``training``, ``validation``, ``test``), each a list of entries such as
``{"image": "images/a.png", "label": "masks/a.png"}`` with paths relative to the datalist's folder.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.io import SUPPORTED_EXTENSIONS, atomic_write_json, read_json, split_extension

__all__ = [
    "SPLITS",
    "SUPPORTED_EXTENSIONS",
    "list_files",
    "load_datalist",
    "pair_folder",
    "section_images",
    "split_extension",
    "split_items",
    "validate_fractions",
    "write_datalist",
]

logger = logging.getLogger(__name__)

#: Section names of a datalist written by this module, in order.
SPLITS: tuple[str, ...] = ("training", "validation", "test")


_SHOWN = 5  # how many offending names an error message lists


# --------------------------------------------------------------------------------------------------------------------
# splitting


def validate_fractions(val_fraction: float, test_fraction: float) -> None:
    """Raise ``ValueError`` unless both fractions are numbers in [0, 1) that leave room for training (sum < 1)."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    if val_fraction + test_fraction >= 1:
        raise ValueError(
            "val_fraction + test_fraction must be < 1 to leave items for training, "
            f"got {val_fraction} + {test_fraction}"
        )


def _split_counts(total: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """Rounded (half up) validation and test item counts, reduced (validation first) so training keeps one item."""
    n_val = math.floor(val_fraction * total + 0.5)
    n_test = math.floor(test_fraction * total + 0.5)
    while total and n_val + n_test > total - 1:
        if n_val:
            n_val -= 1
        else:
            n_test -= 1
    return n_val, n_test


def _groups(items: Sequence[dict], group_key: str | None) -> list[list[int]]:
    """Item indices grouped by ``item[group_key]`` in order of first appearance (one group per item without a key)."""
    if group_key is None:
        return [[i] for i in range(len(items))]
    groups: dict[Any, list[int]] = {}
    for i, item in enumerate(items):
        if group_key not in item:
            raise ValueError(f"item {i} has no group key {group_key!r} (keys: {sorted(item)})")
        groups.setdefault(item[group_key], []).append(i)
    return list(groups.values())


def split_items(
    items: Sequence[dict],
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    group_key: str | None = None,
) -> dict[str, list[dict]]:
    """Split items into ``training``/``validation``/``test`` at random (seeded), keeping groups together.

    With ``group_key`` every item sharing that key's value (e.g. a patient id) lands in the same split, so no patient
    leaks between training and evaluation. Groups are shuffled and laid end to end; a group goes to test, validation
    or training by where its middle falls, so the fractions hold exactly without groups and approximately with them.

    Tiny lists: counts are rounded half up and training always keeps at least one item (group); validation, then
    test, shrink first. With the default fractions 1-2 items all go to training and 5 items give 3/1/1, so
    validation or test may be empty for short lists.

    Args:
        items: datalist entries (dicts); copied, their keys (the group key included) are kept.
        val_fraction: fraction of items for validation, in [0, 1).
        test_fraction: fraction of items for test, in [0, 1); ``val_fraction + test_fraction < 1``.
        seed: seed of the shuffle; the same items and seed give the same split.
        group_key: entry key whose value identifies a group; every item must have it.

    Returns:
        ``{"training": [...], "validation": [...], "test": [...]}``, each in the input order.
    """
    validate_fractions(val_fraction, test_fraction)
    groups = _groups(items, group_key)
    order = np.random.default_rng(seed).permutation(len(groups))
    n_val, n_test = _split_counts(len(items), val_fraction, test_fraction)
    assignment: dict[int, str] = {}
    start = 0
    for g in order:
        middle = start + len(groups[g]) / 2
        split = "test" if middle < n_test else "validation" if middle < n_test + n_val else "training"
        assignment.update(dict.fromkeys(groups[g], split))
        start += len(groups[g])
    if items and "training" not in assignment.values():  # a large last group crossed the boundary
        assignment.update(dict.fromkeys(groups[order[-1]], "training"))
    result: dict[str, list[dict]] = {split: [] for split in SPLITS}
    for i, item in enumerate(items):
        result[assignment[i]].append(dict(item))
    return result


# --------------------------------------------------------------------------------------------------------------------
# reading and writing


def write_datalist(datalist: dict[str, list[dict]], path: str | os.PathLike, overwrite: bool = False) -> None:
    """Write a datalist as indented JSON, atomically, creating the parent folder.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        ValueError: ``datalist`` is not a dict of lists of dicts.
    """
    if not isinstance(datalist, dict) or not all(
        isinstance(entries, list) and all(isinstance(e, dict) for e in entries) for entries in datalist.values()
    ):
        raise ValueError("datalist must be a dict mapping section names to lists of dict entries")
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"datalist {path} already exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, datalist)


def _resolve(value: Any, base: Path, where: str) -> str | list[str]:
    """Absolute form of a path value (a string or a list of strings, as MONAI allows for multi-file images)."""
    if isinstance(value, str):
        return os.path.abspath(base / value)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return [os.path.abspath(base / v) for v in value]
    raise ValueError(f"{where} must be a path or a list of paths, got {value!r}")


def _missing_files(entries: list[dict], keys: Sequence[str]) -> list[str]:
    """Descriptions ``entry i 'key': path`` of every referenced file that does not exist."""
    missing = []
    for i, entry in enumerate(entries):
        for key in (k for k in keys if k in entry):
            paths = entry[key] if isinstance(entry[key], list) else [entry[key]]
            missing += [f"entry {i} {key!r}: {p}" for p in paths if not os.path.exists(p)]
    return missing


def load_datalist(
    path: str | os.PathLike,
    section: str,
    base_dir: str | os.PathLike | None = None,
    keys: Sequence[str] = ("image", "label"),
    check_files: bool = True,
    optional_keys: Sequence[str] = (),
) -> list[dict]:
    """Read one section of a MONAI datalist with checks, returning its entries with absolute paths.

    Args:
        path: datalist JSON file.
        section: section to read, e.g. ``"training"``.
        base_dir: folder relative paths are resolved against; default the datalist's folder.
        keys: keys every entry must have; their values (paths or lists of paths) are resolved. Other keys are kept
            as they are.
        check_files: also check that every resolved file exists.
        optional_keys: path keys resolved (and checked) like ``keys`` in the entries that have them.

    Raises:
        FileNotFoundError: the datalist or (with ``check_files``) a referenced file is missing; the message names the
            datalist, the entries and the paths.
        ValueError: the file is not valid JSON, lacks ``section``, or an entry lacks one of ``keys``.
    """
    path = Path(path)
    data = read_json(path, "datalist")
    if not isinstance(data, dict):
        raise ValueError(f"datalist {path} must hold a JSON object of sections, got {type(data).__name__}")
    if section not in data:
        raise ValueError(f"datalist {path} has no section {section!r}; sections present: {sorted(data)}")
    entries = data[section]
    if not isinstance(entries, list):
        raise ValueError(f"section {section!r} of datalist {path} must be a list, got {type(entries).__name__}")
    base = Path(base_dir) if base_dir is not None else path.parent
    resolved = []
    for i, entry in enumerate(entries):
        where = f"entry {i} of section {section!r} of datalist {path}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} must be an object, got {entry!r}")
        for key in keys:
            if key not in entry:
                raise ValueError(f"{where} has no {key!r} key (keys present: {sorted(entry)})")
        present = [*keys, *(k for k in optional_keys if k in entry and k not in keys)]
        resolved.append({**entry, **{key: _resolve(entry[key], base, f"{where}, key {key!r},") for key in present}})
    missing = _missing_files(resolved, [*keys, *optional_keys]) if check_files else []
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} file(s) listed in section {section!r} of datalist {path} do not exist: "
            + "; ".join(missing[:_SHOWN])
            + (" ..." if len(missing) > _SHOWN else "")
        )
    return resolved


# --------------------------------------------------------------------------------------------------------------------
# pairing a folder


def list_files(folder: str | os.PathLike, what: str = "folder") -> list[Path]:
    """Sorted files with a supported extension directly in ``folder`` (hidden files skipped).

    Raises:
        FileNotFoundError: ``folder`` is not a directory; the message calls it ``what``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} {folder} does not exist or is not a folder")
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and split_extension(p.name)[1]
    )


def _index_by_stem(files: Sequence[Path]) -> dict[str, list[Path]]:
    """Files keyed by their stem (several when only the extension differs)."""
    index: dict[str, list[Path]] = {}
    for f in files:
        index.setdefault(split_extension(f.name)[0], []).append(f)
    return index


def _find_mask(stem: str, masks: dict[str, list[Path]], suffixes: Sequence[str]) -> Path | None:
    """The mask of image ``stem``: the first suffix with a mask file; ambiguous extensions raise ``ValueError``."""
    for suffix in suffixes:
        found = masks.get(stem + suffix, [])
        if len(found) > 1:
            raise ValueError(f"several masks match image {stem!r}: {', '.join(str(f) for f in found)}")
        if found:
            return found[0]
    return None


def _split_same_folder(files: Sequence[Path], suffixes: Sequence[str]) -> tuple[list[Path], list[Path]]:
    """Separate images from masks in one folder: a mask's stem is another file's stem plus a non-empty suffix."""
    stems = set(_index_by_stem(files))
    suffixes = [s for s in suffixes if s]
    if not suffixes:
        raise ValueError("images and masks in one folder need a non-empty mask suffix such as '_mask'")

    def is_mask(f: Path) -> bool:
        stem = split_extension(f.name)[0]
        return any(stem.endswith(s) and stem[: -len(s)] in stems for s in suffixes)

    return [f for f in files if not is_mask(f)], [f for f in files if is_mask(f)]


def pair_folder(
    images_dir: str | os.PathLike | None,
    masks_dir: str | os.PathLike | None = None,
    mask_suffixes: Sequence[str] = ("_mask", "_seg", "_label", "_anno", ""),
    allow_unpaired: bool = False,
) -> list[dict]:
    """Pair image files with their mask files by name, giving datalist entries with absolute paths.

    A mask belongs to an image when its stem is the image stem plus one of ``mask_suffixes`` (tried in order), with
    any supported extension (``SUPPORTED_EXTENSIONS``): ``a.png`` pairs with ``a_mask.png`` or ``a.nii.gz``.

    Modes:
        ``pair_folder(images, masks)``: images and masks in two folders.
        ``pair_folder(images)``: masks beside the images, told apart by a non-empty suffix.
        ``pair_folder(None, masks)``: masks only; returns ``[{"label": path}, ...]``.

    Args:
        images_dir: folder of images, or None for masks only.
        masks_dir: folder of masks; None for masks in ``images_dir``.
        mask_suffixes: stem suffixes that mark a mask.
        allow_unpaired: skip images without a mask (with a warning) instead of raising.

    Returns:
        Entries ``{"image": path, "label": path}`` sorted by image name.

    Raises:
        FileNotFoundError: a folder does not exist.
        ValueError: no files, images without a mask (the message lists the first few), or an ambiguous mask.
    """
    if images_dir is None:
        if masks_dir is None:
            raise ValueError("give images_dir, masks_dir or both")
        masks = list_files(masks_dir, "masks folder")
        if not masks:
            raise ValueError(f"masks folder {masks_dir} holds no files with an extension of {SUPPORTED_EXTENSIONS}")
        return [{"label": str(m.absolute())} for m in masks]
    files = list_files(images_dir, "images folder")
    same_folder = masks_dir is None or Path(masks_dir).absolute() == Path(images_dir).absolute()
    if same_folder:
        images, masks = _split_same_folder(files, mask_suffixes)
    else:
        images, masks = files, list_files(masks_dir, "masks folder")
    if not images:
        raise ValueError(f"images folder {images_dir} holds no images with an extension of {SUPPORTED_EXTENSIONS}")
    mask_index = _index_by_stem(masks)
    pairs, unmatched = [], []
    for image in images:
        mask = _find_mask(split_extension(image.name)[0], mask_index, mask_suffixes)
        if mask is None:
            unmatched.append(image.name)
        else:
            pairs.append({"image": str(image.absolute()), "label": str(mask.absolute())})
    if unmatched:
        message = (
            f"{len(unmatched)} of {len(images)} images in {images_dir} have no mask in {masks_dir or images_dir} "
            f"(mask name = image stem + one of {list(mask_suffixes)}): {', '.join(unmatched[:_SHOWN])}"
            + (" ..." if len(unmatched) > _SHOWN else "")
        )
        if not allow_unpaired:
            raise ValueError(message)
        logger.warning("skipping %s", message)
    unused = len(masks) - len({p["label"] for p in pairs})
    if unused:
        logger.warning("%d mask(s) in %s match no image", unused, masks_dir or images_dir)
    return pairs


def section_images(
    datalist: dict[str, list[dict]],
    sections: Sequence[str] = ("unlabelled",),
    fallback_sections: Sequence[str] = ("training", "validation"),
    key: str = "image",
) -> list[dict]:
    """The images (``{key: path}``, labels dropped) of ``sections``, for unsupervised pre-training.

    When the datalist has none of ``sections`` (the synthetic sample data has no ``unlabelled`` section), the images of
    ``fallback_sections`` are used and the log says so; when it has none of those either, it is an error naming both.
    """
    chosen = [s for s in sections if s in datalist]
    if not chosen:
        chosen = [s for s in fallback_sections if s in datalist]
        if not chosen:
            raise ValueError(
                f"the datalist has none of the sections {list(sections)} (nor the fallback {list(fallback_sections)}); "
                f"its sections: {sorted(datalist)}."
            )
        logger.warning("the datalist has no section %s: pre-training on the images of %s", list(sections), chosen)
    items = [{key: item[key]} for section in chosen for item in datalist[section] if key in item]
    if not items:
        raise ValueError(f"the datalist sections {chosen} hold no '{key}' entries to pre-train on.")
    return items
