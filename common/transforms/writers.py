"""Write predicted masks, synthesised images and quick-look pictures next to nothing the user gave, each file whole."""

from __future__ import annotations

import colorsys
import math
import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.image_writer import NibabelWriter, PILWriter
from monai.transforms import MapTransform
from PIL import Image
from skimage.segmentation import find_boundaries

from common.io import PNG_EXTENSIONS, atomic_output, split_extension
from common.transforms.masks import source_name

__all__ = ["SaveContactSheetd", "SaveMaskd", "SaveOverlayd", "SaveSamplesd", "output_path"]


def output_path(output_dir: str, source: str, postfix: str, ext: str | None = None) -> str:
    """``<output_dir>/<stem>_<postfix><ext>``, the extension of ``source`` unless ``ext`` is given."""
    stem, source_ext = split_extension(os.path.basename(source))
    return os.path.join(output_dir, f"{stem}_{postfix}{ext or source_ext}")


def _as_numpy(img: Any) -> np.ndarray:
    return img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)


class SaveMaskd(MapTransform):
    """Save masks as 8-bit PNG (0/255) for 2D image inputs and as NIfTI (integer labels) for everything else.

    The format follows the file the item was loaded from (``source_key``), so a PNG in gives a PNG out and a NIfTI in
    gives a NIfTI with the input's affine. Files are written to a temporary name and renamed, so an interrupted run
    never leaves a truncated mask that looks complete.

    Args:
        keys: keys of the (channel-first, single-channel) masks to save.
        output_dir: folder to write into; created if missing.
        postfix: appended to the source file's stem.
        source_key: key whose loaded file names the output and decides its format.
        continuous: the maps hold values in [0, 1] (a probability or uncertainty map), not labels: PNG keeps 256
            grey levels and NIfTI is written as float32.
        png_scale: PNG values are the mask's times this: 255 writes binary masks as 0/255; None writes label maps
            of several classes as their labels 0 .. C.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str,
        postfix: str = "seg",
        source_key: str = "image",
        continuous: bool = False,
        png_scale: int | None = 255,
    ) -> None:
        super().__init__(keys)
        self.png_scale = png_scale
        self.output_dir = output_dir
        self.postfix = postfix
        self.source_key = source_key
        self.nifti_dtype = np.float32 if continuous else np.uint8

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        source_img = d.get(self.source_key)
        source = source_name(source_img, default=f"{self.source_key}.nii.gz")
        os.makedirs(self.output_dir, exist_ok=True)
        for key in self.key_iterator(d):
            mask = d[key]
            png = split_extension(source)[1] in PNG_EXTENSIONS and mask.ndim == 3
            path = output_path(self.output_dir, source, self.postfix, ".png" if png else ".nii.gz")
            writer: PILWriter | NibabelWriter = (
                PILWriter(output_dtype=np.uint8, scale=self.png_scale)
                if png
                else NibabelWriter(output_dtype=self.nifti_dtype)
            )
            writer.set_data_array(mask, channel_dim=0)
            if not png:
                # a mask without metadata of its own (a plain array) takes the source's affine, as documented; set
                # directly: set_metadata(meta, resample=False) fails on some 2D data in MONAI 1.6 (MONAI#9068)
                meta_of = mask if isinstance(mask, MetaTensor) else source_img
                writer.affine = meta_of.affine if isinstance(meta_of, MetaTensor) else None
            with atomic_output(path) as tmp:
                writer.write(tmp)
            d[f"{key}_path"] = path
        return d


def _rescale(image: np.ndarray, input_range: Sequence[float], output_range: Sequence[float]) -> np.ndarray:
    """``image`` clipped to ``input_range`` (low, high) and mapped linearly onto ``output_range``, as float32."""
    (low, high), (out_low, out_high) = input_range, output_range
    unit = (np.clip(image.astype(np.float32), low, high) - low) / (high - low)
    return (out_low + unit * (out_high - out_low)).astype(np.float32)


def _to_uint8(image: np.ndarray, value_range: Sequence[float]) -> np.ndarray:
    """``image`` mapped linearly from ``value_range`` (low, high) onto 0 .. 255, clipped and rounded."""
    return np.rint(_rescale(image, value_range, (0.0, 255.0))).astype(np.uint8)


def _to_rgb(image: np.ndarray, value_range: Sequence[float] | None = None) -> np.ndarray:
    """Channel-first 2D image -> (H, W, 3) uint8: its first three channels, or its first in grey.

    Values are mapped from ``value_range``, the same for every image so that images stay comparable, or, when it
    is None, contrast-stretched per image (0.5 and 99.5 percentiles).
    """
    img = image[:3] if image.shape[0] >= 3 else np.repeat(image[:1], 3, axis=0)
    if value_range is None:
        low, high = np.percentile(img.astype(np.float32), (0.5, 99.5))
        if not high > low:
            return np.zeros((*img.shape[1:], 3), dtype=np.uint8)
        value_range = (low, high)
    return np.moveaxis(_to_uint8(img, value_range), 0, -1)


def _save_picture(rgb: np.ndarray, output_dir: str, source: str, postfix: str) -> str:
    """Write an (H, W, 3) uint8 picture whole as ``<output_dir>/<source stem>_<postfix>.png``; return its path."""
    os.makedirs(output_dir, exist_ok=True)
    path = output_path(output_dir, source, postfix, ".png")
    with atomic_output(path) as tmp:
        Image.fromarray(rgb).save(tmp)
    return path


class SaveOverlayd(MapTransform):
    """Save a PNG that shows the predicted contour (red) and, if present, the reference contour (green) on the image.

    A quick look for the user, not a data product: 3D items show the slice with the most predicted foreground. Items
    loaded from ordinary pictures (PNG, JPEG, ...) are shown the way the picture was: MONAI loads those with rows and
    columns swapped, and the overlay swaps them back, as MONAI's own PNG writer does.

    Args:
        image_key: key of the background image (channel-first).
        pred_key: key of the predicted mask, same spatial shape as the image.
        output_dir: folder to write into; created if missing.
        label_key: key of a reference mask drawn in green, skipped if absent from the item.
        postfix: appended to the source file's stem.
        source_key: key whose loaded file names the output.
        display_channel: show only this channel of the image, in grey (e.g. FLAIR of a 4-contrast MR slice);
            None shows the first three channels as RGB (or the only one, in grey).
    """

    def __init__(
        self,
        image_key: str,
        pred_key: str,
        output_dir: str,
        label_key: str | None = None,
        postfix: str = "overlay",
        source_key: str = "image",
        display_channel: int | None = None,
    ) -> None:
        super().__init__([image_key, pred_key])
        self.image_key, self.pred_key, self.label_key = image_key, pred_key, label_key
        self.output_dir, self.postfix, self.source_key = output_dir, postfix, source_key
        self.display_channel = display_channel

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image, pred = _as_numpy(d[self.image_key]), _as_numpy(d[self.pred_key])
        if self.display_channel is not None:
            image = image[self.display_channel : self.display_channel + 1]
        if image.shape[1:] != pred.shape[1:]:
            raise ValueError(
                f"overlay: '{self.image_key}' {list(image.shape[1:])} and '{self.pred_key}' {list(pred.shape[1:])} "
                "must have the same spatial shape."
            )
        label = _as_numpy(d[self.label_key]) if self.label_key and self.label_key in d else None
        source = source_name(d.get(self.source_key), default=self.source_key)
        picture = image.ndim == 3 and split_extension(os.path.basename(source))[1] in PNG_EXTENSIONS
        if image.ndim == 4:
            z = int(np.argmax((pred[0] > 0).sum(axis=(0, 1))))
            image, pred = image[..., z], pred[..., z]
            label = label[..., z] if label is not None else None
        rgb = _to_rgb(image)
        rgb[find_boundaries(pred[0] > 0.5, mode="inner")] = (255, 0, 0)
        if label is not None:
            rgb[find_boundaries(label[0] > 0.5, mode="inner")] = (0, 255, 0)
        if picture:
            rgb = rgb.transpose(1, 0, 2)
        d[f"{self.pred_key}_overlay_path"] = _save_picture(rgb, self.output_dir, source, self.postfix)
        return d


# --------------------------------------------------------------------------------------------------------------------
# synthesised images: K samples per item, channel-first (K * C, H, W)

_GOLDEN = (math.sqrt(5) - 1) / 2  # hue step: consecutive classes get far-apart hues, for any number of classes


def _value_range(value_range: Sequence[float], name: str) -> tuple[float, float]:
    """``value_range`` as (low, high) floats with low < high; the error names the argument ``name``."""
    if len(value_range) != 2 or not float(value_range[0]) < float(value_range[1]):
        raise ValueError(f"{name} must be (low, high) with low < high, e.g. (-1, 1), got {value_range!r}")
    return float(value_range[0]), float(value_range[1])


def _positive(value: int, name: str) -> int:
    """``value`` if it is an integer >= 1; the error names the argument ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _split_samples(images: np.ndarray, num_samples: int, key: str) -> list[np.ndarray]:
    """Split the channel-first ``(K * C, spatial...)`` array of ``key`` into its K samples of C channels each."""
    if images.ndim < 3:
        raise ValueError(
            f"'{key}' must be channel-first (num_samples * channels, H, W[, D]), got shape {list(images.shape)}"
        )
    if images.shape[0] % num_samples:
        raise ValueError(
            f"'{key}' has {images.shape[0]} channels, not a multiple of num_samples={num_samples}: it must hold "
            f"num_samples images of the same number of channels, got shape {list(images.shape)}"
        )
    return np.split(images, num_samples, axis=0)


