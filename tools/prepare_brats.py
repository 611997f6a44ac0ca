r"""Prepare the BraTS 2021 training set as 2D slices and few-shot datalists, as Alshenoudy et al. (2023) did.

For the bundle ``brats_mri_ddpm_fewshot_segmentation``. Every case folder ``BraTS2021_NNNNN`` (sorted by name) gives
the axial slices ``--slices`` (the paper's 70, 75, ..., 100), each written as ``images/BraTS2021_NNNNN_s070.nii.gz``
(``(H, W, 4)`` float32, channels last T1, T1ce, T2, FLAIR, min-max normalised jointly to [0, 1], identity affine;
load with ``channel_dim=-1``) and ``labels/BraTS2021_NNNNN_s070.nii.gz`` (``(H, W)`` uint8: 0 background, 1 edema,
2 necrotic core, 3 enhancing tumour), resized to ``--size`` (see ``common.data.brats_slice``). Cases are read one at a
time; every case's files and shapes are checked before anything is written, and the input is only read.

Splits, as the paper's code but independent of the file system's listing order: the slice names are sorted, then
``random_split(range(N), [pool_size, N - pool_size], Generator().manual_seed(split_seed))`` gives the labelled pool
and the test set (757 / 8000 slices for the 1251 cases). Slices of one patient can fall on both sides, as in the
paper. For each ``n`` of ``--shots`` and seed of ``--seeds``, ``random_split(pool, [n, pool_size - n], seed)`` gives
the training slices; validation is the first ``--max_validation`` of the rest of the pool. Files written:

* ``datalist_n{n}_seed{seed}.json`` for every shot count and seed, ``datalist_full.json`` (the paper's upper bound:
  the whole pool shuffled with ``split_seed``, no validation) and ``datalist.json`` (the first shot count and seed:
  n = 10, seed 16 by default, the bundle's default). Sections ``training``, ``validation``, ``test`` with entries
  ``{"image": "images/...", "label": "labels/..."}`` and ``unlabelled`` with ``{"image": ...}`` only, for the DDPM's
  pre-training: the pool's images by default, every slice (test set included) with ``--unlabelled all``. The paper
  does not say which it used; the default keeps the test images unseen. Entries are in ``random_split`` order (the
  ``all`` unlabelled list in name order); paths are relative to the output folder.
* ``splits.json``: every parameter, the torch version and the sorted slice names the split indices refer to.

Examples (from the repository root)::

    python -m tools.prepare_brats --data_dir ~/data/RSNA_ASNR_MICCAI_BraTS2021_TrainingData_16July2021 \
        --output_dir ~/data/brats2021_slices
    python -m tools.prepare_brats --data_dir ~/data/BraTS2021_Training_Data --output_dir ~/data/brats_all \
        --unlabelled all --shots 10,50 --seeds 42
    python -m tools.prepare_brats --data_dir ~/data/brats_subset --output_dir ~/data/brats_small \
        --slices 80,90 --pool_size 40 --shots 5 --seeds 0 --max_validation 10
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import fire
import torch
from torch.utils.data import random_split

from common.data.brats import brats_case_shape, brats_slice, read_brats_case, write_brats_slice
from common.data.datalist import write_datalist
from common.io import atomic_write_json
from tools.dataset_output import check_size, finish_datalist, output_folders

__all__ = ["PAPER_SLICES", "brats_splits", "main", "prepare_brats"]

logger = logging.getLogger("tools.prepare_brats")

#: The paper's axial slices of every volume.
PAPER_SLICES: tuple[int, ...] = (70, 75, 80, 85, 90, 95, 100)

_CASE_PREFIX = "BraTS2021_"
_UNLABELLED = ("pool", "all")


# --------------------------------------------------------------------------------------------------------------------
# arguments


def _integers(name: str, value: Any, minimum: int) -> list[int]:
    """``value`` (an int, a list of ints, or text such as ``"70,75"``) as a non-empty list of distinct ints."""
    items = re.split(r"[\s,]+", value.strip()) if isinstance(value, str) else value
    items = [items] if isinstance(items, int) else items
    try:
        numbers = [int(item) if isinstance(item, str) else item for item in items]
    except (TypeError, ValueError):
        numbers = None
    if (
        not numbers
        or any(isinstance(n, bool) or not isinstance(n, int) or n < minimum for n in numbers)
        or len(set(numbers)) != len(numbers)
    ):
        raise ValueError(f"{name} must be distinct integers >= {minimum}, comma-separated, got {value!r}")
    return numbers


def _integer(name: str, value: Any, minimum: int) -> int:
    """Raise ``ValueError`` unless ``value`` is an int >= ``minimum``; return it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


