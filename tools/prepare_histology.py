r"""Prepare MoNuSeg 2018 (nuclei) and GlaS (glands) from their public layouts for the score-based SDF bundle.

Each command writes RGB image and binary 0/255 mask PNGs into a new output folder (``images/``, ``masks/``) and a
MONAI datalist ``datalist.json`` beside them, with paths relative to that folder: the official training images are
split (seeded) into ``training``/``validation``, the official test images go to ``test``. The input is only read.

Examples (from the repository root)::

    python -m tools.prepare_histology monuseg --data_dir ~/data/monuseg --output_dir ~/data/monuseg_500
    python -m tools.prepare_histology monuseg --data_dir ~/data/monuseg --output_dir ~/data/monuseg_patches \
        --patch_size 128
    python -m tools.prepare_histology glas --data_dir "~/data/Warwick QU Dataset (Released 2016_07_08)" \
        --output_dir ~/data/glas_128
"""

from __future__ import annotations

import csv
import logging
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import fire
import numpy as np
from PIL import Image
from skimage.draw import polygon

from common.data.datalist import split_items, validate_fractions
from tools.dataset_output import check_size, finish_datalist, output_folders, resize_image, resize_mask, write_pair

__all__ = ["glas", "main", "monuseg", "polygons_to_mask", "read_aperio_polygons"]

logger = logging.getLogger("tools.prepare_histology")

_TCGA_CASE = re.compile(r"TCGA-[A-Z0-9]{2}-[A-Z0-9]{4}")
_GLAS_NAME = re.compile(r"(train|testA|testB)_\d+")


# --------------------------------------------------------------------------------------------------------------------
# readers


def _read_rgb(path: Path) -> np.ndarray:
    """An image file as an RGB uint8 array (an alpha channel is dropped, grey is repeated)."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as err:
        raise ValueError(f"image {path} cannot be read: {err}") from err


def _read_mask(path: Path) -> np.ndarray:
    """A mask or label image as a boolean foreground mask (> 0 in any channel)."""
    try:
        with Image.open(path) as label:
            mask = np.asarray(label) > 0
    except (OSError, ValueError) as err:
        raise ValueError(f"label {path} cannot be read: {err}") from err
    return mask.any(axis=-1) if mask.ndim == 3 else mask


# --------------------------------------------------------------------------------------------------------------------
# MoNuSeg


def read_aperio_polygons(path: str | Path) -> list[np.ndarray]:
    """Every ``Region`` polygon of an Aperio ImageScope XML file as an ``(N, 2)`` float array of (row, col) = (Y, X).

    Raises:
        ValueError: the file cannot be parsed, a vertex lacks a numeric X or Y, or there is no region with vertices;
            the message names the file.
    """
    try:
        regions = ET.parse(path).getroot().iter("Region")
        polygons = [np.array([[float(v.attrib["Y"]), float(v.attrib["X"])] for v in r.iter("Vertex")]) for r in regions]
    except (OSError, ET.ParseError, KeyError, ValueError) as err:
        raise ValueError(f"annotation {path} cannot be parsed as Aperio ImageScope XML: {err!r}") from err
    polygons = [p for p in polygons if len(p)]
    if not polygons:
        raise ValueError(f"annotation {path} holds no <Region> with <Vertex> elements")
    return polygons


def polygons_to_mask(polygons: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Union of filled (row, col) polygons as a boolean mask of ``shape``, clipped to it.

    A pixel belongs to a polygon when its centre lies inside it or on its boundary (``skimage.draw.polygon``).
    """
    mask = np.zeros(shape, dtype=bool)
    for vertices in polygons:
        rows, cols = polygon(vertices[:, 0], vertices[:, 1], shape)
        mask[rows, cols] = True
    return mask


def _monuseg_section(image: Path, data: Path) -> str:
    """``"test"`` when the image's folder below ``data`` (or ``data``'s own name) mentions "test", else training."""
    folder = image.parent.relative_to(data)
    return "test" if "test" in (folder.as_posix() if folder.parts else data.name).lower() else "training"


