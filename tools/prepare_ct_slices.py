r"""Prepare 3D CT volumes and their label maps as 2D axial slices for label-to-image synthesis (OASIS, seed 004).

For the bundle ``ct_label_to_image_synthesis``: every case's CT (in HU) and label map become axial slices
``images/<case>_sNNN.nii.gz`` and ``labels/<case>_sNNN.nii.gz`` (NNN: the slice index along the volume's
inferior-superior axis) with a MONAI datalist ``datalist.json`` (sections ``training``, ``validation``, ``test``;
entries ``{"image", "label", "case", "slice_index"}`` relative to the output folder), ``classes.json`` (the class
table) and ``preparation.json`` (the parameters and what each case gave). The input is only read; cases are read and
written one at a time, each file atomically, ``datalist.json`` last (a folder without it is an interrupted run).

Layouts (``--layout auto`` finds which one ``data_dir`` has; ``.nii.gz`` or ``.nii`` everywhere):

* ``case_folders``, TotalSegmentator-style: ``<case>/ct.nii.gz`` (``--image_name``) and either
  ``<case>/segmentations/<structure>.nii.gz``, one binary mask per structure (any value > 0 is the structure), merged
  into one label map, or one multi-label file ``<case>/<label_name>`` (``--label_name``). Every folder in
  ``data_dir`` is a case.
* ``paired``, nnU-Net / AutoPET / MSD-like: ``imagesTr/<case>_0000.nii.gz`` (or ``<case>.nii.gz``) with
  ``labelsTr/<case>.nii.gz``, or the same in folders ``images``/``labels`` (as in the TotalSegmentator example data).
  Of several channels (AutoPET: ``_0000`` CT, ``_0001`` PET) only ``--channel`` is read.

Classes. Per-structure masks: the structures of ``--classes`` (default: every mask name, sorted) become labels
1..N in that order; a voxel in several masks takes the class listed first (``--classes`` is the priority order),
and the log counts such voxels. Multi-label files keep their values, unless ``--classes`` lists label values (or
names, via ``--class_names``) to keep: they become 1..N in that order and every other value becomes background.
``--class_names`` reads names from a JSON file: ``{"1": "spleen", ...}``, an nnU-Net ``dataset.json`` (``"labels"``)
or per-case tables (``{"labels_present": {"<case>": {"1": "spleen"}}}``, merged over the cases prepared).
``--num_classes`` (background included) makes any label value >= it an error.

Each slice, in this order:

1. both volumes reoriented to the radiological view, anterior up and the patient's right on the image left (axis codes
   ``P, L, S``; the array of a slice is ``(rows, columns)``), as ``common.data.ct_slice`` draws it, whatever the
   files' storage order;
2. slices kept: with ``--keep_if_labelled`` (default) only those whose label has foreground
   (``common.transforms.slices.select_slice_indices``); slices whose windowed image is constant are dropped too;
3. HU window ``[window_min, window_max]`` (``--window`` names one of ``CT_WINDOWS``; the default -1000..1000 HU)
   mapped linearly onto [0, 1] with clipping (``common.transforms.CTWindow``); the seed had no window, only a
   per-slice min-max, so its intensities were not comparable between slices;
4. padded to a square (image 0 = the window's bottom, label 0) and resized to ``--size``: the image with linear
   interpolation, anti-aliased when shrinking; the label with nearest neighbour only, so it holds only the input's
   label values (the seed resized labels bilinearly). A slice whose structures all vanish in the resize is dropped
   (with ``--keep_if_labelled``);
5. optionally ``--remove_background``, the seed's removal of the table and equipment (:func:`remove_background`).

The seed's background rule and its quirks: it thresholds the per-slice min-max uint8 image at > 45 (so the threshold
moves with each slice's range), keeps the 4-connected components larger than 1000 pixels of its 256 x 256 crop
as the body, and multiplies by ``mask * 255``, which on uint8 wraps to 1 and so works as x 1 by accident; a slice with
no such component turns black. Here the threshold (``--background_threshold``, default 45/255) is on the windowed
image, so it is a fixed HU value (-647 HU with the default window), ``--background_min_area`` counts pixels at the
output ``--size`` (the seed's 1000 px at 256 x 256 is 1.5 % of the slice), the image is multiplied by the boolean
mask, and a slice with no component above the area is left unchanged (the log counts them).

Files: images are float32 NIfTI ``(H, W)`` in [0, 1] and labels uint8 (uint16 above 255) NIfTI ``(H, W)``, both
with an identity affine. NIfTI rather than 16-bit PNG: the values are stored exactly, MONAI's ``LoadImage`` (with
``ensure_channel_first``) gives ``(1, H, W)`` ready to use, as for the synthetic ``ct_slice`` data, where a 16-bit PNG
would need a rescaling step in every config and is read transposed by MONAI's PIL reader.

Splits: seeded (``--seed``) by case (patient), so no patient is in two sections (``split_items`` with the case as
group, fractions of slices). With very few cases (the single CT of the TotalSegmentator example), ``--slab_size N``
splits blocks of N neighbouring slices instead: neighbouring slices are alike, so this is a weaker separation and the
log says so.

Examples (from the repository root)::

    python -m tools.prepare_ct_slices --data_dir ~/data/Totalsegmentator_dataset_v201 --output_dir ~/data/ts_slices \
        --classes liver,spleen,kidney_left,kidney_right,aorta,stomach,pancreas --window soft_tissue
    python -m tools.prepare_ct_slices --data_dir ~/data/Dataset221_AutoPETII --output_dir ~/data/autopet_slices \
        --remove_background True --num_classes 2
    python -m tools.prepare_ct_slices --data_dir ../shared/data/totalseg_example_ct_mr \
        --output_dir ~/data/ts_example_slices --cases ct_example --slab_size 3 \
        --class_names ../shared/data/totalseg_example_ct_mr/labels.json
"""