# --------------------------------------------------------------------------------------------------------------------
# splits


def brats_splits(
    names: Sequence[str],
    pool_size: int,
    shots: Sequence[int],
    seeds: Sequence[int],
    split_seed: int,
    max_validation: int,
) -> dict[str, dict[str, list[str]]]:
    """The paper's splits of the slice ``names`` (sorted here), as torch ``random_split`` draws them.

    Returns:
        ``{"pool": ..., "test": ..., "n{n}_seed{seed}": ..., "full": ...}``: the names of ``pool`` and ``test`` under
        ``"names"``, and for each few-shot split (and the full pool with ``split_seed``) its ``training`` and
        ``validation`` names, each in ``random_split`` order.

    Raises:
        ValueError: ``pool_size`` >= the number of slices (no test set), or a shot count larger than the pool.
    """
    names = sorted(names)
    if pool_size >= len(names):
        raise ValueError(
            f"--pool_size {pool_size} leaves no test slices: there are only {len(names)} slices; "
            "choose a smaller --pool_size"
        )
    for n in shots:
        if n > pool_size:
            raise ValueError(f"--shots: n = {n} is larger than the labelled pool of {pool_size} slices (--pool_size)")
    pool_part, test_part = random_split(
        range(len(names)), [pool_size, len(names) - pool_size], generator=torch.Generator().manual_seed(split_seed)
    )
    pool, test = [names[i] for i in pool_part], [names[i] for i in test_part]
    splits = {"pool": {"names": pool}, "test": {"names": test}}
    runs = [(f"n{n}_seed{seed}", n, seed, max_validation) for n in shots for seed in seeds]
    for key, n, seed, validation in [*runs, ("full", pool_size, split_seed, 0)]:
        training, rest = random_split(pool, [n, pool_size - n], generator=torch.Generator().manual_seed(seed))
        splits[key] = {"training": list(training), "validation": list(rest)[:validation]}
    return splits


# --------------------------------------------------------------------------------------------------------------------
# writing


def _cases(data: Path) -> list[Path]:
    """The ``BraTS2021_*`` case folders directly in ``data``, sorted by name."""
    cases = sorted(p for p in data.iterdir() if p.is_dir() and p.name.startswith(_CASE_PREFIX))
    if not cases:
        raise FileNotFoundError(
            f"no {_CASE_PREFIX}* case folders in {data}; pass the folder that holds the case folders"
        )
    return cases


def _check_cases(cases: Sequence[Path], slices: Sequence[int]) -> None:
    """Check every case's files and shapes (headers only) and that every slice index lies in its volume."""
    deepest = max(slices)
    for case in cases:
        depth = brats_case_shape(case)[-1]
        if deepest >= depth:
            raise ValueError(
                f"BraTS case {case}: --slices {deepest} is outside its volume of depth {depth} (0..{depth - 1})"
            )


def _write_slices(cases: Sequence[Path], slices: Sequence[int], size: int, output: Path) -> None:
    """Read one case at a time and write its slices' images and labels."""
    for number, case in enumerate(cases, start=1):
        volumes, seg = read_brats_case(case)
        for index in slices:
            image, label = brats_slice(volumes, seg, index, size, where=str(case))
            write_brats_slice(output, f"{case.name}_s{index:03d}", image, label)
        if number % 50 == 0 or number == len(cases):
            logger.info("%d of %d cases written", number, len(cases))


def _datalist(split: dict[str, list[str]], test: list[str], unlabelled: list[str]) -> dict[str, list[dict]]:
    """The datalist of one split: labelled entries for training, validation and test, images only for unlabelled."""

    def labelled(names: list[str]) -> list[dict]:
        return [{"image": f"images/{name}.nii.gz", "label": f"labels/{name}.nii.gz"} for name in names]

    return {
        "training": labelled(split["training"]),
        "validation": labelled(split["validation"]),
        "test": labelled(test),
        "unlabelled": [{"image": f"images/{name}.nii.gz"} for name in unlabelled],
    }


