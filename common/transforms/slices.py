"""2D slice extraction from 3D volumes, for bundles that train 2D models on 3D data sets."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform, SplitDim, SqueezeDim
from monai.transforms.traits import MultiSampleTrait
from monai.utils import convert_to_dst_type, convert_to_numpy

__all__ = ["ExtractSlicesd", "select_slice_indices"]


def _spatial_label(label: NdarrayOrTensor) -> np.ndarray:
    """Return ``label`` of shape ``(H, W, D)`` or ``(1, H, W, D)`` as a numpy ``(H, W, D)`` array."""
    label = convert_to_numpy(label)
    if label.ndim == 4 and label.shape[0] == 1:
        label = label[0]
    if label.ndim != 3:
        raise ValueError(f"label must have shape (H, W, D) or (1, H, W, D), got {label.shape}.")
    return label


def select_slice_indices(
    label: NdarrayOrTensor | None,
    axis: int,
    indices: list[int] | None = None,
    start: int = 0,
    stop: int | None = None,
    step: int = 1,
    keep_if_labelled: bool = False,
    num_per_class: int | None = None,
    seed: int = 0,
    size: int | None = None,
) -> list[int]:
    """Choose which slices along spatial ``axis`` of a volume to extract.

    Rules, in order:

    1. explicit ``indices`` win: they are validated and returned as given (the other rules are ignored);
    2. otherwise the candidates are ``range(size)[start:stop:step]`` (Python slice semantics);
    3. ``keep_if_labelled`` keeps the candidates whose label slice has foreground (label > 0);
    4. ``num_per_class`` selects, for each label value > 0, up to that many candidates containing it (drawn with
       ``numpy.random.default_rng(seed)``), and returns their union; it balances rare and common structures.

    Args:
        label: label volume ``(H, W, D)`` or ``(1, H, W, D)``; needed by ``keep_if_labelled`` and ``num_per_class``.
        axis: spatial axis (0, 1 or 2) across which slices are taken.
        indices: explicit slice indices, each in ``[0, size)``.
        start: first candidate index of the range.
        stop: end (exclusive) of the range; ``None`` means the number of slices.
        step: step of the range, >= 1.
        keep_if_labelled: keep only slices with foreground in ``label``.
        num_per_class: number of slices drawn per label value; ``None`` keeps all candidates.
        seed: seed of the ``num_per_class`` draw.
        size: number of slices along ``axis``; needed only without ``label`` (must match it otherwise).

    Returns:
        the selected indices, sorted unless given explicitly.

    Raises:
        ValueError: on an invalid argument, an index out of range, or a missing ``label``/``size``.
    """
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be a spatial axis 0, 1 or 2, got {axis!r}.")
    volume = None if label is None else _spatial_label(label)
    if volume is not None:
        if size is not None and size != volume.shape[axis]:
            raise ValueError(f"size {size} does not match the label's {volume.shape[axis]} slices along axis {axis}.")
        size = volume.shape[axis]
    if size is None:
        raise ValueError("size must be given when label is None.")
    if indices is not None:
        for index in indices:
            if not 0 <= index < size:
                raise ValueError(f"slice index {index} is out of range for size {size} along axis {axis}.")
        return [int(index) for index in indices]
    if step < 1:
        raise ValueError(f"step must be an integer >= 1, got {step!r}.")
    if num_per_class is not None and num_per_class < 1:
        raise ValueError(f"num_per_class must be an integer >= 1 or None, got {num_per_class!r}.")
    candidates = np.array(range(size)[start:stop:step], dtype=int)
    if not (keep_if_labelled or num_per_class is not None):
        return candidates.tolist()
    if volume is None:
        raise ValueError("label is required by keep_if_labelled and num_per_class.")
    if candidates.size == 0:
        return []
    slices = np.moveaxis(volume, axis, 0)[candidates].reshape(len(candidates), -1)
    if keep_if_labelled:
        labelled = (slices > 0).any(axis=1)
        candidates, slices = candidates[labelled], slices[labelled]
    if num_per_class is None:
        return candidates.tolist()
    rng = np.random.default_rng(seed)
    selected: set[int] = set()
    for value in np.unique(slices[slices > 0]):
        containing = candidates[(slices == value).any(axis=1)]
        count = min(num_per_class, len(containing))
        selected.update(rng.choice(containing, size=count, replace=False).tolist())
    return sorted(selected)


def _take_slice(pieces: list[NdarrayOrTensor], index: int, dim: int, like: NdarrayOrTensor) -> NdarrayOrTensor:
    """Squeeze ``pieces[index]`` (a singleton-``dim`` split of ``like``) into an independent 2D image of its type."""
    piece = SqueezeDim(dim=dim, update_meta=True)(pieces[index])
    if not isinstance(like, MetaTensor):
        piece, *_ = convert_to_dst_type(piece, like)
    return piece.clone() if isinstance(piece, torch.Tensor) else piece.copy()


class ExtractSlicesd(MapTransform, MultiSampleTrait):
    """Cut channel-first 3D volumes ``(C, H, W, D)`` into a list of 2D samples ``(C, H', W')``, one per slice.

    The slices are chosen by :py:func:`select_slice_indices` from the volume under ``label_key``. Each returned
    dictionary is a shallow copy of the input where every key in ``keys`` holds one slice (a copy, of the input's
    type; a MetaTensor's affine loses the sliced axis) and ``"slice_index"`` holds the slice index. Like
    ``RandCropByPosNegLabeld``, the result is a list: ``Compose`` maps the following transforms over its items and
    ``monai.data.list_data_collate`` flattens it into the batch.

    Args:
        keys: keys of the volumes to slice; they must share the size along ``axis``.
        label_key: key of the label volume used for the selection; ``None`` (or a key missing from the data) selects
            without a label, which only ``keep_if_labelled`` and ``num_per_class`` need.
        axis: spatial axis (0, 1 or 2) across which slices are taken.
        indices, start, stop, step, keep_if_labelled, num_per_class, seed: see :py:func:`select_slice_indices`.
        allow_missing_keys: don't raise exception if key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_key: str | None = "label",
        axis: int = 2,
        indices: list[int] | None = None,
        start: int = 0,
        stop: int | None = None,
        step: int = 1,
        keep_if_labelled: bool = False,
        num_per_class: int | None = None,
        seed: int = 0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if axis not in (0, 1, 2):
            raise ValueError(f"axis must be a spatial axis 0, 1 or 2, got {axis!r}.")
        self.label_key = label_key
        self.axis = axis
        self.indices = indices
        self.start = start
        self.stop = stop
        self.step = step
        self.keep_if_labelled = keep_if_labelled
        self.num_per_class = num_per_class
        self.seed = seed

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> list[dict[Hashable, NdarrayOrTensor]]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        for key in keys:
            if d[key].ndim != 4:
                raise ValueError(f"{key!r} must be a channel-first 3D volume (C, H, W, D), got {tuple(d[key].shape)}.")
        sizes = {key: d[key].shape[self.axis + 1] for key in keys}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"the volumes must have the same size along axis {self.axis}, got {sizes}.")
        label = None if self.label_key is None else d.get(self.label_key)
        selected = select_slice_indices(
            label,
            self.axis,
            indices=self.indices,
            start=self.start,
            stop=self.stop,
            step=self.step,
            keep_if_labelled=self.keep_if_labelled,
            num_per_class=self.num_per_class,
            seed=self.seed,
            size=next(iter(sizes.values()), None),
        )
        dim = self.axis + 1
        splitter = SplitDim(dim=dim, keepdim=True, update_meta=True)
        pieces = {key: splitter(d[key]) for key in keys}
        samples = []
        for index in selected:
            sample = dict(d)
            for key in keys:
                sample[key] = _take_slice(pieces[key], index, dim, d[key])
            sample["slice_index"] = index
            samples.append(sample)
        return samples
