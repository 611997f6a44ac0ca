"""The patient use case of Alshenoudy et al. (2023, Fig. 4): a few annotated axial slices segment the whole volume.

A clinician annotates a few axial slices of one patient's volume; the pixel classifier is trained on those slices
only (with the DDPM pre-trained on other data) and segments every slice. ``write_volume_slices`` turns the volume
and its partial label into the 2D slices and the datalist the bundle trains on, ``predict_slices`` runs the trained
ensemble on every slice, and ``assemble_volume`` stacks the slice predictions back into a NIfTI label volume on the
input's grid, with the user's annotated slices copied into it unchanged.

The image is either a BraTS case folder (``<name>/<name>_{t1,t1ce,t2,flair}.nii.gz``) or one 4D NIfTI file
``(H, W, D, 4)`` with the modalities in ``BRATS_MODALITIES`` order (T1, T1ce, T2, FLAIR); the label is a NIfTI
``(H, W, D)`` with raw BraTS labels {0, 1, 2, 4}. Error messages name the config keys ``volume_image``,
``volume_label`` and ``labelled_slices``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from nibabel.filebasedimages import ImageFileError

from common.data.brats import (
    BRATS_MODALITIES,
    brats_case_files,
    brats_slice,
    read_brats_case,
    remap_brats_labels,
    restore_brats_labels,
    restore_slice_size,
    write_brats_slice,
    write_synthetic_brats_case,
)
from common.data.datalist import write_datalist
from common.io import atomic_output, split_extension

__all__ = ["assemble_volume", "predict_slices", "volume_inputs", "write_volume_slices"]

logger = logging.getLogger(__name__)

_SYNTHETIC_AFFINE = np.array(  # BraTS' orientation (x and y flipped), 1 mm voxels, the origin near the centre
    [[-1.0, 0.0, 0.0, 31.5], [0.0, -1.0, 0.0, 31.5], [0.0, 0.0, 1.0, -12.0], [0.0, 0.0, 0.0, 1.0]]
)
_SYNTHETIC_ANNOTATED = 3  # slices of the synthetic case whose label is kept


# --------------------------------------------------------------------------------------------------------------------
# inputs


def _image_files(image: str | os.PathLike) -> list[Path]:
    """The files of ``volume_image``: a BraTS case folder's four modalities, or the one 4D NIfTI file."""
    path = Path(image)
    if path.is_dir():
        try:
            files = brats_case_files(path, require_seg=False)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"volume_image: {err}") from err
        return [files[key] for key in BRATS_MODALITIES]
    if not path.is_file():
        raise FileNotFoundError(
            f"volume_image {path} does not exist: give a BraTS case folder or a 4D NIfTI file (H, W, D, 4)"
        )
    return [path]


def _label_file(label: str | os.PathLike) -> Path:
    """``volume_label`` as a path to an existing file."""
    path = Path(label)
    if not path.is_file():
        raise FileNotFoundError(f"volume_label {path} does not exist: give the partial label volume (NIfTI, H x W x D)")
    return path


def _load(path: Path, key: str) -> nib.Nifti1Image:
    """The NIfTI image at ``path``, with errors naming the config ``key``."""
    try:
        return nib.load(path)
    except (OSError, EOFError, ValueError, ImageFileError) as err:
        raise ValueError(f"{key} {path} cannot be read as NIfTI: {err}") from err


def _volume_name(image: Path) -> str:
    """The name of a volume: the case folder's name, or the NIfTI file's name without its extension."""
    return image.name if image.is_dir() else split_extension(image.name)[0]


def _read_image(image: Path) -> np.ndarray:
    """``volume_image`` as a ``(4, H, W, D)`` float32 stack in ``BRATS_MODALITIES`` order."""
    if image.is_dir():
        return read_brats_case(image, require_seg=False)[0]
    nifti = _load(image, "volume_image")
    if len(nifti.shape) != 4 or nifti.shape[-1] != len(BRATS_MODALITIES):
        raise ValueError(
            f"volume_image {image} has shape {nifti.shape}; a NIfTI file must be 4D (H, W, D, 4) with the modalities "
            f"{', '.join(BRATS_MODALITIES)} along the last axis, or give a BraTS case folder"
        )
    return np.moveaxis(np.asarray(nifti.dataobj, dtype=np.float32), -1, 0)


def _read_label(label: Path, shape: tuple[int, ...], image: Path) -> np.ndarray:
    """``volume_label``'s raw values, checked to have the image's ``(H, W, D)`` ``shape``."""
    data = np.asarray(_load(label, "volume_label").dataobj)
    if data.shape != shape:
        raise ValueError(
            f"volume_label {label} has shape {data.shape} but volume_image {image} has shape {shape}; the partial "
            "label must be a volume of the image's (H, W, D) shape"
        )
    return data