def _monuseg_images(data: Path) -> list[tuple[Path, Path, str]]:
    """(image, annotation XML, section) of every TIFF under ``data``, sorted by path.

    Raises:
        FileNotFoundError: no TIFF under ``data``.
        ValueError: images without an XML (all are named) or two images with the same name.
    """
    tiffs = (p for p in data.rglob("*") if p.suffix.lower() in (".tif", ".tiff") and not p.name.startswith("."))
    images = sorted(p for p in tiffs if p.is_file())
    if not images:
        raise FileNotFoundError(
            f"no .tif images in {data} or its subfolders (the public layout has "
            "'MoNuSeg 2018 Training Data/Tissue Images' and 'MoNuSegTestData')"
        )
    duplicates = sorted(name for name, count in Counter(p.stem for p in images).items() if count > 1)
    if duplicates:
        raise ValueError(f"several images under {data} share the name(s) {', '.join(duplicates)}")
    found, missing = [], []
    for image in images:
        candidates = (image.parent.parent / "Annotations" / f"{image.stem}.xml", image.with_suffix(".xml"))
        xml = next((c for c in candidates if c.is_file()), None)
        if xml is None:
            missing.append(f"{image} (looked for {candidates[0]} and {candidates[1]})")
        else:
            found.append((image, xml, _monuseg_section(image, data)))
    if missing:
        raise ValueError(f"{len(missing)} MoNuSeg image(s) have no annotation XML: " + "; ".join(missing))
    return found


def _cut_patches(output: Path, entries: Sequence[dict], patch_size: int) -> list[dict]:
    """Cut the written images/masks of ``entries`` into non-overlapping squares under ``patches/``.

    Patches are laid from the top-left corner; a border narrower than ``patch_size`` is left out.
    """
    patches = []
    for entry in entries:
        image, mask = _read_rgb(output / entry["image"]), _read_mask(output / entry["label"])
        height, width = mask.shape
        if patch_size > min(height, width):
            raise ValueError(f"patch_size {patch_size} is larger than {output / entry['image']} ({height}x{width})")
        for top in range(0, height - patch_size + 1, patch_size):
            for left in range(0, width - patch_size + 1, patch_size):
                window = np.s_[top : top + patch_size, left : left + patch_size]
                name = f"{Path(entry['image']).stem}_y{top}_x{left}"
                pair = write_pair(output, name, image[window], mask[window], prefix="patches/")
                patches.append({**pair, "group": entry["group"]})
    return patches


def monuseg(
    data_dir: str,
    output_dir: str,
    size: int = 500,
    patch_size: int = 0,
    val_fraction: float = 0.15,
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, list[dict]]:
    """Prepare MoNuSeg 2018: rasterise the nuclei polygons of each image into a binary mask, resize, write a datalist.

    ``data_dir`` holds the training data (``Tissue Images/*.tif`` with ``Annotations/*.xml`` beside that folder),
    the test data (``MoNuSegTestData/*.tif`` with each ``.xml`` beside its image), or both; images in a folder whose
    name mentions "test" go to ``test``, the others are split by image into ``training``/``validation``. Each image is
    its own patient; ``group`` is its TCGA case id (``TCGA-XX-XXXX``).

    Args:
        data_dir: folder holding the MoNuSeg folders, searched recursively for ``.tif`` files.
        output_dir: new (or empty) output folder.
        size: side of the written images and masks (0: keep 1000). The image is resized bilinearly (anti-aliased),
            the mask by area averaging, then thresholded at 0.5 (a pixel is nucleus when at least half its area is).
        patch_size: if > 0, also cut the training images into non-overlapping ``patch_size`` squares (the border
            left over is dropped) under ``patches/``, listed in the section ``training_patches``.
        val_fraction: fraction of the training images for validation.
        seed: seed of the split.
        overwrite: write into a non-empty output folder, replacing files of the same name.

    Returns:
        The datalist as written.

    Raises:
        FileNotFoundError: ``data_dir`` is missing or holds no ``.tif`` image.
        FileExistsError: the output folder is not empty and ``overwrite`` is False.
        ValueError: an annotation is missing or unparsable (the message names the file), or a bad argument.
    """
    data, output = output_folders(data_dir, output_dir, overwrite)
    check_size("size", size)
    check_size("patch_size", patch_size)
    if size and patch_size > size:
        raise ValueError(f"patch_size {patch_size} is larger than size {size}")
    validate_fractions(val_fraction, 0.0)
    images = _monuseg_images(data)
    polygons = {image: read_aperio_polygons(xml) for image, xml, _ in images}  # every XML checked before writing
    sections: dict[str, list[dict]] = {"training": [], "test": []}
    for image_path, _, section in images:
        image = _read_rgb(image_path)
        mask = polygons_to_mask(polygons[image_path], image.shape[:2])
        entry = write_pair(output, image_path.stem, resize_image(image, size), resize_mask(mask, size, area=True))
        case = _TCGA_CASE.match(image_path.stem)
        sections[section].append({**entry, "group": case.group(0) if case else image_path.stem})
    datalist = split_items(sections["training"], val_fraction, 0.0, seed=seed, group_key="group")
    datalist["test"] = sections["test"]
    if patch_size:
        datalist["training_patches"] = _cut_patches(output, datalist["training"], patch_size)
    return finish_datalist(output, datalist, overwrite)


# --------------------------------------------------------------------------------------------------------------------
# GlaS


