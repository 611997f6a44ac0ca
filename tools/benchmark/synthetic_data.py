"""Quick mode's data: small synthetic folders in the layouts of the real data sets, from ``common.data.synthetic``.

Quick mode runs the same preparation, training and evaluation as a full run, on these instead of
``--data_root``'s folders (the numbers mean nothing; the pipeline is exercised end to end).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from common.data.synthetic import lung_mask, nuclei_tile, polyp_frame

__all__ = ["write_quick_data"]


def _pair(folder: Path, name: str, image: np.ndarray, mask: np.ndarray) -> None:
    Image.fromarray(image).save(folder / "images" / name)
    Image.fromarray(mask).save(folder / "masks" / name)


def _folders(folder: Path, *subs: str) -> Path:
    for sub in subs:
        (folder / sub).mkdir(parents=True, exist_ok=True)
    return folder


def _as_uint8(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


def nuclei(folder: Path, patients: int = 10, size: int = 32) -> Path:
    """MoNuSeg-like H&E tiles named by TCGA patient (two a patient), binary 0/255 nuclei masks."""
    _folders(folder, "images", "masks")
    for patient in range(patients):
        for quadrant in ("q0", "q3"):
            image, mask = nuclei_tile(size, rng=patient * 2 + (quadrant == "q3"), num_nuclei=(2, 4))
            name = f"TCGA-A{patient}-00{patient:02d}-01Z-00-DX1_{quadrant}.png"
            _pair(folder, name, _as_uint8(image.transpose(1, 2, 0)), ((mask > 0) * 255).astype(np.uint8))
    return folder


def frames(folder: Path, count: int = 24, size: int = 40, grey: bool = False) -> Path:
    """Polyp-like frames with 0/255 masks: RGB as Kvasir-SEG, or grey as BUSI."""
    _folders(folder, "images", "masks")
    for i in range(count):
        image, mask = polyp_frame(size, rng=i)
        pixels = image.mean(axis=0) if grey else image.transpose(1, 2, 0)
        _pair(folder, f"f_{i:02d}.png", _as_uint8(pixels), (mask * 255).astype(np.uint8))
    return folder


def lung_masks(folder: Path, count: int = 20, size: int = 64) -> Path:
    """Chest X-ray lung masks (0/255) with a ``files.txt`` of patient ids, as ``cxr_lung_masks``."""
    _folders(folder, "masks")
    rows = ["output_name\tpatient_id"]
    for i in range(count):
        Image.fromarray(((lung_mask(size, i) > 0) * 255).astype(np.uint8)).save(folder / "masks" / f"m_{i:02d}.png")
        rows.append(f"m_{i:02d}.png\tp{i // 2}")
    (folder / "files.txt").write_text("\n".join(rows) + "\n")
    return folder


def write_quick_data(root: Path) -> Path:
    """Every quick data set under ``root``, named as the real folders in ``--data_root``; returns ``root``."""
    nuclei(root / "monuseg_nuclei_HE")
    frames(root / "busi_breast_ultrasound", grey=True)
    frames(root / "kvasir_seg_polyp", count=20)
    lung_masks(root / "cxr_lung_masks")
    return root