from __future__ import annotations

import logging
import re
import zlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import fire
import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.orientations import aff2axcodes, apply_orientation, axcodes2ornt, io_orientation, ornt_transform
from skimage.measure import label as connected_components
from skimage.transform import resize

from common.data.datalist import split_items, validate_fractions
from common.io import atomic_output, atomic_write_json, read_json
from common.transforms.intensity import CT_WINDOWS, CTWindow
from common.transforms.slices import select_slice_indices
from tools.dataset_output import finish_datalist, output_folders, warn_empty_sections

__all__ = ["CT_WINDOWS", "main", "prepare_ct_slices", "read_class_names", "remove_background", "window_range"]

logger = logging.getLogger("tools.prepare_ct_slices")

_RADIOLOGICAL = ("P", "L", "S")  # array axes: rows to posterior, columns to the patient's left, slices to superior
_CHANNEL = re.compile(r"(?P<case>.+)_(?P<channel>\d{4})")
_PAIRED_FOLDERS = (("imagesTr", "labelsTr"), ("images", "labels"))
_LAYOUTS = ("auto", "case_folders", "paired")
_SHOWN = 10  # how many names an error message lists


class _Case(NamedTuple):
    """One case's files: the CT, and a multi-label file or the folder of per-structure masks."""

    name: str
    image: Path
    label: Path | None
    masks_dir: Path | None


class _Classes(NamedTuple):
    """The output class table: names and sources by output value, and how to map a multi-label file's values."""

    names: dict[int, str]
    sources: dict[int, str | int]
    lookup: np.ndarray | None  # source value -> output value (values beyond it: background); None keeps the values


# --------------------------------------------------------------------------------------------------------------------
# arguments


def window_range(window: str = "", window_min: float = -1000.0, window_max: float = 1000.0) -> tuple[float, float]:
    """The HU window (lowest, highest): the named ``window`` of ``CT_WINDOWS``, else ``window_min``..``window_max``."""
    if window:
        if window not in CT_WINDOWS:
            raise ValueError(f"--window must be one of {', '.join(CT_WINDOWS)}, got {window!r}")
        return CT_WINDOWS[window]
    low, high = float(window_min), float(window_max)
    if not high > low:
        raise ValueError(f"--window_max must be above --window_min, got {window_min} and {window_max}")
    return low, high


