"""Where a bundle's data comes from: the user's ``dataset_dir`` and datalist, or the synthetic sample data."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence

from monai.transforms import LoadImage, Randomizable

from common.data.datalist import list_files, load_datalist
from common.data.synthetic import write_synthetic_dataset
from common.io import SUPPORTED_EXTENSIONS
from common.transforms.masks import EnsureBinaryMask
from common.transforms.writers import SaveMaskd

__all__ = ["datalist_path", "folder_items", "inference_items", "resolve_datalist", "simulate_predictions"]

logger = logging.getLogger(__name__)

PATH_KEYS = ("image", "label")  # datalist keys that hold file paths


def datalist_path(dataset_dir: str, datalist: str) -> str:
    """The datalist file to read: ``datalist`` as given (absolute or found from here), else in ``dataset_dir``."""
    if not datalist:
        return os.path.join(dataset_dir, "datalist.json")
    if os.path.isabs(datalist) or os.path.exists(datalist):
        return datalist
    return os.path.join(dataset_dir, datalist)


def _check_dataset_dir(dataset_dir: str) -> None:
    if not os.path.isdir(dataset_dir):
        raise FileNotFoundError(
            f"dataset_dir '{dataset_dir}' does not exist or is not a folder; give an existing folder, or leave "
            "dataset_dir empty ('') to use the synthetic sample data."
        )


def resolve_datalist(
    dataset_dir: str,
    datalist: str = "",
    synthetic_kind: str = "",
    synthetic_dir: str = "",
    synthetic_num: int = 16,
    synthetic_size: int | None = None,
    seed: int = 0,
    keys: Sequence[str] = ("image", "label"),
) -> dict[str, list[dict]]:
    """Return every section of the datalist a bundle runs on, with absolute, checked paths.

    * ``dataset_dir`` empty: the synthetic sample data of ``synthetic_kind`` is written (once, seeded) to a folder
      of ``synthetic_dir`` named after its parameters, and used; the log says so.
    * otherwise ``datalist`` (default ``<dataset_dir>/datalist.json``; a relative path is looked up in the working
      directory, then in ``dataset_dir``) is read; its paths are relative to ``dataset_dir``.

    A ``dataset_dir`` that does not exist is an error, never a silent fallback to synthetic data.
    """
    if not dataset_dir:
        if not synthetic_kind or not synthetic_dir:
            raise ValueError(
                "dataset_dir is empty and the config names no synthetic_kind/synthetic_dir to fall back on."
            )
        folder = os.path.join(synthetic_dir, f"{synthetic_kind}_n{synthetic_num}_size{synthetic_size}_seed{seed}")
        logger.warning(
            "dataset_dir is empty: using %d synthetic '%s' samples (seed %d) in %s; set --dataset_dir for real data.",
            synthetic_num,
            synthetic_kind,
            seed,
            folder,
        )
        write_synthetic_dataset(synthetic_kind, folder, num=synthetic_num, seed=seed, size=synthetic_size)
        path, base_dir = os.path.join(folder, "datalist.json"), folder
    else:
        _check_dataset_dir(dataset_dir)
        path, base_dir = datalist_path(dataset_dir, datalist), dataset_dir
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"datalist '{path}' not found (config key 'datalist'); write one with "
                "`python -m tools.prepare_folder` or pass --datalist <file>."
            )
    with open(path) as f:
        sections = [k for k, v in json.load(f).items() if isinstance(v, list)]
    return {s: load_datalist(path, s, base_dir=base_dir, keys=keys, optional_keys=PATH_KEYS) for s in sections}


def folder_items(folder: str, key: str = "image") -> list[dict]:
    """One item per image file directly in ``folder`` (sorted), for running inference on a plain folder."""
    files = list_files(folder, "dataset_dir")
    if not files:
        raise FileNotFoundError(f"no image files ({', '.join(SUPPORTED_EXTENSIONS)}) found in dataset_dir '{folder}'.")
    return [{key: str(p.resolve())} for p in files]


def inference_items(
    dataset_dir: str,
    datalist: str = "",
    section: str = "test",
    synthetic_kind: str = "",
    synthetic_dir: str = "",
    synthetic_num: int = 16,
    synthetic_size: int | None = None,
    seed: int = 0,
    key: str = "image",
    source_key: str = "",
) -> list[dict]:
    """Items to run inference on: a datalist section, every image in ``dataset_dir``, or the synthetic data.

    With a datalist (given, or ``datalist.json`` in ``dataset_dir``) its ``section`` is used; without one, every image
    file directly in ``dataset_dir``. An empty ``dataset_dir`` uses the synthetic sample data's ``section``.
    ``source_key`` names the datalist key that holds the network's input when it is not ``key`` (a synthesis
    network's input is the label map): each item becomes ``{key: entry[source_key]}``; a plain folder's files are
    the inputs either way.
    """
    if dataset_dir:
        _check_dataset_dir(dataset_dir)
        path = datalist_path(dataset_dir, datalist)
        if not (datalist or os.path.isfile(path)):
            return folder_items(dataset_dir, key)
        entries = load_datalist(path, section, base_dir=dataset_dir, keys=(source_key or key,), optional_keys=PATH_KEYS)
    else:
        sections = resolve_datalist("", "", synthetic_kind, synthetic_dir, synthetic_num, synthetic_size, seed, keys=())
        if section not in sections:
            raise ValueError(f"the synthetic '{synthetic_kind}' data has no section '{section}'.")
        entries = sections[section]
    return [{key: entry[source_key]} for entry in entries] if source_key else entries


def simulate_predictions(
    items: list[dict],
    output_dir: str,
    corruption: Randomizable,
    seed: int = 0,
    image_key: str = "image",
    label_key: str = "label",
) -> list[dict]:
    """Give every item without an ``image_key`` a simulated segmenter output: its label mask, corrupted.

    Post-DAE evaluation needs (raw prediction, ground truth) pairs; for mask-only data sets (and the synthetic data)
    the raw prediction is simulated by a seeded corruption of the ground truth, written to ``output_dir``. Items that
    already have a prediction are kept as they are; the log says how many were simulated.
    """
    check, load = EnsureBinaryMask(), LoadImage(image_only=True, ensure_channel_first=True)
    save = SaveMaskd(keys=image_key, output_dir=output_dir, postfix="simulated", source_key=image_key)
    out, simulated = [], 0
    for index, item in enumerate(items):
        if image_key in item:
            out.append(dict(item))
            continue
        if label_key not in item:
            raise ValueError(f"item {index} has neither '{image_key}' nor '{label_key}': {item}.")
        label = check(load(item[label_key]))  # a MetaTensor that remembers the label's file and affine
        corruption.set_random_state(seed=seed + index)
        saved = save({image_key: corruption(label)})
        out.append({**item, image_key: saved[f"{image_key}_path"]})
        simulated += 1
    if simulated:
        logger.warning(
            "%d of %d items had no prediction: simulated by corrupting their label (%s).",
            simulated,
            len(items),
            output_dir,
        )
    return out
