"""Writing prepared image/mask data sets: the output folder, resizing, PNG pairs and the datalist.

Shared by the ``tools.prepare_*`` commands; every file is written atomically and the input is only read.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from common.data.datalist import write_datalist
from common.io import atomic_output

__all__ = [
    "check_size",
    "finish_datalist",
    "output_folders",
    "resize_image",
    "resize_mask",
    "save_png",
    "warn_empty_sections",
    "write_pair",
]

logger = logging.getLogger("tools.dataset_output")


def output_folders(data_dir: str, output_dir: str, overwrite: bool) -> tuple[Path, Path]:
    """The input folder (must exist) and the output folder (must not overlap it; empty unless ``overwrite``)."""
    data, output = Path(str(data_dir)).expanduser().resolve(), Path(str(output_dir)).expanduser().resolve()
    if not data.is_dir():
        raise FileNotFoundError(f"data folder {data} does not exist or is not a folder")
    if output == data or data in output.parents or output in data.parents:
        raise ValueError(f"output folder {output} must not overlap the data folder {data}")
    if output.exists() and not output.is_dir():
        raise FileExistsError(f"output {output} exists and is not a folder")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise FileExistsError(f"output folder {output} is not empty; pass --overwrite True to write into it")
    return data, output


def check_size(name: str, value: int) -> None:
    """Raise ``ValueError`` unless ``value`` is an integer >= 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Image (RGB or grey) resized to ``size`` x ``size`` (0: unchanged) by Pillow's anti-aliased bilinear filter."""
    if not size:
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))


def resize_mask(mask: np.ndarray, size: int, area: bool) -> np.ndarray:
    """Boolean mask resized to ``size`` x ``size`` (0: unchanged): area average, >= 0.5 if ``area``; else nearest."""
    if not size:
        return mask
    if area:
        fraction = Image.fromarray(mask.astype(np.float32)).resize((size, size), Image.Resampling.BOX)
        return np.asarray(fraction) >= 0.5
    return np.asarray(Image.fromarray(mask.astype(np.uint8)).resize((size, size), Image.Resampling.NEAREST)) > 0


def save_png(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as a PNG file, atomically, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def write_pair(output: Path, name: str, image: np.ndarray, mask: np.ndarray, prefix: str = "") -> dict[str, str]:
    """Write ``{prefix}images/{name}.png`` (as given) and ``{prefix}masks/{name}.png`` (0/255); return their entry."""
    entry = {"image": f"{prefix}images/{name}.png", "label": f"{prefix}masks/{name}.png"}
    save_png(output / entry["image"], image)
    save_png(output / entry["label"], mask.astype(np.uint8) * 255)
    return entry


def finish_datalist(output: Path, datalist: dict[str, list[dict]], overwrite: bool) -> dict[str, list[dict]]:
    """Write ``output/datalist.json`` and log the count of each section."""
    path = output / "datalist.json"
    write_datalist(datalist, path, overwrite=overwrite)
    logger.info("wrote %s: %s", path, ", ".join(f"{len(entries)} {name}" for name, entries in datalist.items()))
    return datalist


def warn_empty_sections(datalist: dict[str, list[dict]], fractions: dict[str, float]) -> None:
    """Warn when a split asked for (fraction > 0) came out empty: too few files or groups to fill it."""
    for split, fraction in fractions.items():
        if fraction > 0 and not datalist[split]:
            logger.warning("the %s split is empty (fraction %g): too few files or groups", split, fraction)