def _items(name: str, value: Any) -> list[str]:
    """A comma-separated text, a number or a list (as fire passes them) as a list of non-empty strings."""
    if value is None or value == "":
        return []
    items = value.split(",") if isinstance(value, str) else [value] if isinstance(value, (int, float)) else value
    items = [str(item).strip() for item in items]
    if not all(items) or len(set(items)) != len(items):
        raise ValueError(f"{name} must be distinct non-empty names, comma-separated, got {value!r}")
    return items


def _positive(name: str, value: Any, minimum: int) -> int:
    """Raise ``ValueError`` unless ``value`` is an int >= ``minimum``; return it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _listing(items: Sequence[object]) -> str:
    """The first ``_SHOWN`` items joined by ", ", with how many more."""
    shown = ", ".join(str(item) for item in items[:_SHOWN])
    return shown + (f" (and {len(items) - _SHOWN} more)" if len(items) > _SHOWN else "")


# --------------------------------------------------------------------------------------------------------------------
# finding the cases


def _nifti_stem(path: Path) -> str | None:
    """The name of a NIfTI file without ``.nii.gz``/``.nii``; None for other files and hidden ones."""
    if path.name.startswith(".") or not path.is_file():
        return None
    for extension in (".nii.gz", ".nii"):
        if path.name.lower().endswith(extension) and len(path.name) > len(extension):
            return path.name[: -len(extension)]
    return None


def _niftis(folder: Path) -> dict[str, Path]:
    """The NIfTI files in ``folder`` by stem; a stem with both ``.nii.gz`` and ``.nii`` files is an error."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        stem = _nifti_stem(path)
        if stem is None:
            continue
        if stem in found:
            raise ValueError(f"{found[stem]} and {path} are the same image twice; keep one")
        found[stem] = path
    return found


def _layout(data: Path, layout: str, image_name: str) -> tuple[str, tuple[Path, Path] | None]:
    """The layout of ``data`` and, for ``paired``, its images and labels folders."""
    if layout not in _LAYOUTS:
        raise ValueError(f"--layout must be one of {', '.join(_LAYOUTS)}, got {layout!r}")
    pairs = [(data / i, data / lab) for i, lab in _PAIRED_FOLDERS if (data / i).is_dir() and (data / lab).is_dir()]
    if layout == "paired" or (layout == "auto" and pairs):
        if not pairs:
            raise FileNotFoundError(f"{data} holds no imagesTr/labelsTr or images/labels folders (--layout paired)")
        return "paired", pairs[0]
    if layout == "auto" and not any((case / image_name).is_file() for case in data.iterdir() if case.is_dir()):
        raise FileNotFoundError(
            f"{data} has neither case folders holding {image_name} (TotalSegmentator layout) nor imagesTr/labelsTr "
            "or images/labels folders (nnU-Net layout); see python -m tools.prepare_ct_slices --help"
        )
    return "case_folders", None


def _paired_cases(images: Path, labels: Path, channel: str) -> list[_Case]:
    """The cases of an nnU-Net-style pair of folders: ``<case>_<channel>`` (or ``<case>``) images, ``<case>`` labels.

    An image is a case's when its name is a label's name, or that name plus a 4-digit channel suffix; of the channel
    files only ``channel`` is read.
    """
    label_files = _niftis(labels)
    by_case: dict[str, Path] = {}
    no_label = []
    for stem, path in _niftis(images).items():
        match = _CHANNEL.fullmatch(stem)
        if stem in label_files:
            case = stem
        elif match and match["case"] in label_files:
            if match["channel"] != channel:
                continue
            case = match["case"]
        else:
            no_label.append(match["case"] if match else stem)
            continue
        if case in by_case:
            raise ValueError(f"case {case}: two CT images, {by_case[case]} and {path}; keep one")
        by_case[case] = path
    no_image = sorted(label_files.keys() - by_case.keys())
    problems = []
    if no_label:
        problems.append(f"case(s) {_listing(sorted(set(no_label)))} have no label file in {labels} (<case>.nii.gz)")
    if no_image:
        problems.append(f"case(s) {_listing(no_image)} have no CT image in {images} (<case>_{channel}.nii.gz)")
    if problems:
        raise FileNotFoundError("; ".join(problems))
    return [_Case(case, by_case[case], label_files[case], None) for case in sorted(by_case)]


