"""BraTS-style per-slice region metrics (WT/TC/ET Dice and HD95) with the nnU-Net v1 evaluator's NaN rules.

The brain tumour paper (seed 002) scores every test slice and region with nnU-Net v1's evaluator and reports the
nanmean over slices. MONAI's metrics differ on empty masks, so these keep the paper's rules:

- Dice = 2TP / (2TP + FP + FN); NaN when prediction and reference are both empty, 0 when only one is.
  (``DiceMetric(ignore_empty=True)`` gives NaN whenever the reference is empty, ``ignore_empty=False`` gives 1
  when both are.)
- HD95 = medpy's ``hd95`` in pixels: the 95th percentile of the border-to-border distances of both directions
  pooled together; NaN when either mask is empty or fills the whole image. MONAI's
  ``compute_hausdorff_distance(percentile=95)`` instead takes the larger of the two directed 95th percentiles, so it
  can be larger than medpy's on asymmetric errors.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.handlers import IgniteMetricHandler
from monai.metrics import CumulativeIterationMetric, compute_dice
from monai.metrics.utils import do_metric_reduction, get_mask_edges, get_surface_distance
from monai.transforms import MapTransform, Transform
from monai.utils import MetricReduction, TransformBackends, convert_to_dst_type, convert_to_tensor, look_up_option

__all__ = [
    "LabelsToRegions",
    "LabelsToRegionsd",
    "RegionDice",
    "RegionDiceMetric",
    "RegionHausdorff95",
    "RegionHausdorff95Metric",
    "compute_region_dice",
    "compute_region_hausdorff95",
]


class LabelsToRegions(Transform):
    """Label map -> one binary mask per region, a region being a union of labels (BraTS WT, TC, ET).

    The input is a label map ``(1, H, W[, D])`` of values 0 .. C-1, or ``(C, H, W[, D])`` one-hot masks or class
    scores (C > 1), which are argmaxed first, so a network's logits convert directly. The output is
    ``(R, H, W[, D])`` float 0/1 of the input's type; a MetaTensor keeps its metadata.

    Args:
        regions: for each output channel, the label values it unites, e.g. ``[[1, 2, 3], [2, 3], [3]]`` for WT, TC
            and ET in the remapped BraTS labels (1 edema, 2 necrotic core, 3 enhancing tumour).
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, regions: Sequence[Sequence[int]]) -> None:
        if len(regions) == 0:
            raise ValueError("regions must list at least one region (a sequence of label values), got none.")
        for i, region in enumerate(regions):
            if isinstance(region, (str, bytes)) or not isinstance(region, Sequence) or len(region) == 0:
                raise ValueError(f"regions[{i}] must be a non-empty sequence of label values, got {region!r}.")
        self.regions = [torch.as_tensor([int(v) for v in region]) for region in regions]

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        labels = convert_to_tensor(img, track_meta=False)
        if labels.ndim < 3:
            raise ValueError(f"expected a channel-first label map (C, H, W[, D]), got shape {tuple(labels.shape)}.")
        if labels.shape[0] > 1:
            labels = labels.argmax(dim=0, keepdim=True)
        masks = torch.cat([torch.isin(labels, values.to(labels)) for values in self.regions])
        out, *_ = convert_to_dst_type(masks, img, dtype=torch.float32)
        return out


class LabelsToRegionsd(MapTransform):
    """Dictionary version of :class:`LabelsToRegions`, e.g. for both ``pred`` and ``label`` in post-processing."""

    backend = LabelsToRegions.backend

    def __init__(
        self, keys: KeysCollection, regions: Sequence[Sequence[int]], allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.converter = LabelsToRegions(regions)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key])
        return d


