r"""Turn a folder of image/mask pairs, or of masks only, into a MONAI datalist JSON with seeded, grouped splits.

Every mask is read and checked first (binary 0/1 or 0/255, or integer labels with ``--multi_label True``), and
every bad file is reported in one error. Paths in the datalist are relative to its folder (or ``--relative_to``).

Examples (from the repository root)::

    python -m tools.prepare_folder --images_dir data/images --masks_dir data/masks --output data/datalist.json
    python -m tools.prepare_folder --masks_dir cxr/masks --output /tmp/cxr.json \
        --group_file cxr/files.txt --name_column output_name --group_column patient_id
    python -m tools.prepare_folder --images_dir scans --output scans/datalist.json --group_regex '^(\w+?)_'
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import fire
import numpy as np

from common.data.datalist import SPLITS, pair_folder, split_extension, split_items, validate_fractions, write_datalist
from common.transforms.masks import EnsureBinaryMask
from tools.dataset_output import warn_empty_sections

__all__ = ["UNKNOWN_GROUPS", "check_masks", "main", "prepare_folder", "read_group_file"]

logger = logging.getLogger("tools.prepare_folder")

#: Group values (lower case) that mean "unknown": such items become groups of their own.
UNKNOWN_GROUPS = frozenset({"", "-", "?", "na", "n/a", "nan", "none", "null", "unknown"})

_SPLIT_GROUP = "_split_group"  # internal entry key used for splitting, removed before writing


def read_group_file(
    path: str | os.PathLike, name_column: str = "output_name", group_column: str = "patient_id"
) -> dict[str, str]:
    """Read a TSV/CSV table mapping file names to group ids (e.g. patient ids); unknown ids are left out.

    The delimiter is a tab when the header line holds one, else a comma.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a column is missing, or a name is listed with two different groups.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"group file {path} does not exist")
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    reader = csv.DictReader(lines, delimiter="\t" if lines and "\t" in lines[0] else ",")
    columns = reader.fieldnames or []
    for argument, column in (("name_column", name_column), ("group_column", group_column)):
        if column not in columns:
            raise ValueError(f"group file {path} has no column {column!r} ({argument}); columns: {columns}")
    groups: dict[str, str] = {}
    for line, row in enumerate(reader, start=2):
        name, group = (row[name_column] or "").strip(), (row[group_column] or "").strip()
        if not name or group.lower() in UNKNOWN_GROUPS:
            continue
        if groups.setdefault(name, group) != group:
            raise ValueError(f"group file {path} line {line}: {name!r} has two groups, {groups[name]!r} and {group!r}")
    return groups


def _item_names(item: dict) -> list[str]:
    """File names an item can be looked up by: the image's, then the mask's, each also without extension."""
    names = [Path(item[key]).name for key in ("image", "label") if key in item]
    return names + [split_extension(name)[0] for name in names]


def _groups_from_regex(items: Sequence[dict], group_regex: str) -> list[str | None]:
    """Group id of each item from the first name that ``group_regex`` matches (its first group, or the match)."""
    try:
        pattern = re.compile(group_regex)
    except re.error as err:
        raise ValueError(f"--group_regex {group_regex!r} is not a valid regular expression: {err}") from err
    groups: list[str | None] = []
    for item in items:
        match = next((m for m in map(pattern.search, _item_names(item)) if m), None)
        groups.append(None if match is None else match.group(1 if pattern.groups else 0))
    return groups


def _groups_from_table(items: Sequence[dict], table: dict[str, str]) -> list[str | None]:
    """Group id of each item looked up in a name -> group table by its file names."""
    return [next((table[name] for name in _item_names(item) if name in table), None) for item in items]


def _mask_problem(path: str, multi_label: bool, loader: Callable[[str], Any]) -> str | None:
    """Why the mask at ``path`` is unusable (unreadable, several channels, not binary / not integer), or None.

    Binary masks get the same check as the bundles' loading (``EnsureBinaryMask``), so a datalist this tool accepts
    is one the bundles accept.
    """
    try:
        mask = loader(path)
    except Exception as err:  # any reader failure is reported with the file, not raised
        return f"{path}: cannot be read ({type(err).__name__}: {err})"
    if not multi_label:
        try:
            EnsureBinaryMask(allow_empty=True)(mask, name=path)
        except ValueError as err:
            return f"{err} Use --multi_label True for label maps."
        return None
    if mask.shape[0] != 1:
        return f"{path}: has {mask.shape[0]} channels, expected a single-channel label map"
    values = np.unique(np.asarray(mask))
    if np.any(values < 0) or np.any(values != np.round(values)):
        shown = ", ".join(f"{v:g}" for v in values[:8]) + (", ..." if len(values) > 8 else "")
        return f"{path}: values {{{shown}}} are not non-negative integer labels"
    return None


def check_masks(paths: Sequence[str], multi_label: bool = False) -> list[str]:
    """Read every mask and return one line per bad file (empty when all are usable).

    A usable mask has one channel (or identical channels) and values {0, 1} or {0, 255}, or non-negative integers
    with ``multi_label``.
    """
    from monai.transforms import LoadImage

    loader = LoadImage(image_only=True, ensure_channel_first=True)
    return [problem for path in paths if (problem := _mask_problem(path, multi_label, loader)) is not None]