def _folder_cases(data: Path, image_name: str, label_name: str) -> list[_Case]:
    """The case folders of ``data`` (every visible folder), each checked to hold its CT and its label(s)."""
    cases, problems = [], []
    for folder in sorted(p for p in data.iterdir() if p.is_dir() and not p.name.startswith(".")):
        image, label = folder / image_name, (folder / label_name if label_name else None)
        masks = None if label_name else folder / "segmentations"
        if not image.is_file():
            problems.append(f"case {folder.name} has no CT {image}")
        elif label is not None and not label.is_file():
            problems.append(f"case {folder.name} has no label file {label}")
        elif masks is not None and not (masks.is_dir() and _niftis(masks)):
            problems.append(f"case {folder.name} has no label: no masks in {masks} (or give --label_name)")
        else:
            cases.append(_Case(folder.name, image, label, masks))
    if problems:
        raise FileNotFoundError(f"{len(problems)} case(s) lack files: " + "; ".join(problems[:_SHOWN]))
    return cases


def _choose(cases: list[_Case], names: list[str]) -> list[_Case]:
    """The cases named in ``names`` (all when empty); unknown names are an error."""
    if not names:
        return cases
    known = {case.name: case for case in cases}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"--cases {_listing(unknown)} not found; the cases are {_listing(sorted(known))}")
    return [known[name] for name in sorted(names)]


# --------------------------------------------------------------------------------------------------------------------
# classes


def _value_names(table: Any, path: Path) -> dict[int, str]:
    """A ``{value: name}`` or ``{name: value}`` JSON object as ``{int value: name}``."""

    def integer(text: Any) -> int | None:
        return int(text) if re.fullmatch(r"\d+", str(text).strip()) else None

    if not isinstance(table, dict) or not table:
        raise ValueError(f"class names file {path}: expected a JSON object of label values and names")
    if all(integer(key) is not None for key in table):
        return {integer(key): str(name) for key, name in table.items()}
    if all(integer(value) is not None for value in table.values()):
        return {integer(value): str(name) for name, value in table.items()}
    raise ValueError(f"class names file {path}: neither its keys nor its values are all label values: {table}")


def read_class_names(path: str | Path, cases: Sequence[str] = ()) -> dict[int, str]:
    """Label value -> name from a JSON file, background (0) left out.

    Accepted: ``{"1": "spleen", ...}`` (or ``{"spleen": 1, ...}``), an nnU-Net ``dataset.json`` (its ``"labels"``),
    or per-case tables ``{"labels_present": {"<case>": {"1": "spleen"}}}`` merged over ``cases`` (all if none of them
    is listed).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a table of values and names, or two names for one value (named).
    """
    path = Path(path)
    data = read_json(path, "class names")
    if isinstance(data, dict) and isinstance(data.get("labels"), dict):
        data = data["labels"]
    tables = [data]
    if isinstance(data, dict) and isinstance(data.get("labels_present"), dict):
        present = data["labels_present"]
        tables = [present[case] for case in cases if case in present] or list(present.values())
    names: dict[int, str] = {}
    for table in tables:
        for value, name in _value_names(table, path).items():
            if names.get(value, name) != name:
                raise ValueError(f"class names file {path}: value {value} is both {names[value]!r} and {name!r}")
            names[value] = name
    names.pop(0, None)
    return names


def _mask_classes(cases: list[_Case], classes: list[str]) -> _Classes:
    """Per-structure masks: the structures of ``classes`` (default every mask name, sorted) as labels 1..N; every case
    must have every structure's mask."""
    found = {case.name: _niftis(case.masks_dir) for case in cases}
    structures = classes or sorted({name for masks in found.values() for name in masks})
    missing = [f"{case}: {name}" for case, masks in found.items() for name in structures if name not in masks]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} mask file(s) missing from the segmentations folders: {_listing(missing)}"
        )
    names = {value: name for value, name in enumerate(structures, start=1)}
    return _Classes(names, dict(names), None)