def _labelled_slices(label: np.ndarray, labelled_slices: Sequence[int] | None, label_path: Path) -> list[int]:
    """The annotated axial slices: ``labelled_slices`` checked against the depth, or those with foreground."""
    depth, found = label.shape[-1], [int(i) for i in np.flatnonzero(np.any(label != 0, axis=(0, 1)))]
    if labelled_slices is None:
        if not found:
            raise ValueError(
                f"volume_label {label_path} has no foreground in any axial slice, so no slice counts as annotated; "
                "list the annotated slices with labelled_slices (an all-background annotation must be listed)"
            )
        return found
    indices = [labelled_slices] if isinstance(labelled_slices, int) else list(labelled_slices)
    if not indices:
        raise ValueError("labelled_slices is empty: list the annotated axial slices, or null to find them")
    for index in indices:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < depth:
            raise ValueError(
                f"labelled_slices: {index!r} is not an axial slice of volume_label {label_path} "
                f"(depth {depth}: 0..{depth - 1})"
            )
    chosen = sorted({int(index) for index in indices})
    ignored = sorted(set(found) - set(chosen))
    if ignored:
        logger.warning("volume_label %s: foreground in slices %s, not in labelled_slices, ignored", label_path, ignored)
    return chosen


def _check_output_dir(output: Path) -> None:
    """Refuse a non-empty folder that holds no datalist.json: it is not an earlier output of this function."""
    if output.exists() and (not output.is_dir() or (any(output.iterdir()) and not (output / "datalist.json").exists())):
        raise FileExistsError(
            f"{output} exists and is not a folder of volume slices (no datalist.json); choose another"
        )


def write_volume_slices(
    image: str | os.PathLike,
    label: str | os.PathLike,
    output_dir: str | os.PathLike,
    labelled_slices: Sequence[int] | None = None,
    size: int = 128,
) -> dict[str, list[dict]]:
    """Write every axial slice of one volume, and the annotated slices' labels, as the bundle's 2D slices.

    Every slice goes through ``brats_slice`` (joint min-max, shorter side resized to ``size`` and centre-cropped,
    labels remapped to 0..3 with nearest neighbour) and is written by ``write_brats_slice`` as
    ``images/<name>_sNNN.nii.gz``, its label as ``labels/<name>_sNNN.nii.gz`` for annotated slices only. Files of the
    same name in ``output_dir`` are replaced.

    Args:
        image: a BraTS case folder (its ``seg`` is not needed and not used) or a 4D NIfTI file ``(H, W, D, 4)``.
        label: NIfTI ``(H, W, D)`` with raw BraTS labels {0, 1, 2, 4}; only the annotated slices are read.
        output_dir: folder of the slices and ``datalist.json``: new, empty, or an earlier output.
        labelled_slices: the annotated axial indices. None: the slices whose label has any foreground, so a slice
            annotated as all background must be listed explicitly (with the others).
        size: side of the square slices.

    Returns:
        ``{"training": [...], "validation": [], "test": [...]}`` with absolute paths: ``training`` the annotated
        slices (``image``, ``label``, ``slice_index``), ``test`` every slice in order (``image``, ``slice_index``).
        ``output_dir/datalist.json`` holds the same with paths relative to ``output_dir``.

    Raises:
        FileNotFoundError: a missing image or label file (named, with its config key).
        FileExistsError: ``output_dir`` holds other files.
        ValueError: unreadable files, an image that is not 4-channel, a label whose shape is not the image's, a
            labelled slice outside the volume, no annotated slice, or labels other than 0, 1, 2, 4.
    """
    image_path, output = Path(image), Path(output_dir)
    _image_files(image_path)  # missing files first, named with their config key
    label_path = _label_file(label)
    _check_output_dir(output)
    volumes = _read_image(image_path)
    raw = _read_label(label_path, volumes.shape[1:], image_path)
    annotated = _labelled_slices(raw, labelled_slices, label_path)
    name, annotated_set = _volume_name(image_path), set(annotated)
    datalist: dict[str, list[dict]] = {"training": [], "validation": [], "test": []}
    for index in range(volumes.shape[-1]):
        seg = raw if index in annotated_set else None
        slice_image, slice_label = brats_slice(volumes, seg, index, size, where=f"volume_label {label_path}")
        entry = write_brats_slice(output, f"{name}_s{index:03d}", slice_image, slice_label)
        if slice_label is not None:
            datalist["training"].append({**entry, "slice_index": index})
        datalist["test"].append({"image": entry["image"], "slice_index": index})
    write_datalist(datalist, output / "datalist.json", overwrite=True)
    logger.info("wrote the %d slices of %s (annotated: %s) to %s", volumes.shape[-1], name, annotated, output)
    return {section: [_absolute(entry, output) for entry in entries] for section, entries in datalist.items()}


