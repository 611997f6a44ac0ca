"""A fixed number of augmented variants per item, so that a cache can hold the costly result of each.

``expand_variants`` repeats every item with ``"variant": 0 .. n - 1``; ``common.transforms.FixedVariantd`` applies
the random augmentation that variant ``v`` of an item always draws (variant 0: none), so the pipeline is
deterministic and MONAI's ``CacheDataset`` caches it whole; ``VariantSampler`` visits each item once per epoch, in
one of its variants drawn afresh every epoch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DistributedSampler

__all__ = ["VariantSampler", "expand_variants"]


def expand_variants(items: Sequence[dict], num_variants: int, key: str = "variant") -> list[dict]:
    """Each item ``num_variants`` times in a row, with ``key`` set to 0 .. ``num_variants - 1``."""
    if int(num_variants) < 1:
        raise ValueError(f"num_variants must be >= 1, got {num_variants}.")
    return [{**item, key: v} for item in items for v in range(int(num_variants))]


class VariantSampler(DistributedSampler):
    """Every item once per epoch (shuffled), each time in one of its ``num_variants`` variants, drawn at random.

    For a dataset of ``expand_variants(items, num_variants)``. It subclasses torch's ``DistributedSampler`` so that
    MONAI's workflows call ``set_epoch`` each epoch (new draws, reproducible from ``seed``); with ``num_replicas``
    > 1 each process gets its share of the items, as ``DistributedSampler`` gives it.

    Args:
        dataset: the expanded dataset; its length must be a multiple of ``num_variants``.
        num_variants: variants per item.
        shuffle: shuffle the items each epoch.
        seed: seed of the shuffles and draws.
        num_replicas: processes sharing the items (1 without distributed training).
        rank: this process's index.
    """

    def __init__(
        self,
        dataset: Sequence,
        num_variants: int,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if int(num_variants) < 1 or len(dataset) % int(num_variants):
            raise ValueError(
                f"VariantSampler: the dataset's length {len(dataset)} is not a multiple of num_variants "
                f"{num_variants}; build it from expand_variants(items, num_variants)."
            )
        self.num_variants = int(num_variants)
        self.num_items = len(dataset) // self.num_variants
        super().__init__(
            range(self.num_items), num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False
        )

    def __iter__(self) -> Iterator[int]:
        items = list(super().__iter__())
        generator = torch.Generator().manual_seed(self.seed + 7919 * (self.epoch + 1))
        variants = torch.randint(self.num_variants, (len(items),), generator=generator).tolist()
        return iter(item * self.num_variants + v for item, v in zip(items, variants, strict=True))
