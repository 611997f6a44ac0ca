"""Deterministic draws of a random augmentation, so that its results can be cached (see ``common.data.variants``)."""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Hashable, Mapping
from typing import Any

from monai.transforms import Randomizable, Transform

__all__ = ["FixedVariantd"]


class FixedVariantd(Transform):
    """Apply the draw of ``transform`` that belongs to an item's ``variant``: the same draw every time.

    Variant 0 leaves the item as it is; variant ``v > 0`` seeds ``transform`` from ``seed``, ``v`` and the item's
    ``identity_key`` value (its file) before applying it, so different items get different draws. This transform is
    not ``Randomizable``, so MONAI's ``CacheDataset`` caches its output and everything after it.

    Args:
        transform: a randomizable transform (e.g. ``Compose`` of ``RandFlipd``, ``RandAffined`` ...).
        variant_key: key of the item's variant index (``common.data.expand_variants``); removed from the item.
        identity_key: key whose value identifies the item.
        seed: base seed.
    """

    def __init__(
        self, transform: Callable, variant_key: str = "variant", identity_key: str = "image", seed: int = 0
    ) -> None:
        if not isinstance(transform, Randomizable):
            raise TypeError(f"FixedVariantd needs a randomizable transform, got {type(transform).__name__}.")
        self.transform = transform
        self.variant_key = variant_key
        self.identity_key = identity_key
        self.seed = int(seed)
        self._lock = threading.Lock()

    def __call__(self, data: Mapping[Hashable, Any]) -> Any:
        d = dict(data)
        if self.variant_key not in d:
            raise KeyError(f"FixedVariantd: no '{self.variant_key}' in the item; build the items with expand_variants.")
        variant = int(d.pop(self.variant_key))
        if variant == 0:
            return d
        identity = d.get(self.identity_key)
        name = getattr(identity, "meta", {}).get("filename_or_obj", identity)
        seed = (self.seed * 1_000_003 + zlib.crc32(str(name).encode()) + 7919 * variant) % (2**32)
        with self._lock:
            self.transform.set_random_state(seed=seed)
            return self.transform(d)