def _glas_folder(data: Path) -> Path:
    """The one folder at or below ``data`` holding ``*_anno.bmp`` files."""
    folders = sorted({p.parent for p in data.rglob("*_anno.bmp")})
    if not folders:
        raise FileNotFoundError(f"no *_anno.bmp files in {data} or its subfolders (GlaS 'Warwick QU Dataset' folder)")
    if len(folders) > 1:
        raise ValueError(f"several folders under {data} hold *_anno.bmp files: {', '.join(map(str, folders))}")
    return folders[0]


def _glas_patients(folder: Path) -> dict[str, str]:
    """Image name -> patient id from the folder's ``Grade.csv`` (empty, with a warning, when the file is missing)."""
    path = folder / "Grade.csv"
    if not path.is_file():
        logger.warning("%s not found: each GlaS image is its own group in the training/validation split", path)
        return {}
    rows = list(csv.reader(path.read_text(encoding="utf-8-sig").splitlines()))
    header = [column.strip().lower() for column in rows[0]] if rows else []
    if "name" not in header or "patient id" not in header:
        raise ValueError(f"{path} has no 'name' and 'patient ID' columns (header: {header})")
    name, patient = header.index("name"), header.index("patient id")
    return {row[name].strip(): row[patient].strip() for row in rows[1:] if len(row) > max(name, patient)}


def glas(
    data_dir: str,
    output_dir: str,
    size: int = 128,
    val_fraction: float = 0.15,
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, list[dict]]:
    """Prepare GlaS (Warwick-QU): binary gland masks from the instance labels, resized, and a datalist.

    ``train_*`` images are split into ``training``/``validation``, keeping each patient of ``Grade.csv`` on one side
    (``group`` is ``patient_<id>``, or the image name without ``Grade.csv``); ``testA_*`` and ``testB_*`` go to
    ``test`` with ``"subset": "testA"`` or ``"testB"``. Other ``.bmp`` files are skipped with a warning.

    Args:
        data_dir: the GlaS folder (``train_1.bmp``, ``train_1_anno.bmp``, ..., ``Grade.csv``) or a folder above it.
        output_dir: new (or empty) output folder.
        size: side of the written images (bilinear, anti-aliased) and masks (nearest); 0 keeps each image's size.
        val_fraction: fraction of the training images for validation.
        seed: seed of the split.
        overwrite: write into a non-empty output folder, replacing files of the same name.

    Returns:
        The datalist as written.

    Raises:
        FileNotFoundError: ``data_dir`` is missing or holds no ``*_anno.bmp``.
        FileExistsError: the output folder is not empty and ``overwrite`` is False.
        ValueError: an image without its ``_anno`` file (all are named), a label of another size, or a bad argument.
    """
    data, output = output_folders(data_dir, output_dir, overwrite)
    check_size("size", size)
    validate_fractions(val_fraction, 0.0)
    folder = _glas_folder(data)
    images = []
    for path in sorted(p for p in folder.glob("*.bmp") if not p.stem.endswith("_anno")):
        if _GLAS_NAME.fullmatch(path.stem):
            images.append(path)
        else:
            logger.warning("skipping %s: not a train_*, testA_* or testB_* image", path)
    missing = [str(p) for p in images if not p.with_name(f"{p.stem}_anno.bmp").is_file()]
    if missing:
        raise ValueError(f"{len(missing)} GlaS image(s) have no _anno.bmp label: {', '.join(missing)}")
    patients = _glas_patients(folder)
    sections: dict[str, list[dict]] = {"training": [], "test": []}
    for path in images:
        image = _read_rgb(path)
        anno = path.with_name(f"{path.stem}_anno.bmp")
        mask = _read_mask(anno)
        if mask.shape != image.shape[:2]:
            raise ValueError(f"label {anno} is {mask.shape}, its image {path} is {image.shape[:2]}")
        entry = write_pair(output, path.stem, resize_image(image, size), resize_mask(mask, size, area=False))
        entry["group"] = f"patient_{patients[path.stem]}" if path.stem in patients else path.stem
        subset = path.stem.split("_")[0]
        if subset == "train":
            sections["training"].append(entry)
        else:
            sections["test"].append({**entry, "subset": subset})
    datalist = split_items(sections["training"], val_fraction, 0.0, seed=seed, group_key="group")
    datalist["test"] = sections["test"]
    return finish_datalist(output, datalist, overwrite)


# --------------------------------------------------------------------------------------------------------------------
# command line


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point: logs at INFO and turns bad input into a one-line error and exit status 1."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    command = list(argv) if argv is not None else None
    try:
        fire.Fire(
            {"monuseg": monuseg, "glas": glas}, command=command, name="prepare_histology", serialize=lambda _: None
        )
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        logger.error("%s", err)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
