"""Training data and inference for pixel classifiers on diffusion features, within a fixed memory budget.

The reference implementations extract every pixel's feature vector of every training image into one in-memory array
(ddpm-segmentation reports ~210 GB for 50 images at 256 x 256 with its richest features). Here each image's features
are computed once, one batch of images at a time, and stored on disk in float16 (:py:class:`FeatureStore`);
:py:class:`PixelBatches` then streams shuffled pixel batches from a few images at a time, so memory is bounded by
``images_per_chunk`` images' features, whatever the number of images.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.transforms import MapTransform
from torch import nn
from torch.utils.data import IterableDataset

from common.diffusion.features import DiffusionFeatureExtractor
from common.io import atomic_output_dir, atomic_write_json, read_json

__all__ = ["EnsembleVoted", "FeatureStore", "PixelBatches", "PixelClassifierInferer"]

logger = logging.getLogger(__name__)


def _file_identity(path: str) -> dict[str, Any]:
    """What identifies a file's content cheaply: its path, size and modification time."""
    if not path or not os.path.isfile(path):
        return {"path": path}
    stat = os.stat(path)
    return {"path": os.path.abspath(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


class FeatureStore:
    """Diffusion features and labels of a list of labelled images, computed once and kept on disk in float16.

    ``cache_dir`` holds ``features_NNNNN.npy`` (``(H * W, F)`` float16, pixel-major so a chunk of images is one read
    each) and ``labels_NNNNN.npy`` (``(H * W,)`` uint8) per image and a ``manifest.json`` naming the images, the DDPM
    checkpoint and the feature settings: a cache written with other settings is rebuilt, never silently reused.

    Args:
        extractor: the feature extractor (its DDPM weights are loaded at first use).
        items: datalist items with ``image_key`` and ``label_key``.
        transform: loads and preprocesses one item (``image`` ``(C, H, W)`` in [-1, 1], ``label`` ``(1, H, W)``).
        cache_dir: folder of the cache; created, or rebuilt when its manifest differs. A folder without a manifest
            is not ours and is an error.
        batch_size: images per forward of the DDPM.
        device: device of the extraction.
        settings: further values the features depend on (the preprocessing's image size, for instance); they are
            part of the manifest, so changing one rebuilds the cache.
    """

    def __init__(
        self,
        extractor: DiffusionFeatureExtractor,
        items: Sequence[Mapping[str, Any]],
        transform: Callable[[Mapping[str, Any]], Mapping[str, Any]],
        cache_dir: str,
        image_key: str = "image",
        label_key: str = "label",
        batch_size: int = 4,
        device: str | torch.device = "cpu",
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        if not items:
            raise ValueError("the feature store got no labelled images (an empty datalist section).")
        self.extractor, self.items, self.transform = extractor, list(items), transform
        self.cache_dir = Path(cache_dir)
        self.image_key, self.label_key = image_key, label_key
        self.batch_size, self.device = max(1, int(batch_size)), device
        self.settings = json.loads(json.dumps(dict(settings or {})))
        self._ready = False

    def __len__(self) -> int:
        return len(self.items)

    def manifest(self) -> dict[str, Any]:
        """What the cached features depend on: the images' and labels' files (path, size, time), settings, DDPM."""
        files = [_file_identity(str(item[key])) for item in self.items for key in (self.image_key, self.label_key)]
        return {
            "items": hashlib.sha256(json.dumps(files).encode()).hexdigest(),
            "settings": self.settings,
            "count": len(self.items),
            "checkpoint": _file_identity(self.extractor.source),
            "blocks": self.extractor.blocks,
            "timesteps": self.extractor.timesteps,
            "seed": self.extractor.seed,
            "num_features": self.extractor.num_features,
        }

    def build(self) -> None:
        """Extract and store the features unless a cache with the same manifest exists."""
        if self._ready:
            return
        manifest, path = self.manifest(), self.cache_dir / "manifest.json"
        if path.is_file() and read_json(path, "feature cache manifest") == manifest:
            logger.info("reusing the diffusion features in %s", self.cache_dir)
            self._ready = True
            return
        if self.cache_dir.exists():
            if not path.is_file():
                raise FileExistsError(
                    f"feature cache folder '{self.cache_dir}' exists but holds no manifest.json: it is not a feature "
                    "cache; choose another folder (config key 'feature_cache_dir')."
                )
            logger.info("the feature cache in %s was written with other settings: rebuilding it", self.cache_dir)
            shutil.rmtree(self.cache_dir)
        self.cache_dir.parent.mkdir(parents=True, exist_ok=True)
        self.extractor.to(self.device)
        with atomic_output_dir(self.cache_dir) as tmp:
            for start in range(0, len(self.items), self.batch_size):
                self._extract(tmp, start, self.items[start : start + self.batch_size])
            atomic_write_json(tmp / "manifest.json", manifest)
        logger.info("stored diffusion features of %d images in %s", len(self.items), self.cache_dir)
        self._ready = True

    def _extract(self, folder: Path, start: int, items: Sequence[Mapping[str, Any]]) -> None:
        samples = [self.transform(dict(item)) for item in items]
        images = torch.stack([torch.as_tensor(s[self.image_key]) for s in samples]).float().to(self.device)
        features = self.extractor(images).to(torch.float16).cpu()
        for offset, (sample, feature) in enumerate(zip(samples, features, strict=True)):
            label = torch.as_tensor(sample[self.label_key])
            if label.shape[-2:] != feature.shape[-2:]:
                raise ValueError(
                    f"{items[offset][self.label_key]}: label shape {tuple(label.shape)} does not match its image's "
                    f"{tuple(feature.shape[-2:])}."
                )
            index = start + offset
            np.save(folder / f"features_{index:05d}.npy", feature.flatten(1).T.contiguous().numpy())
            np.save(folder / f"labels_{index:05d}.npy", label.reshape(-1).numpy().astype(np.uint8))

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """One image's ``(H * W, F)`` float16 features and ``(H * W,)`` labels, read whole from disk."""
        self.build()
        return (
            np.load(self.cache_dir / f"features_{index:05d}.npy"),
            np.load(self.cache_dir / f"labels_{index:05d}.npy"),
        )

    def num_pixels(self) -> int:
        """Pixels of all images together."""
        self.build()
        return sum(
            np.load(self.cache_dir / f"labels_{i:05d}.npy", mmap_mode="r").shape[0] for i in range(len(self.items))
        )


class PixelBatches(IterableDataset):
    """Shuffled batches of pixels ``{"image": (N, F) float32, "label": (N,) long}`` streamed from a FeatureStore.

    Each pass visits the images in a new seeded order, ``images_per_chunk`` at a time; the pixels of a chunk (plus the
    remainder of the previous one) are shuffled and cut into batches, so every pixel is seen once per pass and at most
    ``images_per_chunk`` images' features are in memory. A final batch of one pixel is dropped (BatchNorm needs two).
    Use it with ``DataLoader(batch_size=None)``.
    """

    def __init__(
        self, store: FeatureStore, batch_size: int = 64, images_per_chunk: int = 4, shuffle: bool = True, seed: int = 0
    ) -> None:
        super().__init__()
        if batch_size < 2:
            raise ValueError(f"pixel_batch_size must be >= 2 (BatchNorm), got {batch_size}.")
        self.store, self.batch_size = store, int(batch_size)
        self.images_per_chunk, self.shuffle, self.seed = max(1, int(images_per_chunk)), shuffle, int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the order of pass ``epoch`` next (a resumed run continues the uninterrupted run's sequence)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        full, rest = divmod(self.store.num_pixels(), self.batch_size)
        return full + (rest >= 2)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        order = rng.permutation(len(self.store)) if self.shuffle else np.arange(len(self.store))
        features, labels = np.zeros((0, self.store.extractor.num_features), np.float16), np.zeros(0, np.uint8)
        for start in range(0, len(order), self.images_per_chunk):
            chunk = [self.store.load(int(i)) for i in order[start : start + self.images_per_chunk]]
            features = np.concatenate([features, *(c[0] for c in chunk)])
            labels = np.concatenate([labels, *(c[1] for c in chunk)])
            del chunk
            if self.shuffle:
                perm = rng.permutation(len(labels))
                features, labels = features[perm], labels[perm]
            usable = len(labels) - len(labels) % self.batch_size
            yield from self._batches(features[:usable], labels[:usable])
            features, labels = features[usable:], labels[usable:]
        if len(labels) >= 2:
            yield from self._batches(features, labels)

    def _batches(self, features: np.ndarray, labels: np.ndarray) -> Iterator[dict[str, torch.Tensor]]:
        for start in range(0, len(labels), self.batch_size):
            yield {
                "image": torch.from_numpy(features[start : start + self.batch_size].astype(np.float32)),
                "label": torch.from_numpy(labels[start : start + self.batch_size].astype(np.int64)),
            }


class PixelClassifierInferer(Inferer):
    """Segment images with a pixel-classifier ensemble: ``(B, C, H, W)`` -> ``(B, K, classes, H, W)`` probabilities.

    The features come from ``extractor`` (one DDPM forward per timestep); each member's softmax is returned, and
    :py:class:`EnsembleVoted` turns them into a label map and an uncertainty map.
    """

    def __init__(self, extractor: DiffusionFeatureExtractor) -> None:
        super().__init__()
        self.extractor = extractor

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        self.extractor.to(inputs.device)
        features = self.extractor(inputs).float()
        return torch.softmax(network(features), dim=2)


class EnsembleVoted(MapTransform):
    """Majority vote of ensemble members' probabilities ``(K, C, H, W)`` -> label map ``(1, H, W)``.

    Ties are broken by the mean probability. ``uncertainty_key`` (if set) receives the members' disagreement,
    ``1 - votes of the winner / K`` (0 where all agree), ``(1, H, W)``.
    """

    def __init__(self, keys: str | Sequence[str] = "pred", uncertainty_key: str | None = "uncertainty") -> None:
        super().__init__(keys)
        self.uncertainty_key = uncertainty_key

    def __call__(self, data: Mapping[Any, Any]) -> dict[Any, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            probs = torch.as_tensor(d[key])
            if probs.ndim != 4:
                raise ValueError(f"'{key}' must hold ensemble probabilities (K, C, H, W), got {tuple(probs.shape)}.")
            members, classes = probs.shape[:2]
            votes = torch.nn.functional.one_hot(probs.argmax(dim=1), classes).sum(dim=0).movedim(-1, 0).float()
            label = (votes + probs.mean(dim=0) * 0.5).argmax(dim=0, keepdim=True)
            meta = d[key].meta if isinstance(d[key], MetaTensor) else None
            d[key] = MetaTensor(label, meta=meta) if meta is not None else label
            if self.uncertainty_key:
                winner = votes.gather(0, label)
                d[self.uncertainty_key] = 1 - winner / members
        return d