def _absolute(entry: Mapping[str, Any], base: Path) -> dict[str, Any]:
    """A datalist entry with its ``image`` and ``label`` paths made absolute from ``base``."""
    return {key: str((base / value).resolve()) if key in ("image", "label") else value for key, value in entry.items()}


# --------------------------------------------------------------------------------------------------------------------
# the config's inputs


def _fingerprint(files: Sequence[Path], size: int) -> str:
    """A short hash of the input files' paths, sizes and modification times and the slice size."""
    stats = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return hashlib.sha256(json.dumps([stats, size]).encode()).hexdigest()[:12]


def _write_synthetic_case(folder: Path, shape: Sequence[int], seed: int) -> tuple[Path, Path, list[int]]:
    """A seeded BraTS-layout case (``brain_volume``, with its full ``seg``) and a label with only 3 slices kept.

    Written once, atomically, and reused; returns the case folder, the partial label file and its annotated slices.
    """
    name = f"synthetic_brats_{'x'.join(str(n) for n in shape)}_seed{seed}"
    label_path = folder / f"{name}_partial_seg.nii.gz"
    case = write_synthetic_brats_case(folder, name, shape, seed, affine=_SYNTHETIC_AFFINE)
    seg = np.asanyarray(nib.load(str(case / f"{name}_seg.nii.gz")).dataobj)
    tumour = np.flatnonzero(np.any(seg != 0, axis=(0, 1)))
    picks = np.linspace(0, len(tumour) - 1, _SYNTHETIC_ANNOTATED + 2).round().astype(int)[1:-1]
    annotated = [int(tumour[i]) for i in picks]
    if not label_path.is_file():
        partial = np.zeros_like(seg)
        partial[..., annotated] = seg[..., annotated]
        with atomic_output(label_path) as tmp:
            nib.save(nib.Nifti1Image(partial, _SYNTHETIC_AFFINE), str(tmp))
    return case, label_path, annotated


def volume_inputs(
    image: str | None,
    label: str | None,
    work_dir: str,
    size: int = 128,
    synthetic_shape: Sequence[int] = (64, 64, 24),
    seed: int = 0,
) -> dict[str, str]:
    """The config's volume to segment, and a work folder of its own for its slices and features.

    With ``image`` empty, a seeded synthetic BraTS-layout case of ``synthetic_shape`` (``brain_volume``) is written
    into ``work_dir/synthetic`` with a partial label that keeps only 3 of its tumour slices, and the log says so.

    Returns:
        ``image`` and ``label`` (absolute paths), ``name`` (of the volume) and ``work_dir``:
        ``<work_dir>/<name>-<hash>``, the hash of the input files' identity (path, size, modification time) and
        ``size``, so another volume, or an edited one, never reuses the slices or the features cached of an other.

    Raises:
        ValueError: only one of ``image`` and ``label`` given.
        FileNotFoundError: a missing input file (named, with its config key).
    """
    if not image:
        if label:
            raise ValueError(f"volume_label is set ({label}) but volume_image is empty: give the image volume too")
        case, label_path, annotated = _write_synthetic_case(Path(work_dir) / "synthetic", synthetic_shape, seed)
        logger.warning(
            "volume_image is empty: segmenting the synthetic BraTS-layout case %s (%s, seed %d) with only slices %s "
            "annotated (%s); set --volume_image and --volume_label for a real volume.",
            case,
            "x".join(str(n) for n in synthetic_shape),
            seed,
            annotated,
            label_path,
        )
        image, label = str(case), str(label_path)
    if not label:
        raise ValueError("volume_label is empty: give the NIfTI label volume (H, W, D) with the annotated slices")
    image_path, label_path = Path(image).resolve(), Path(label).resolve()
    files = [*_image_files(image_path), _label_file(label_path)]
    name = _volume_name(image_path)
    return {
        "image": str(image_path),
        "label": str(label_path),
        "name": name,
        "work_dir": str(Path(work_dir).resolve() / f"{name}-{_fingerprint(files, size)}"),
    }


# --------------------------------------------------------------------------------------------------------------------
# prediction and the output volume