def _label_classes(classes: list[str], table: dict[int, str]) -> _Classes:
    """Multi-label files: the values (or names, via ``table``) of ``classes`` as 1..N, or every value kept as it is."""
    if not classes:
        return _Classes(dict(table), {value: value for value in table}, None)
    by_name = {name: value for value, name in table.items()}
    sources = []
    for item in classes:
        if item.isdigit() and int(item) > 0:
            sources.append(int(item))
        elif item in by_name:
            sources.append(by_name[item])
        else:
            raise ValueError(
                f"--classes: {item!r} is neither a label value > 0 nor a name in --class_names"
                + (f" (names: {_listing(sorted(by_name))})" if by_name else " (none given)")
            )
    lookup = np.zeros(max(sources) + 1, dtype=np.uint16)
    lookup[sources] = np.arange(1, len(sources) + 1)
    names = {value: table.get(source, f"label_{source}") for value, source in enumerate(sources, start=1)}
    return _Classes(names, dict(enumerate(sources, start=1)), lookup)


# --------------------------------------------------------------------------------------------------------------------
# reading a case


def _load(path: Path) -> nib.Nifti1Image:
    """The NIfTI image at ``path`` (header only), with errors naming the file."""
    try:
        return nib.load(path)
    except (OSError, EOFError, ValueError, ImageFileError) as err:
        raise ValueError(f"{path} cannot be read as NIfTI: {err}") from err


def _data(image: nib.Nifti1Image, path: Path, dtype: Any = None) -> np.ndarray:
    """The voxels of ``image``, with read errors naming the file."""
    try:
        return np.asarray(image.dataobj, dtype=dtype)
    except (OSError, EOFError, ValueError, zlib.error) as err:
        raise ValueError(f"{path}: the data cannot be read ({type(err).__name__}: {err})") from err


def _label_files(case: _Case, classes: _Classes) -> list[Path]:
    """The label file, or the structures' mask files in class order."""
    if case.label is not None:
        return [case.label]
    masks = _niftis(case.masks_dir)
    return [masks[name] for name in classes.sources.values()]


def _check_case(case: _Case, classes: _Classes) -> None:
    """Check (headers only) that the CT is 3D and every label file of the case has its shape."""
    shape = tuple(_load(case.image).shape)
    if len(shape) != 3:
        raise ValueError(f"case {case.name}: the CT {case.image} has shape {shape}; a 3D volume (H, W, D) is needed")
    for path in _label_files(case, classes):
        label_shape = tuple(_load(path).shape)
        if label_shape != shape:
            raise ValueError(
                f"case {case.name}: label {path} has shape {label_shape} but the CT {case.image} has shape {shape}"
            )


def _integers(data: np.ndarray, path: Path) -> np.ndarray:
    """``data`` as non-negative integers; fractional, negative, NaN or infinite values are an error naming ``path``."""
    if not np.issubdtype(data.dtype, np.integer):
        bad = ~np.isfinite(data) | (data != np.round(data))
        if bad.any():
            shown = ", ".join(f"{v:g}" for v in np.unique(data[bad])[:5])
            raise ValueError(
                f"{path} is not a label map: it holds non-integer values ({shown}); labels must be integers"
            )
    if data.min(initial=0) < 0 or data.max(initial=0) > np.iinfo(np.uint16).max:
        raise ValueError(f"{path} is not a label map: it holds values outside 0..65535 ({data.min()}..{data.max()})")
    return data.astype(np.int64, copy=False)


def _read_labels(case: _Case, classes: _Classes) -> tuple[np.ndarray, int]:
    """The case's label map on the CT's grid (values of ``classes``) and the count of voxels in several masks."""
    files = _label_files(case, classes)
    if case.label is not None:
        values = _integers(_data(_load(case.label), case.label), case.label)
        if classes.lookup is not None:
            inside = values < len(classes.lookup)
            values = np.where(inside, classes.lookup[np.where(inside, values, 0)], 0)
        return values.astype(np.uint16), 0
    merged, overlaps = None, 0
    for value, path in enumerate(files, start=1):
        mask = _integers(_data(_load(path), path), path) > 0
        merged = np.zeros(mask.shape, dtype=np.uint16) if merged is None else merged
        overlaps += int(np.count_nonzero(mask & (merged > 0)))
        merged[mask & (merged == 0)] = value  # the class listed first keeps a voxel claimed twice
    return merged, overlaps


