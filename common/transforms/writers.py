"""Write predicted masks and quick-look overlays next to nothing the user gave, each file written whole."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
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

__all__ = ["SaveMaskd", "SaveOverlayd", "output_path"]


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
            # a mask without metadata of its own (a plain array) takes the source's affine, as documented
            meta_of = mask if isinstance(mask, MetaTensor) else source_img
            meta = meta_of.meta if isinstance(meta_of, MetaTensor) else None
            writer.set_metadata(meta, resample=False)
            with atomic_output(path) as tmp:
                writer.write(tmp)
            d[f"{key}_path"] = path
        return d


def _to_rgb(image: np.ndarray) -> np.ndarray:
    """Channel-first 2D image -> (H, W, 3) uint8, contrast-stretched per image."""
    img = image[:3] if image.shape[0] >= 3 else np.repeat(image[:1], 3, axis=0)
    img = img.astype(np.float32)
    lo, hi = np.percentile(img, (0.5, 99.5))
    img = np.clip((img - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(img)
    return (np.moveaxis(img, 0, -1) * 255).astype(np.uint8)


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
        os.makedirs(self.output_dir, exist_ok=True)
        path = output_path(self.output_dir, source, self.postfix, ".png")
        with atomic_output(path) as tmp:
            Image.fromarray(rgb).save(tmp)
        d[f"{self.pred_key}_overlay_path"] = path
        return d