# --------------------------------------------------------------------------------------------------------------------
# command


def prepare_brats(
    data_dir: str,
    output_dir: str,
    slices: Any = PAPER_SLICES,
    size: int = 128,
    pool_size: int = 757,
    shots: Any = (10, 20, 30, 40, 50),
    seeds: Any = (16, 42, 88, 128, 256),
    split_seed: int = 42,
    max_validation: int = 100,
    unlabelled: str = "pool",
    overwrite: bool = False,
) -> dict[str, list[dict]]:
    """Write the BraTS 2021 slices, the few-shot datalists and ``splits.json`` (see the module docstring).

    Args:
        data_dir: the BraTS 2021 training folder, holding the ``BraTS2021_NNNNN`` case folders.
        output_dir: new (or empty) output folder.
        slices: axial slice indices of every volume (comma-separated or a list).
        size: side of the written square slices (shorter side resized, then centre-cropped).
        pool_size: labelled pool size; the other slices are the test set.
        shots: training set sizes drawn from the pool.
        seeds: seeds of the few-shot draws.
        split_seed: seed of the pool / test split (and of the full-pool datalist).
        max_validation: at most this many of the pool's slices not used for training are validation.
        unlabelled: ``"pool"`` (the pool's images) or ``"all"`` (every slice) for the ``unlabelled`` section.
        overwrite: write into a non-empty output folder, replacing files of the same name.

    Returns:
        The default datalist (``datalist.json``) as written.

    Raises:
        FileNotFoundError: ``data_dir`` is missing, holds no case folder, or a case lacks a file (named).
        FileExistsError: the output folder is not empty and ``overwrite`` is False.
        ValueError: a bad argument, ``--pool_size`` not below the number of slices, a shot count above it, or a bad
            case (mismatched shapes, a slice outside a volume, labels other than 0, 1, 2, 4; the case is named).
    """
    data, output = output_folders(data_dir, output_dir, overwrite)
    slices = sorted(_integers("--slices", slices, 0))
    shots, seeds = _integers("--shots", shots, 1), _integers("--seeds", seeds, 0)
    size, pool_size = _integer("--size", size, 1), _integer("--pool_size", pool_size, 1)
    split_seed = _integer("--split_seed", split_seed, 0)
    check_size("--max_validation", max_validation)
    if unlabelled not in _UNLABELLED:
        raise ValueError(f"--unlabelled must be one of {', '.join(_UNLABELLED)}, got {unlabelled!r}")
    cases = _cases(data)
    names = sorted(f"{case.name}_s{index:03d}" for case in cases for index in slices)
    splits = brats_splits(names, pool_size, shots, seeds, split_seed, max_validation)
    logger.info("%d cases x %d slices = %d slices; checking every case", len(cases), len(slices), len(names))
    _check_cases(cases, slices)
    _write_slices(cases, slices, size, output)
    test = splits["test"]["names"]
    unlabelled_names = splits["pool"]["names"] if unlabelled == "pool" else names
    for key in [f"n{n}_seed{seed}" for n in shots for seed in seeds] + ["full"]:
        write_datalist(_datalist(splits[key], test, unlabelled_names), output / f"datalist_{key}.json", overwrite)
    parameters = {
        "slices": slices,
        "size": size,
        "pool_size": pool_size,
        "shots": shots,
        "seeds": seeds,
        "split_seed": split_seed,
        "max_validation": max_validation,
        "unlabelled": unlabelled,
    }
    atomic_write_json(
        output / "splits.json",
        {
            "data_dir": str(data),
            "parameters": parameters,
            "torch_version": torch.__version__,
            "default_datalist": f"datalist_n{shots[0]}_seed{seeds[0]}.json",
            "order": "random_split indices refer to 'names' (the slice names, sorted)",
            "names": names,
        },
    )
    default = _datalist(splits[f"n{shots[0]}_seed{seeds[0]}"], test, unlabelled_names)
    return finish_datalist(output, default, overwrite)


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point: logs at INFO and turns bad input into a one-line error and exit status 1."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    command = list(argv) if argv is not None else None
    try:
        fire.Fire(prepare_brats, command=command, name="prepare_brats", serialize=lambda _: None)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        logger.error("%s", err)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