def _relative(entry: dict, base: Path) -> dict:
    """The entry with its image/label paths relative to ``base``."""
    return {key: os.path.relpath(value, base) if key in ("image", "label") else value for key, value in entry.items()}


def _attach_groups(items: list[dict], groups: Sequence[str | None]) -> None:
    """Store each item's group and a split key that is unique for unknown groups.

    When any group is known, every entry gets a ``group`` key (``""`` when unknown): entries of one datalist must
    share their keys, or MONAI cannot batch them.
    """
    any_known = any(group is not None for group in groups)
    for index, (item, group) in enumerate(zip(items, groups, strict=True)):
        item[_SPLIT_GROUP] = group if group is not None else ("single", index)
        if any_known:
            item["group"] = group or ""


def _item_groups(
    items: Sequence[dict], group_regex: str | None, group_file: str | None, name_column: str, group_column: str
) -> list[str | None]:
    """Group id per item from ``group_regex`` or ``group_file`` (None: unknown), warning about unknown ones."""
    if group_regex is not None:
        groups = _groups_from_regex(items, group_regex)
    elif group_file is not None:
        groups = _groups_from_table(items, read_group_file(group_file, name_column, group_column))
    else:
        return [None] * len(items)
    unknown = groups.count(None)
    if unknown:
        logger.warning("%d of %d files have no known group; each becomes a group of its own", unknown, len(items))
    return groups


def prepare_folder(
    output: str,
    images_dir: str | None = None,
    masks_dir: str | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    group_regex: str | None = None,
    group_file: str | None = None,
    name_column: str = "output_name",
    group_column: str = "patient_id",
    relative_to: str | None = None,
    multi_label: bool = False,
    allow_unpaired: bool = False,
    overwrite: bool = False,
) -> dict[str, list[dict]]:
    """Write a MONAI datalist (training/validation/test) for a folder of image/mask pairs or of masks only.

    Args:
        output: datalist JSON file to write.
        images_dir: folder of images; omit for a masks-only datalist (entries ``{"label": ...}``).
        masks_dir: folder of masks (same stems, optionally with a suffix such as ``_mask``); omit when the masks
            lie beside the images with such a suffix.
        val_fraction: fraction of files for validation.
        test_fraction: fraction of files for test.
        seed: seed of the split.
        group_regex: regular expression whose first group (or whole match) in a file name is its group id, e.g. a
            patient id, so one group never sits in two splits.
        group_file: TSV/CSV table with a ``name_column`` (file name) and a ``group_column``; names missing from it or
            with an unknown group (``-``, empty, ``NA``) each become a group of their own.
        name_column: column of ``group_file`` with file names.
        group_column: column of ``group_file`` with group ids.
        relative_to: folder the written paths are relative to; default the output's folder.
        multi_label: accept integer label maps instead of binary masks.
        allow_unpaired: skip images without a mask instead of failing.
        overwrite: replace an existing ``output``.

    Returns:
        The datalist as written.
    """
    # fire turns number-like arguments (a folder "2024", a column "1") into numbers: take them as text again
    images_dir, masks_dir, group_regex, group_file, relative_to = (
        None if value is None else str(value) for value in (images_dir, masks_dir, group_regex, group_file, relative_to)
    )
    name_column, group_column = str(name_column), str(group_column)
    output_path = Path(str(output))
    if output_path.exists() and not overwrite:
        raise FileExistsError(f"{output_path} already exists; pass --overwrite True to replace it")
    if group_regex is not None and group_file is not None:
        raise ValueError("give either --group_regex or --group_file, not both")
    validate_fractions(val_fraction, test_fraction)
    items = pair_folder(images_dir, masks_dir, allow_unpaired=allow_unpaired)
    problems = check_masks([item["label"] for item in items], multi_label)
    if problems:
        raise ValueError(f"{len(problems)} of {len(items)} masks are not usable:\n  " + "\n  ".join(problems))
    groups = _item_groups(items, group_regex, group_file, name_column, group_column)
    _attach_groups(items, groups)
    splits = split_items(items, val_fraction, test_fraction, seed=seed, group_key=_SPLIT_GROUP)
    base = Path(relative_to) if relative_to is not None else output_path.parent
    datalist = {
        split: [_relative({k: v for k, v in e.items() if k != _SPLIT_GROUP}, base.absolute()) for e in entries]
        for split, entries in splits.items()
    }
    write_datalist(datalist, output_path, overwrite=overwrite)
    warn_empty_sections(datalist, {"validation": val_fraction, "test": test_fraction})
    known = {g for g in groups if g is not None}
    logger.info(
        "wrote %s: %s (%d %s, %d known groups)",
        output_path,
        ", ".join(f"{len(datalist[s])} {s}" for s in SPLITS),
        len(items),
        "masks" if images_dir is None else "pairs",
        len(known),
    )
    return datalist


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point: logs at INFO and turns bad input into a one-line error and exit status 1."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    command = list(argv) if argv is not None else None
    try:
        fire.Fire(prepare_folder, command=command, name="prepare_folder", serialize=lambda _: None)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        logger.error("%s", err)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