@torch.no_grad()
def predict_slices(
    network: torch.nn.Module,
    inferer: Callable[[torch.Tensor, torch.nn.Module], torch.Tensor],
    items: Sequence[Mapping[str, Any]],
    transform: Callable[[dict], Mapping[str, Any]],
    postprocessing: Callable[[dict], Mapping[str, Any]],
    device: str | torch.device = "cpu",
    batch_size: int = 4,
) -> list[np.ndarray]:
    """The label map ``(H, W)`` uint8 of every item, in order: ``postprocessing({"pred": inferer(image, network)})``.

    ``batch_size`` images share one forward of the inferer (for the pixel classifier: one DDPM forward per
    timestep); ``postprocessing`` sees one image's prediction (``EnsembleVoted``: ``(K, C, H, W)`` -> ``(1, H, W)``).
    """
    network.eval()
    labels, step = [], max(1, int(batch_size))
    for start in range(0, len(items), step):
        samples = [transform(dict(item)) for item in items[start : start + step]]
        images = torch.stack([torch.as_tensor(s["image"]) for s in samples]).float().to(device)
        for pred in inferer(images, network).cpu():
            label = torch.as_tensor(postprocessing({"pred": pred})["pred"])
            labels.append(label.reshape(label.shape[-2:]).numpy().astype(np.uint8))
    return labels


def _reference_image(reference: Path) -> nib.Nifti1Image:
    """The NIfTI whose grid the output takes: a case folder's first modality (T1), or the 4D file itself."""
    return _load(_image_files(reference)[0], "volume_image")


def assemble_volume(
    slice_predictions: Sequence[np.ndarray],
    reference: str | os.PathLike,
    output_path: str | os.PathLike,
    label: str | os.PathLike | None = None,
    labelled_slices: Sequence[int] = (),
) -> Path:
    """Stack per-slice predictions into a BraTS label volume on the reference's grid and write it as NIfTI.

    Each ``(size, size)`` prediction (classes 0..3, in slice order) is put back on the slice's ``(H, W)`` grid with
    ``restore_slice_size`` (nearest neighbour; the border a non-square slice lost to the centre crop is background)
    and mapped back to BraTS labels (edema 1 -> 2, necrotic core 2 -> 1, enhancing 3 -> 4). The annotated slices
    ``labelled_slices`` of ``label`` are copied into the output unchanged: the prediction only fills the slices the
    user did not annotate. The volume is written as uint8 with the reference's affine and header, atomically (its
    folder created).

    Args:
        slice_predictions: one label map per axial slice of the reference, in slice order.
        reference: the input image (``volume_image``): a BraTS case folder (its T1 file gives the grid) or a 4D NIfTI.
        output_path: the NIfTI to write; it may not be one of the input files.
        label: the user's partial label volume, whose ``labelled_slices`` are copied.
        labelled_slices: the annotated axial slices.

    Returns:
        ``output_path``.

    Raises:
        ValueError: the number of predictions is not the reference's depth, values other than 0..3, a label volume of
            another shape, or ``output_path`` is an input file.
    """
    reference_path, output = Path(reference), Path(output_path)
    inputs = [*_image_files(reference_path), *([_label_file(label)] if label is not None else [])]
    if any(output.resolve() == path.resolve() for path in inputs):
        raise ValueError(f"volume_output {output} is an input file; choose a path in a new output folder")
    ref = _reference_image(reference_path)
    shape = tuple(ref.shape[:3])
    if len(slice_predictions) != shape[-1]:
        raise ValueError(
            f"{len(slice_predictions)} slice predictions for volume_image {reference_path} of {shape[-1]} slices"
        )
    volume = np.empty(shape, dtype=np.uint8)
    for index, prediction in enumerate(slice_predictions):
        classes = restore_slice_size(np.asarray(prediction, dtype=np.uint8), shape[:2])
        volume[..., index] = restore_brats_labels(classes, f"prediction of slice {index}")
    copied: list[int] = []
    if label is not None and len(labelled_slices):
        raw = _read_label(Path(label), shape, reference_path)
        copied = _labelled_slices(raw, labelled_slices, Path(label))
        remap_brats_labels(raw[..., copied], f"volume_label {label}")  # raw BraTS values only, as in the training
        volume[..., copied] = raw[..., copied]
    header = ref.header.copy()
    header.set_data_dtype(np.uint8)
    header.set_slope_inter(1.0, 0.0)
    header["cal_min"], header["cal_max"] = 0, 0
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(output) as tmp:
        nib.save(nib.Nifti1Image(volume, ref.affine, header), str(tmp))
    logger.info("wrote the label volume %s %s (annotated slices copied: %s)", output, shape, copied)
    return output
