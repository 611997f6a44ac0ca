"""Run one of the collection's 2D segmentation bundles on every slice of a 3D volume.

The bundles segment single 2D images, while a DICOM series becomes a ``(slices, rows, columns)`` volume, so each slice
goes through the bundle's own ``preprocessing``, ``inferer`` and ``postprocessing`` (its ``LoadImaged`` left out: the
slice is already in memory), exactly as the bundle's evaluator runs one image, and the label maps are stacked back.
This module needs only MONAI and PyTorch (no Deploy SDK), so the main environment can test it too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor, decollate_batch, list_data_collate
from monai.transforms import Compose, LoadImaged

from common.bundle import is_segmentation_bundle
from common.networks.weights import load_network_weights

__all__ = ["BundleSegmenter", "find_bundle", "segment_labels"]

logger = logging.getLogger(__name__)

_REQUIRED_KEYS = ("network", "preprocessing", "inferer", "postprocessing")
#: The most characters a DICOM Long String (LO), e.g. a segment label or an algorithm name, may hold.
_LO_LENGTH = 64


def find_bundle(path: str | Path) -> Path:
    """The bundle folder at ``path``: the folder itself, or its only sub-folder that is a bundle.

    A MONAI Application Package copies the model folder under ``/opt/holoscan/models/<name>``, so
    ``HOLOSCAN_MODEL_PATH`` may point at the bundle or at the folder that holds it.
    """
    folder = Path(path)
    if (folder / "configs" / "metadata.json").is_file():
        return folder
    inner = [p for p in sorted(folder.glob("*")) if (p / "configs" / "metadata.json").is_file()]
    if len(inner) == 1:
        return inner[0]
    raise FileNotFoundError(
        f"no MONAI bundle at {folder}: expected configs/metadata.json there or in exactly one sub-folder "
        f"(found {len(inner)}); pass --bundle <bundle folder> or set HOLOSCAN_MODEL_PATH."
    )


def segment_labels(metadata: dict, num_classes: int, names: list[str] | None = None) -> list[str]:
    """One label per foreground class, for the DICOM SEG segment descriptions.

    ``names`` (given by the user) win. Else the ``channel_def`` of the bundle's ``pred`` output, when that output is
    a ``segmentation`` (MONAI's convention: ``{"0": "background", "1": "spleen"}``) and names every class. Else
    generic names from the bundle name, since our bundles' ``pred`` is a network output (latent, score, logits), not a
    label map.
    """
    if names:
        if len(names) != num_classes:
            raise ValueError(f"{len(names)} label names given for a bundle with {num_classes} foreground classes.")
        return [n[:_LO_LENGTH] for n in names]
    pred = metadata.get("network_data_format", {}).get("outputs", {}).get("pred", {})
    if pred.get("format") == "segmentation":
        channel_def = pred.get("channel_def", {})
        defined = [channel_def[k] for k in sorted(channel_def, key=int) if channel_def[k].lower() != "background"]
        if len(defined) == num_classes:
            return [n[:_LO_LENGTH] for n in defined]
    return [f"{metadata['name']} class {i}"[:_LO_LENGTH] for i in range(1, num_classes + 1)]


@dataclass(frozen=True)
class _Pipeline:
    """The instantiated parts of the bundle that one slice goes through."""

    preprocessing: Compose
    inferer: Callable[..., Any]
    network: torch.nn.Module
    postprocessing: Compose
    device: torch.device


class BundleSegmenter:
    """A trained 2D segmentation bundle (``configs/inference.json`` and ``models/model.pt``) applied slice by slice.

    Args:
        bundle: the bundle folder (see :func:`find_bundle`).
        labels: names of the foreground classes for the DICOM SEG; default from the metadata (:func:`segment_labels`).

    Raises:
        FileNotFoundError: no bundle, or a bundle without trained weights.
        ValueError: a bundle that is not a segmentation bundle.
    """

    def __init__(self, bundle: str | Path, labels: list[str] | None = None) -> None:
        self.root = find_bundle(bundle)
        self.metadata = json.loads((self.root / "configs" / "metadata.json").read_text())
        name = self.root.name
        config_file = self.root / "configs" / "inference.json"
        if not is_segmentation_bundle(self.root) or not config_file.is_file():
            raise ValueError(
                f"bundle '{name}' is not a segmentation bundle: its metadata task is "
                f"{self.metadata.get('task', '')!r} and it needs configs/inference.json."
            )
        self.weights = self.root / "models" / "model.pt"
        if not self.weights.is_file():
            raise FileNotFoundError(
                f"bundle '{name}' has no trained weights: {self.weights} does not exist; train the bundle "
                "(configs/train.json) or copy its trained model.pt there."
            )
        self._parser = ConfigParser()
        self._parser.read_config(str(config_file))
        self._parser["bundle_root"] = str(self.root)
        missing = [k for k in _REQUIRED_KEYS if k not in self._parser]
        if missing:
            raise ValueError(f"bundle '{name}' is not a segmentation bundle: inference.json lacks {missing}.")
        self.num_classes = int(self._parser.get_parsed_content("num_classes")) if "num_classes" in self._parser else 1
        self.labels = segment_labels(self.metadata, self.num_classes, labels)
        self._pipeline = self._load()

    @property
    def algorithm_name(self) -> str:
        return str(self.metadata.get("name", self.root.name))[:_LO_LENGTH]

    @property
    def algorithm_version(self) -> str:
        return str(self.metadata.get("version", ""))[:_LO_LENGTH]

    def _load(self) -> _Pipeline:
        """Instantiate the bundle's transforms, inferer and network with its weights, so that errors show up early."""
        parse = self._parser.get_parsed_content
        network = load_network_weights(parse("network"), str(self.weights), config_key="ckpt_dir")
        network.eval()
        # The same transform objects as the ones postprocessing's Invertd holds, so that it can invert them.
        preprocessing = parse("preprocessing")
        in_memory = Compose([t for t in preprocessing.transforms if not isinstance(t, LoadImaged)])
        device = torch.device(parse("device")) if "device" in self._parser else torch.device("cpu")
        return _Pipeline(in_memory, parse("inferer"), network, parse("postprocessing"), device)

    def segment_slice(self, image: np.ndarray, pixel_spacing: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
        """The label map (``uint8``, 0 background, 1..num_classes) of one ``(rows, columns)`` slice.

        The slice enters as MONAI's readers hand a 2D image to a bundle: spatial axes ``(x, y)`` (columns first),
        no channel axis, with a pixel-spacing affine.
        """
        pipe = self._pipeline
        spacing_x, spacing_y = float(pixel_spacing[1]), float(pixel_spacing[0])
        affine = torch.diag(torch.tensor([spacing_x, spacing_y, 1.0, 1.0], dtype=torch.float64))
        xy = MetaTensor(torch.as_tensor(np.ascontiguousarray(image.T), dtype=torch.float32), affine=affine)
        xy.meta.update({"original_channel_dim": "no_channel", "filename_or_obj": "dicom_slice"})
        batch = list_data_collate([pipe.preprocessing({"image": xy})])
        with torch.no_grad():
            pred = pipe.inferer(batch["image"].to(pipe.device), pipe.network)
        item = pipe.postprocessing(decollate_batch({"image": batch["image"], "pred": pred})[0])
        label = np.asarray(torch.as_tensor(item["pred"]).detach().cpu()).squeeze(0)
        if label.shape != image.T.shape or not np.all(np.isin(label, np.arange(self.num_classes + 1))):
            raise ValueError(
                f"bundle '{self.root.name}' did not give a label map of the slice: shape {label.shape} "
                f"(expected {image.T.shape}), values {np.unique(label)[:8].tolist()} (expected 0..{self.num_classes}); "
                "is it a segmentation bundle?"
            )
        return label.T.astype(np.uint8)

    def segment_volume(self, volume: np.ndarray, pixel_spacing: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
        """The label map of a ``(slices, rows, columns)`` volume, one slice at a time."""
        if volume.ndim != 3:
            raise ValueError(f"expected a (slices, rows, columns) volume, got shape {volume.shape}.")
        logger.info("segmenting %d slices with bundle '%s'", volume.shape[0], self.root.name)
        return np.stack([self.segment_slice(s, pixel_spacing) for s in volume])