class SaveSamplesd(MapTransform):
    """Save the K samples a generator made of one item, each as a file of its own in the source's format.

    ``d[key]`` holds K images of C channels each, stacked on the channel axis ``(K * C, H, W)`` (sample k is channels
    ``k*C : (k+1)*C``), with values in ``input_range`` (clipped to it first). Sample k (counted from 1, also when
    K is 1) is written to ``<output_dir>/<stem>_<postfix>_<k>.<ext>``, the stem being the source file's:

    * a picture source (PNG, JPEG, ...) gives an 8-bit PNG, ``input_range`` mapped onto 0 .. 255 (``output_range``
      is not used), grey for C == 1 and RGB for C == 3, oriented as the source picture;
    * any other source gives a float32 NIfTI with the source's affine and values mapped onto ``output_range``
      (e.g. (0, 1), or (-1000, 1000) for CT in HU).

    Each file is written whole (a temporary name renamed into place); the written paths are put in
    ``d[f"{key}_paths"]``.

    Args:
        keys: keys of the stacked samples.
        output_dir: folder to write into; created if missing.
        num_samples: K, the number of samples stacked in each key.
        postfix: put between the source's stem and the sample number.
        source_key: key of the loaded input (a MONAI MetaTensor) whose file names the outputs, decides their
            format and gives the NIfTI affine.
        input_range: (low, high) value range of the samples, e.g. (-1, 1) for a ``tanh`` output.
        output_range: (low, high) the NIfTI values are mapped onto.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str,
        num_samples: int = 1,
        postfix: str = "synth",
        source_key: str = "image",
        input_range: Sequence[float] = (-1.0, 1.0),
        output_range: Sequence[float] = (0.0, 1.0),
    ) -> None:
        super().__init__(keys)
        self.output_dir, self.postfix, self.source_key = output_dir, postfix, source_key
        self.num_samples = _positive(num_samples, "num_samples")
        self.input_range = _value_range(input_range, "input_range")
        self.output_range = _value_range(output_range, "output_range")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        source_img = d.get(self.source_key)
        source = source_name(source_img, default=f"{self.source_key}.nii.gz")
        picture = split_extension(os.path.basename(source))[1] in PNG_EXTENSIONS
        affine = source_img.affine if isinstance(source_img, MetaTensor) else None  # None: identity
        for key in self.key_iterator(d):
            samples = _split_samples(_as_numpy(d[key]), self.num_samples, key)
            if picture and (samples[0].ndim != 3 or samples[0].shape[0] not in (1, 3)):
                raise ValueError(
                    f"'{key}': the source {source} is a picture, so each sample is written as a PNG and must be 2D "
                    f"with 1 (grey) or 3 (RGB) channels; got {self.num_samples} samples of shape "
                    f"{list(samples[0].shape)}"
                )
            os.makedirs(self.output_dir, exist_ok=True)
            paths = []
            for k, sample in enumerate(samples, start=1):
                path = output_path(self.output_dir, source, f"{self.postfix}_{k}", ".png" if picture else ".nii.gz")
                writer: PILWriter | NibabelWriter
                if picture:
                    writer = PILWriter(output_dtype=np.uint8, scale=None)
                    writer.set_data_array(_to_uint8(sample, self.input_range), channel_dim=0)
                else:
                    writer = NibabelWriter(output_dtype=np.float32)
                    writer.set_data_array(_rescale(sample, self.input_range, self.output_range), channel_dim=0)
                    # what set_metadata(meta, resample=False) does, without its resampler, which fails on 2D data
                    # in MONAI 1.6 (Project-MONAI/MONAI#9068)
                    writer.affine = affine
                with atomic_output(path) as tmp:
                    writer.write(tmp)
                paths.append(path)
            d[f"{key}_paths"] = paths
        return d


def _class_colours(count: int) -> np.ndarray:
    """``(count, 3)`` uint8 colours of classes 0 .. count - 1: black for 0, then hues a golden ratio apart.

    The colour of a class depends on the class alone, so it is the same in every sheet; saturation and brightness
    alternate, so that neighbouring classes differ even where hues come close (hundreds of classes).
    """
    colours = np.zeros((count, 3), dtype=np.uint8)
    for k in range(1, count):
        rgb = colorsys.hsv_to_rgb(((k - 1) * _GOLDEN) % 1.0, 0.9 if k % 2 else 0.6, 1.0 if k // 2 % 2 else 0.75)
        colours[k] = np.rint(np.asarray(rgb) * 255)
    return colours


def _colour_labels(label: np.ndarray, key: str) -> np.ndarray:
    """``(H, W, 3)`` uint8 picture of the channel-first label map of ``key``: each class its colour.

    A map of several channels (one-hot) is shown as its argmax.
    """
    classes = label.argmax(axis=0) if label.shape[0] > 1 else label[0]
    bad = classes[(classes < 0) | (classes != np.round(classes))]
    if bad.size:
        raise ValueError(f"'{key}' must hold integer classes 0 .. N (or be one-hot), got the value {bad.flat[0]}")
    classes = classes.astype(np.int64)
    return _class_colours(int(classes.max(initial=0)) + 1)[classes]


class SaveContactSheetd(MapTransform):
    """Save one PNG per item that shows its label map, its real image if any, and the K samples made of it.

    Tiles, each the size of the image, fill rows of at most ``max_columns``: the label map colour-coded (a fixed
    colour per class, background black), then the real image (``real_key``, when the item has it), then the samples.
    Images show their first three channels as RGB or their first in grey, mapped from ``input_range`` onto
    0 .. 255 without any per-image contrast stretching, so that samples can be compared with each other and with the
    real image. Items loaded from pictures are shown the way the picture was (MONAI loads those with rows and
    columns swapped). The sheet is written whole to ``<output_dir>/<stem>_<postfix>.png``, its path put in
    ``d[f"{pred_key}_sheet_path"]``.

    Args:
        label_key: key of the label map ``(1, H, W)`` of integer classes (or its one-hot).
        pred_key: key of the K stacked samples ``(K * C, H, W)``.
        output_dir: folder to write into; created if missing.
        num_samples: K.
        real_key: key of the real image ``(C, H, W)``; skipped if None or absent from the item.
        postfix: appended to the source file's stem.
        source_key: key whose loaded file names the sheet; None: ``label_key``.
        input_range: (low, high) value range of the samples and of the real image.
        max_columns: the most tiles in a row.
    """

    def __init__(
        self,
        label_key: str,
        pred_key: str,
        output_dir: str,
        num_samples: int = 1,
        real_key: str | None = None,
        postfix: str = "samples",
        source_key: str | None = None,
        input_range: Sequence[float] = (-1.0, 1.0),
        max_columns: int = 8,
    ) -> None:
        super().__init__([label_key, pred_key])
        self.label_key, self.pred_key, self.real_key = label_key, pred_key, real_key
        self.output_dir, self.postfix, self.source_key = output_dir, postfix, source_key or label_key
        self.num_samples = _positive(num_samples, "num_samples")
        self.input_range = _value_range(input_range, "input_range")
        self.max_columns = _positive(max_columns, "max_columns")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        label = _as_numpy(d[self.label_key])
        if label.ndim != 3:
            raise ValueError(
                f"'{self.label_key}' must be a channel-first 2D label map (1, H, W), got {list(label.shape)}"
            )
        images = [
            (self.pred_key, sample)
            for sample in _split_samples(_as_numpy(d[self.pred_key]), self.num_samples, self.pred_key)
        ]
        if self.real_key is not None and self.real_key in d:
            images.insert(0, (self.real_key, _as_numpy(d[self.real_key])))
        for key, image in images:
            if image.shape[1:] != label.shape[1:]:
                raise ValueError(
                    f"contact sheet: '{key}' {list(image.shape)} must be channel-first with the spatial shape of "
                    f"'{self.label_key}' {list(label.shape[1:])}"
                )
        tiles = [_colour_labels(label, self.label_key)] + [_to_rgb(image, self.input_range) for _, image in images]
        source = source_name(d.get(self.source_key), default=self.source_key)
        if split_extension(os.path.basename(source))[1] in PNG_EXTENSIONS:
            tiles = [tile.transpose(1, 0, 2) for tile in tiles]
        columns = min(len(tiles), self.max_columns)
        height, width = tiles[0].shape[:2]
        sheet = np.zeros((math.ceil(len(tiles) / columns) * height, columns * width, 3), dtype=np.uint8)
        for index, tile in enumerate(tiles):
            row, column = divmod(index, columns)
            sheet[row * height : (row + 1) * height, column * width : (column + 1) * width] = tile
        d[f"{self.pred_key}_sheet_path"] = _save_picture(sheet, self.output_dir, source, self.postfix)
        return d