def _binary_pair(y_pred: NdarrayOrTensor, y: NdarrayOrTensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both inputs as boolean tensors ``(B, R, H, W[, D])`` of equal shape (values above 0.5 are foreground)."""
    y_pred = convert_to_tensor(y_pred, dtype=torch.float32, track_meta=False) > 0.5
    y = convert_to_tensor(y, dtype=torch.float32, track_meta=False) > 0.5
    if y_pred.ndim < 3 or y_pred.shape != y.shape:
        raise ValueError(
            f"y_pred and y must be binary masks (B, R, H, W[, D]) of the same shape, got {tuple(y_pred.shape)} and "
            f"{tuple(y.shape)}."
        )
    return y_pred, y.to(y_pred.device)


def compute_region_dice(y_pred: NdarrayOrTensor, y: NdarrayOrTensor) -> torch.Tensor:
    """Dice of binary masks ``(B, R, H, W[, D])`` per sample and region, ``(B, R)``: NaN where both are empty."""
    y_pred, y = _binary_pair(y_pred, y)
    dice = compute_dice(y_pred.float(), y.float(), include_background=True, ignore_empty=False)  # both empty: 1
    both_empty = ~(y_pred | y).flatten(2).any(dim=2)
    return torch.where(both_empty, torch.nan, dice)


def compute_region_hausdorff95(y_pred: NdarrayOrTensor, y: NdarrayOrTensor) -> torch.Tensor:
    """medpy's HD95 in pixels per sample and region of binary masks ``(B, R, H, W[, D])``, ``(B, R)``.

    NaN when either mask is empty or full, as nnU-Net v1's evaluator. MONAI 1.6.1's ``compute_hausdorff_distance``
    gives NaN for empty masks too, but with ``percentile=95`` only by accident (the quantile of all-inf distances;
    without a percentile one empty mask gives inf), and it warns once per empty mask, so they never reach it here.
    """
    y_pred, y = _binary_pair(y_pred, y)
    hd95 = torch.full(y_pred.shape[:2], torch.nan, dtype=torch.float32, device=y_pred.device)
    for b, r in np.ndindex(*y_pred.shape[:2]):
        pred, ref = y_pred[b, r], y[b, r]
        if not (pred.any() and ref.any()) or pred.all() or ref.all():
            continue
        edges_pred, edges_ref = get_mask_edges(pred, ref)
        distances = torch.cat(
            [get_surface_distance(edges_pred, edges_ref), get_surface_distance(edges_ref, edges_pred)]
        )
        hd95[b, r] = torch.quantile(distances.double(), 0.95).float()
    return hd95


class _RegionMetric(CumulativeIterationMetric):
    """Collects per-sample, per-region values; ``aggregate`` reduces them with MONAI's NaN-ignoring reduction."""

    def __init__(self, reduction: MetricReduction | str = MetricReduction.MEAN, get_not_nans: bool = False) -> None:
        super().__init__()
        self.reduction = reduction
        self.get_not_nans = get_not_nans

    def aggregate(
        self, reduction: MetricReduction | str | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Reduce the collected ``(N, R)`` values ignoring NaN (``do_metric_reduction``); a mean of none is NaN.

        MONAI's reduction returns 0 for a mean over values that are all NaN, which would read as a perfect HD95 (or
        a failed Dice) for a region no slice has; like ``np.nanmean`` it is NaN here.
        """
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise ValueError("the data to aggregate must be a PyTorch Tensor; call the metric on some data first.")
        reduction = look_up_option(reduction or self.reduction, MetricReduction)
        f, not_nans = do_metric_reduction(data, reduction)
        if reduction in (MetricReduction.MEAN, MetricReduction.MEAN_BATCH, MetricReduction.MEAN_CHANNEL):
            f = torch.where(not_nans > 0, f, torch.nan)
        return (f, not_nans) if self.get_not_nans else f


class RegionDiceMetric(_RegionMetric):
    """Per-slice, per-region Dice of binarised ``(B, R, H, W)`` masks with the both-empty-is-NaN rule.

    Args:
        reduction: MONAI reduction, applied to non-NaN values only. ``"mean_batch"`` gives one nanmean over the
            slices per region (the paper's table values); ``"mean"`` (a scalar for key metrics) averages each
            slice's non-NaN regions, then the slices that have any. A mean over no value is NaN.
        get_not_nans: also return the count of non-NaN values from ``aggregate``.
    """

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor, **kwargs: Any) -> torch.Tensor:  # type: ignore[override]
        return compute_region_dice(y_pred, y)


class RegionHausdorff95Metric(_RegionMetric):
    """Per-slice, per-region HD95 in pixels (medpy's) of binarised ``(B, R, H, W)`` masks, NaN if one is empty or full.

    Args:
        reduction: as for :class:`RegionDiceMetric`.
        get_not_nans: also return the count of non-NaN values from ``aggregate``.
    """

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor, **kwargs: Any) -> torch.Tensor:  # type: ignore[override]
        return compute_region_hausdorff95(y_pred, y)


class RegionDice(IgniteMetricHandler):
    """Ignite handler of :class:`RegionDiceMetric` for a MONAI evaluator's ``key_val_metric``/``additional_metrics``.

    Args:
        reduction: as for :class:`RegionDiceMetric`.
        output_transform: extracts ``(y_pred, y)`` from the engine output, e.g. ``from_engine(["pred", "label"])``.
        save_details: keep the per-slice, per-region values in ``engine.state.metric_details`` (for ``MetricsSaver``).
    """

    def __init__(
        self,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
    ) -> None:
        super().__init__(
            metric_fn=RegionDiceMetric(reduction=reduction),
            output_transform=output_transform,
            save_details=save_details,
        )


class RegionHausdorff95(IgniteMetricHandler):
    """Ignite handler of :class:`RegionHausdorff95Metric`; arguments as for :class:`RegionDice`."""

    def __init__(
        self,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
    ) -> None:
        super().__init__(
            metric_fn=RegionHausdorff95Metric(reduction=reduction),
            output_transform=output_transform,
            save_details=save_details,
        )