def _radiological(image: nib.Nifti1Image) -> np.ndarray:
    """The orientation transform from the image's storage order to the radiological ``P, L, S`` axes."""
    return ornt_transform(io_orientation(image.affine), axcodes2ornt(_RADIOLOGICAL))


# --------------------------------------------------------------------------------------------------------------------
# slices


def remove_background(
    image: np.ndarray, threshold: float = 45 / 255, min_area: int = 1000
) -> tuple[np.ndarray, np.ndarray | None]:
    """The seed's removal of the table and equipment from a windowed slice in [0, 1].

    Pixels above ``threshold`` are split into 4-connected components; those of more than ``min_area`` pixels are the
    body, and the image is multiplied by that mask (see the module docstring for the seed's quirks).

    Returns:
        The masked image and the body mask; the image unchanged and None when no component is large enough (the
        seed would black the slice out).
    """
    components = connected_components(np.asarray(image) > threshold, connectivity=1)
    large = np.bincount(components.ravel()) > min_area
    large[0] = False
    body = large[components]
    if not body.any():
        return image, None
    return image * body, body


def _square(image: np.ndarray, label: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Both slices padded to a centred square (with 0) and resized to ``size``: image linear (anti-aliased when
    shrinking), label nearest neighbour (only its own values)."""
    side = max(image.shape)
    pad = [((side - n) // 2, side - n - (side - n) // 2) for n in image.shape]
    image, label = np.pad(image, pad), np.pad(label, pad)
    if side == size:
        return image, label
    image = resize(image, (size, size), order=1, anti_aliasing=side > size, preserve_range=True)
    label = resize(label, (size, size), order=0, anti_aliasing=False, preserve_range=True).astype(label.dtype)
    return np.clip(image, 0.0, 1.0).astype(np.float32), label


def _save(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as NIfTI with an identity affine, atomically (its folder created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        nib.save(nib.Nifti1Image(array, np.eye(4)), str(tmp))


class _Settings(NamedTuple):
    """What every slice needs: window, size, selection and background removal."""

    window: CTWindow
    size: int
    keep_if_labelled: bool
    remove_background: bool
    background_threshold: float
    background_min_area: int
    num_classes: int


def _write_case(case: _Case, classes: _Classes, settings: _Settings, output: Path) -> tuple[list[dict], dict]:
    """Read one case, write its slices; return their datalist entries and the case's record for preparation.json."""
    ct = _load(case.image)
    orientation = _radiological(ct)
    if not np.allclose(ct.affine, _load(_label_files(case, classes)[0]).affine, atol=1e-3):
        logger.warning(
            "case %s: the label's affine differs from the CT's; the label is read on the CT's grid", case.name
        )
    volume = settings.window(apply_orientation(_data(ct, case.image, np.float32), orientation))
    labels, overlaps = _read_labels(case, classes)
    if settings.num_classes and labels.max() >= settings.num_classes:
        values = np.unique(labels[labels >= settings.num_classes])
        where = case.label or case.masks_dir
        raise ValueError(
            f"{where} has label values {_listing(values.tolist())}: more classes than --num_classes "
            f"{settings.num_classes} (values 0..{settings.num_classes - 1})"
        )
    labels = apply_orientation(labels, orientation)
    label_dtype = np.uint8 if labels.max() < 256 else np.uint16
    if overlaps:
        logger.info("case %s: %d voxels lie in several masks; each went to the class listed first", case.name, overlaps)
    indices = select_slice_indices(labels, axis=2, keep_if_labelled=settings.keep_if_labelled)
    entries, counts, per_label = [], Counter(), Counter()
    for index in indices:
        image = volume[..., index]
        if image.max() <= image.min():
            counts["constant"] += 1
            continue
        image, label = _square(image, labels[..., index], settings.size)
        if settings.keep_if_labelled and not label.any():
            counts["empty_after_resize"] += 1
            continue
        if settings.remove_background:
            image, body = remove_background(image, settings.background_threshold, settings.background_min_area)
            counts["background_not_removed"] += body is None
        name = f"{case.name}_s{index:03d}"
        entry = {"image": f"images/{name}.nii.gz", "label": f"labels/{name}.nii.gz"}
        _save(output / entry["image"], image.astype(np.float32))
        _save(output / entry["label"], label.astype(label_dtype))
        entries.append({**entry, "case": case.name, "slice_index": int(index)})
        per_label.update(int(value) for value in np.unique(label) if value)
    record = {
        "image": str(case.image),
        "shape": list(ct.shape),
        "orientation": "".join(aff2axcodes(ct.affine)),
        "slices": len(entries),
        "dropped_constant": counts["constant"],
        "dropped_empty_after_resize": counts["empty_after_resize"],
        "background_not_removed": counts["background_not_removed"],
        "overlapping_voxels": overlaps,
        "slices_per_label": {str(value): n for value, n in sorted(per_label.items())},
    }
    logger.info("case %s: %d slices written of %d", case.name, len(entries), labels.shape[-1])
    return entries, record


def _class_table(classes: _Classes, records: dict[str, dict], masks: bool) -> dict:
    """``classes.json``: the number of classes (background included), names, sources and slices per label."""
    per_label: Counter = Counter()
    for record in records.values():
        per_label.update({int(k): n for k, n in record["slices_per_label"].items()})
    values = sorted(set(classes.names) | set(per_label))
    table = {
        "num_classes": max(values, default=0) + 1,
        "labels": {"0": "background", **{str(v): classes.names.get(v, f"label_{v}") for v in values}},
        "sources": {str(v): classes.sources.get(v, v) for v in values},
        "slices_per_label": {str(v): per_label.get(v, 0) for v in values},
    }
    if masks:
        table["overlap_rule"] = "a voxel in several masks takes the class listed first (lowest label value)"
    return table


# --------------------------------------------------------------------------------------------------------------------
# command


def prepare_ct_slices(
    data_dir: str,
    output_dir: str,
    layout: str = "auto",
    image_name: str = "ct.nii.gz",
    label_name: str = "",
    channel: str = "0000",
    cases: Any = None,
    classes: Any = None,
    class_names: str = "",
    num_classes: int = 0,
    window: str = "",
    window_min: float = -1000.0,
    window_max: float = 1000.0,
    size: int = 256,
    keep_if_labelled: bool = True,
    remove_background: bool = False,
    background_threshold: float = 45 / 255,
    background_min_area: int = 1000,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    slab_size: int = 0,
    overwrite: bool = False,
) -> dict[str, list[dict]]:
    """Write the axial slices, ``datalist.json``, ``classes.json`` and ``preparation.json`` (see the module docstring).

    Args:
        data_dir: the data set's folder (its layout is found, or set with ``layout``).
        output_dir: new (or empty) output folder.
        layout: ``"auto"``, ``"case_folders"`` (TotalSegmentator) or ``"paired"`` (nnU-Net ``imagesTr``/``labelsTr``).
        image_name: the CT's file name in each case folder.
        label_name: a multi-label file's name in each case folder; empty: the masks in ``<case>/segmentations``.
        channel: the CT's channel suffix in the paired layout (AutoPET: ``0000`` CT, ``0001`` PET).
        cases: only these cases (comma-separated or a list); default all.
        classes: the structures (mask names) or label values / names to keep, in output order 1..N.
        class_names: JSON file of label names for multi-label files.
        num_classes: classes including background; a label value >= it is an error. 0: no limit.
        window: a named window of ``CT_WINDOWS``; overrides ``window_min``/``window_max``.
        window_min: HU mapped to 0.
        window_max: HU mapped to 1.
        size: side of the written square slices.
        keep_if_labelled: keep only slices with foreground in the label.
        remove_background: remove the table and equipment as the seed did.
        background_threshold: threshold of the windowed image for the body mask.
        background_min_area: smallest body component kept, in pixels at ``size``.
        val_fraction: fraction of the slices (whole cases) for validation.
        test_fraction: fraction of the slices (whole cases) for test.
        seed: seed of the split.
        slab_size: 0 splits by case; N > 0 splits blocks of N neighbouring slices (for one or two volumes).
        overwrite: write into a non-empty output folder, replacing files of the same name.

    Returns:
        The datalist as written (paths relative to ``output_dir``).

    Raises:
        FileNotFoundError: ``data_dir`` is missing, holds no known layout, or a case lacks its CT or label (named).
        FileExistsError: the output folder is not empty and ``overwrite`` is False.
        ValueError: a bad argument, a label of another shape than its CT (both shapes and the case named), a label file
            that is not integer-valued or has a value >= ``num_classes`` (named), or an unreadable file (named).
    """
    data, output = output_folders(data_dir, output_dir, overwrite)
    low, high = window_range(window, window_min, window_max)
    size, seed = _positive("--size", size, 1), _positive("--seed", seed, 0)
    num_classes, slab_size = _positive("--num_classes", num_classes, 0), _positive("--slab_size", slab_size, 0)
    min_area = _positive("--background_min_area", background_min_area, 0)
    validate_fractions(val_fraction, test_fraction)
    found_layout, folders = _layout(data, layout, image_name)
    if found_layout == "paired":
        all_cases = _paired_cases(*folders, str(channel).zfill(4))
    else:
        all_cases = _folder_cases(data, image_name, label_name)
    chosen = _choose(all_cases, _items("--cases", cases))
    names = [case.name for case in chosen]
    wanted = _items("--classes", classes)
    masks = chosen[0].masks_dir is not None
    if masks:
        table = _mask_classes(chosen, wanted)
    else:
        table = _label_classes(wanted, read_class_names(class_names, names) if class_names else {})
    if num_classes and len(table.names) >= num_classes and (masks or wanted):
        raise ValueError(
            f"{len(table.names)} classes ({_listing(list(table.names.values()))}) plus background are more than "
            f"--num_classes {num_classes}"
        )
    logger.info(
        "%s layout: %d cases; HU window %g..%g; checking every case's files", found_layout, len(chosen), low, high
    )
    for case in chosen:
        _check_case(case, table)
    settings = _Settings(
        CTWindow(center=(low + high) / 2, width=high - low),
        size,
        bool(keep_if_labelled),
        bool(remove_background),
        float(background_threshold),
        min_area,
        num_classes,
    )
    entries, records = [], {}
    for case in chosen:
        case_entries, records[case.name] = _write_case(case, table, settings, output)
        entries += case_entries
    group_key = "case"
    if slab_size:
        logger.warning("splitting blocks of %d neighbouring slices, not cases: neighbours are alike", slab_size)
        entries = [{**e, "group": f"{e['case']}:{e['slice_index'] // slab_size}"} for e in entries]
        group_key = "group"
    datalist = split_items(entries, val_fraction, test_fraction, seed=seed, group_key=group_key)
    warn_empty_sections(datalist, {"validation": val_fraction, "test": test_fraction})
    atomic_write_json(output / "classes.json", _class_table(table, records, masks))
    parameters = {
        "layout": found_layout,
        "window_hu": [low, high],
        "size": size,
        "keep_if_labelled": bool(keep_if_labelled),
        "remove_background": bool(remove_background),
        "background_threshold": float(background_threshold),
        "background_min_area": min_area,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "seed": seed,
        "slab_size": slab_size,
        "orientation": "".join(_RADIOLOGICAL),
    }
    atomic_write_json(output / "preparation.json", {"data_dir": str(data), "parameters": parameters, "cases": records})
    return finish_datalist(output, datalist, overwrite)


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point: logs at INFO and turns bad input into a one-line error and exit status 1."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    command = list(argv) if argv is not None else None
    try:
        fire.Fire(prepare_ct_slices, command=command, name="prepare_ct_slices", serialize=lambda _: None)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        logger.error("%s", err)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
