"""Image-synthesis metrics for MONAI evaluators: SSIM, PSNR, RMSE per image; FID, LPIPS, a domain Fréchet distance
and the mIoU of a segmentation network on the generated images.

Every handler here is an ignite metric (a MONAI ``IgniteMetricHandler``) for a MONAI evaluator's
``key_val_metric``/``additional_metrics``, fed ``(y_pred, y)`` = (generated images, real images) by its
``output_transform``: ``from_engine(["pred", "label"])`` in a ``SupervisedEvaluator`` whose ``prepare_batch`` gives
(label map, real image), since its output names the inputs ``image`` and the targets ``label``.

* Data range. The metrics work on images in [0, 1]: SSIM with MONAI's ``SSIMMetric(data_range=1.0)`` (Gaussian
  window 11, sigma 1.5, K = (0.01, 0.03)), PSNR with ``PSNRMetric(max_val=1.0)``, ``RMSEMetric``, each per image and
  then averaged over the images (the seed averaged the MSE over a batch first and ran SSIM with ``data_range=255`` on
  [0, 1] images). A generator with a ``tanh`` output gives [-1, 1]: say so with ``input_range=(-1, 1)`` and both
  images are mapped to [0, 1] by :func:`to_unit_range` before any metric.
* FID and LPIPS need pretrained networks whose weights no installed package ships and nothing may download:
  pytorch-fid's Inception (config key ``fid_weights``) and torchvision's AlexNet/VGG16 plus LPIPS' linear heads
  (``lpips_backbone_weights``, ``lpips_weights``). Without them (an empty or missing path) the handler warns once per
  run, naming the config key, and attaches nothing: the metric is skipped, never computed with random weights. Do not
  use a skippable metric as the evaluator's key metric.
* :class:`DomainFrechetDistance` is the Fréchet distance of features of a segmentation network trained on the real
  data (its encoder, a layer chosen by name). It says whether the synthetic images look like the real ones *to that
  network*; its values are not comparable to published FID values, nor across networks.
* :class:`SegmentationMeanIoU` is fed ``(y_pred, y)`` = (generated images, the label maps they were made from), e.g.
  ``from_engine(["pred", "image"])``: the mIoU of a segmentation network trained on the real pairs, applied to the
  generated images, says how faithful they are to their label maps. It shares ``segmenter_weights`` (and its one
  skip warning) with :class:`DomainFrechetDistance`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from monai.handlers import IgniteMetricHandler
from monai.metrics import Cumulative, PSNRMetric, RMSEMetric, SSIMMetric, get_confusion_matrix
from monai.metrics.fid import get_fid_score
from monai.metrics.regression import RegressionMetric
from monai.networks.utils import one_hot
from monai.utils import MetricReduction
from torch import nn

from common.networks.perceptual import LPIPSNetwork, load_fid_inception, load_lpips
from common.networks.weights import load_network_weights

__all__ = [
    "LPIPS",
    "PSNR",
    "RMSE",
    "SSIM",
    "DomainFrechetDistance",
    "EncoderFeatures",
    "FrechetDistance",
    "FrechetDistanceMetric",
    "FrechetInceptionDistance",
    "LPIPSMetric",
    "SegmentationIoUMetric",
    "SegmentationMeanIoU",
    "optional_weights",
    "to_unit_range",
]

_WARNED: set[str] = set()  # the config keys (comma-joined) whose skip warning this run has given
_SEGMENTER_METRICS = "Every metric of the segmentation network (domain Fréchet distance, mIoU)"


def to_unit_range(image: torch.Tensor, input_range: Sequence[float] = (-1.0, 1.0), clip: bool = True) -> torch.Tensor:
    """Map ``image`` linearly from ``input_range`` (low, high) onto [0, 1]: -1 -> 0, 0 -> 0.5, 1 -> 1 by default.

    The metrics assume a data range of 1, so values outside ``input_range`` (a generator's overshoot) are clipped
    unless ``clip`` is False.
    """
    low, high = _check_range(input_range)
    unit = (torch.as_tensor(image).float() - low) / (high - low)
    return unit.clamp(0.0, 1.0) if clip else unit


def _check_range(input_range: Sequence[float]) -> tuple[float, float]:
    """``input_range`` as (low, high) floats with low < high."""
    if len(input_range) != 2 or not float(input_range[0]) < float(input_range[1]):
        raise ValueError(
            f"input_range must be (low, high) with low < high, e.g. (-1, 1) or (0, 1), got {input_range!r}"
        )
    return float(input_range[0]), float(input_range[1])


def optional_weights(paths: Mapping[str, str | os.PathLike | None], what: str) -> dict[str, str] | None:
    """``paths`` (config key -> weights file) when every file exists; otherwise None, after one warning per run that
    names the config keys to set.

    Args:
        paths: the configured weights files by config key; empty or None where the user gave none.
        what: the metric and the files it needs, e.g. ``"FID (pytorch-fid's Inception weights)"``.
    """
    problems = {
        key: "is empty" if not path else f"is {str(path)!r}, which is not a file"
        for key, path in paths.items()
        if not (path and os.path.isfile(path))
    }
    if not problems:
        return {key: str(path) for key, path in paths.items()}
    keys = ",".join(sorted(paths))
    if keys not in _WARNED:
        _WARNED.add(keys)
        reasons = "; ".join(f"config key '{key}' {reason}" for key, reason in problems.items())
        warnings.warn(
            f"{what} is skipped: {reasons}. Give the local path of the weights (they cannot be downloaded here); "
            "the metric is never computed with random weights.",
            UserWarning,
            stacklevel=3,
        )
    return None


# --------------------------------------------------------------------------------------------------------------------
# handlers on [0, 1] images


class _UnitRangeHandler(IgniteMetricHandler):
    """An ``IgniteMetricHandler`` that maps the images from ``input_range`` onto [0, 1] before its metric.

    Both ``y_pred`` and ``y`` are images, unless ``targets_are_images`` is False (``y`` are label maps, passed on
    unchanged). ``skipped`` handlers (a feature network without weights) attach nothing, so the metric never appears
    in ``engine.state.metrics``.
    """

    targets_are_images: bool = True

    def __init__(
        self,
        metric_fn: Any,
        input_range: Sequence[float],
        output_transform: Callable,
        save_details: bool,
        skipped: bool = False,
    ) -> None:
        self.input_range = _check_range(input_range)
        self.skipped = skipped
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=save_details)

    def _unit(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        """A batch, or a list of channel-first images (a decollated batch), in [0, 1]."""
        if isinstance(images, (list, tuple)):
            return [to_unit_range(image, self.input_range) for image in images]
        return to_unit_range(images, self.input_range)

    def update(self, output: Sequence[torch.Tensor]) -> None:
        """Convert ``(y_pred, y)`` (``y`` only if it holds images) to [0, 1] and pass them to the metric."""
        if len(output) != 2:
            raise ValueError(f"output must be (y_pred, y), got {len(output)} items.")
        y_pred, y = output
        super().update((self._unit(y_pred), self._unit(y) if self.targets_are_images else y))

    def attach(self, engine: Any, name: str) -> None:  # type: ignore[override]
        """Attach to ``engine`` under ``name``, unless the metric is skipped."""
        if not self.skipped:
            super().attach(engine, name)


class SSIM(_UnitRangeHandler):
    """Mean per-image SSIM (MONAI ``SSIMMetric``, data range 1) of generated vs real images.

    Args:
        input_range: value range of both images, mapped onto [0, 1] first.
        spatial_dims: 2 for images ``(B, C, H, W)``, 3 for volumes.
        win_size: side of the Gaussian window.
        kernel_sigma: its standard deviation.
        output_transform: extracts ``(y_pred, y)`` = (generated, real), e.g. ``from_engine(["pred", "label"])``.
        save_details: keep each image's value in ``engine.state.metric_details``.
    """

    def __init__(
        self,
        input_range: Sequence[float] = (0.0, 1.0),
        spatial_dims: int = 2,
        win_size: int = 11,
        kernel_sigma: float = 1.5,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
    ) -> None:
        metric = SSIMMetric(spatial_dims=spatial_dims, data_range=1.0, win_size=win_size, kernel_sigma=kernel_sigma)
        super().__init__(metric, input_range, output_transform, save_details)


class PSNR(_UnitRangeHandler):
    """Mean per-image PSNR in dB (MONAI ``PSNRMetric(max_val=1.0)``); identical images give ``inf``.

    Args: as :class:`SSIM` (without the window).
    """

    def __init__(
        self,
        input_range: Sequence[float] = (0.0, 1.0),
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
    ) -> None:
        super().__init__(PSNRMetric(max_val=1.0), input_range, output_transform, save_details)


class RMSE(_UnitRangeHandler):
    """Mean per-image root mean squared error on [0, 1] images (MONAI ``RMSEMetric``).

    Args: as :class:`PSNR`.
    """

    def __init__(
        self,
        input_range: Sequence[float] = (0.0, 1.0),
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
    ) -> None:
        super().__init__(RMSEMetric(), input_range, output_transform, save_details)


# --------------------------------------------------------------------------------------------------------------------
# Fréchet distances


def _batch(images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """A batch as it is, or a list of channel-first images (a decollated batch) stacked into one."""
    return torch.stack(list(images)) if isinstance(images, (list, tuple)) else torch.as_tensor(images)


def _evaluate(network: nn.Module, images: torch.Tensor) -> Any:
    """``network(images)`` in eval mode and without gradients; the network is put back in its previous mode."""
    was_training = network.training
    try:
        network.eval()
        with torch.no_grad():
            return network(images)
    finally:
        network.train(was_training)


def _segmenter_ready(network: nn.Module, weights: str | None, weights_key: str, checkpoint_keys: Sequence[str]) -> bool:
    """Whether a segmentation network's metric can run: ``weights`` None (the network as given) or a file, whose
    weights are then loaded into ``network``; False, after one warning naming ``weights_key``, if it is empty or
    missing."""
    if weights is None:
        return True
    paths = optional_weights({weights_key: weights}, _SEGMENTER_METRICS)
    if paths:
        load_network_weights(network, paths[weights_key], keys=tuple(checkpoint_keys), config_key=weights_key)
    return paths is not None


class EncoderFeatures(nn.Module):
    """Features of one layer of a network, averaged over space: images -> ``(B, C)``.

    For a domain Fréchet distance: ``layer`` names a submodule of ``network`` (``dict(network.named_modules())``,
    e.g. the bottleneck of a segmentation U-Net); its output is captured by a forward hook while the whole network
    runs. ``layer=None`` takes the network's own output. The network runs in eval mode, without gradients, and is put
    back in its previous mode afterwards.
    """

    def __init__(self, network: nn.Module, layer: str | None = None) -> None:
        super().__init__()
        modules = dict(network.named_modules())
        if layer is not None and (not layer or layer not in modules):
            names = [name for name in modules if name]
            raise ValueError(
                f"layer {layer!r} is not a submodule of {type(network).__name__}; its submodules are "
                f"{names[:20]}{' ...' if len(names) > 20 else ''}"
            )
        self.network = network
        self.layer = layer

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        captured: list[torch.Tensor] = []
        hook = None
        if self.layer is not None:
            hook = self.network.get_submodule(self.layer).register_forward_hook(
                lambda _module, _inputs, output: captured.append(output)
            )
        try:
            output = _evaluate(self.network, images)
        finally:
            if hook is not None:
                hook.remove()
        features = captured[0] if captured else output
        if not isinstance(features, torch.Tensor) or features.ndim < 2:
            raise ValueError(f"layer {self.layer!r} gives {type(features).__name__}, not a (B, C, ...) tensor")
        return features.flatten(2).mean(dim=2) if features.ndim > 2 else features


class FrechetDistanceMetric(Cumulative):
    """Fréchet distance between the features of all generated and all real images seen since the last reset.

    Each call adds ``feature_network(y_pred)`` and ``feature_network(y)`` (``(B, F)``, run without gradients on the
    network's device) to two buffers; :meth:`aggregate` gives MONAI's ``get_fid_score`` of them (means and
    covariances in float64, scipy ``sqrtm``). Needs at least 2 images of each; with fewer images than feature
    dimensions the covariances are singular and the value is biased upwards, as any FID on small sets.
    """

    def __init__(self, feature_network: nn.Module | None) -> None:
        super().__init__()
        self.feature_network = feature_network

    def _features(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """``(B, F)`` features of a batch (or of a list of channel-first images)."""
        if self.feature_network is None:
            raise RuntimeError("this Fréchet distance is skipped (no feature network weights) and cannot be computed")
        batch = _batch(images)
        parameter = next(self.feature_network.parameters(), None)
        if parameter is not None:
            batch = batch.to(parameter.device)
        with torch.no_grad():
            return self.feature_network(batch.float()).detach().float().cpu()

    def __call__(self, y_pred: torch.Tensor | Sequence[torch.Tensor], y: torch.Tensor | Sequence[torch.Tensor]) -> None:
        self.extend(self._features(y_pred), self._features(y))

    def aggregate(self) -> torch.Tensor:
        """The Fréchet distance of the buffered generated vs real features (a scalar tensor)."""
        buffers = self.get_buffer()
        if buffers is None or min(len(buffers[0]), len(buffers[1])) < 2:
            count = 0 if buffers is None else min(len(buffers[0]), len(buffers[1]))
            raise ValueError(f"a Fréchet distance needs at least 2 generated and 2 real images, got {count}")
        return get_fid_score(buffers[0], buffers[1]).float()


class FrechetDistance(_UnitRangeHandler):
    """Handler of :class:`FrechetDistanceMetric` with any feature network taking [0, 1] images (None: skipped).

    Args:
        feature_network: images ``(B, C, H, W)`` in [0, 1] -> ``(B, F)`` features; None skips the metric.
        input_range: value range of both images, mapped onto [0, 1] first.
        output_transform: extracts ``(y_pred, y)`` = (generated, real), e.g. ``from_engine(["pred", "label"])``.
    """

    def __init__(
        self,
        feature_network: nn.Module | None,
        input_range: Sequence[float] = (0.0, 1.0),
        output_transform: Callable = lambda x: x,
    ) -> None:
        super().__init__(
            FrechetDistanceMetric(feature_network),
            input_range,
            output_transform,
            save_details=False,
            skipped=feature_network is None,
        )


class FrechetInceptionDistance(FrechetDistance):
    """FID as pytorch-fid computes it (Inception pool3, images resized to 299, grey replicated to RGB), from the local
    weights file ``weights``; skipped with one warning naming ``weights_key`` when it is empty or missing.

    Values are comparable to published FIDs only for the same images, sizes and sample counts; FID on a few hundred
    images is biased upwards.

    Args:
        weights: path of ``pt_inception-2015-12-05-6726825d.pth``.
        input_range: value range of both images.
        output_transform: extracts ``(y_pred, y)``.
        weights_key: the config key that sets ``weights``, named in the warning.
    """

    def __init__(
        self,
        weights: str | None = "",
        input_range: Sequence[float] = (0.0, 1.0),
        output_transform: Callable = lambda x: x,
        weights_key: str = "fid_weights",
    ) -> None:
        paths = optional_weights({weights_key: weights}, "FID (pytorch-fid's Inception weights)")
        super().__init__(load_fid_inception(paths[weights_key]) if paths else None, input_range, output_transform)


class DomainFrechetDistance(FrechetDistance):
    """Fréchet distance of a segmentation network's encoder features, a domain-specific stand-in for FID.

    Not comparable to published FID (another network, another feature space) nor between networks: it compares
    synthetic and real images of one data set as one network trained on the real images sees them.

    Args:
        network: the segmentation network, taking [0, 1] images as in its training.
        layer: the submodule whose output (averaged over space) is the feature, e.g. the U-Net's bottleneck; None
            takes the network's output.
        weights: None uses ``network`` as given (its weights already loaded); a path loads a checkpoint
            (``load_network_weights``: a state dict or one under ``checkpoint_keys``); an empty or missing path skips
            the metric with one warning naming ``weights_key``.
        input_range: value range of both images.
        output_transform: extracts ``(y_pred, y)``.
        weights_key: the config key that sets ``weights``.
        checkpoint_keys: keys of a bundle checkpoint dict that may hold the network's state dict.
    """

    def __init__(
        self,
        network: nn.Module,
        layer: str | None = None,
        weights: str | None = None,
        input_range: Sequence[float] = (0.0, 1.0),
        output_transform: Callable = lambda x: x,
        weights_key: str = "segmenter_weights",
        checkpoint_keys: Sequence[str] = ("model", "network"),
    ) -> None:
        features = EncoderFeatures(network, layer)
        ready = _segmenter_ready(network, weights, weights_key, checkpoint_keys)
        super().__init__(features if ready else None, input_range, output_transform)


# --------------------------------------------------------------------------------------------------------------------
# mIoU of a segmentation network on the generated images


class SegmentationIoUMetric(Cumulative):
    """Dataset-level mean IoU of a segmentation network's predictions on images against their label maps.

    Each call segments the images ``y_pred`` (``(B, C, H, W)`` in [0, 1], or a list of channel-first images) with
    ``network`` (eval mode, no gradients, on the network's device; it outputs logits ``(B, num_classes, H, W)``),
    takes the argmax, and buffers each image's per-class true positives, false positives and false negatives against
    the label maps ``y`` (MONAI ``get_confusion_matrix``, background included). :meth:`aggregate` gives the standard
    semantic-segmentation mIoU, as OASIS reports it: per class, IoU = sum TP / sum (TP + FP + FN) over all images,
    then the mean over the classes that occur (in labels or predictions); not the mean of per-image IoUs.

    Args:
        network: the segmentation network; None means skipped (calling raises).
        num_classes: every class, background included (at least 2).
    """

    def __init__(self, network: nn.Module | None, num_classes: int) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(
                f"num_classes must be an integer >= 2 (every class, background included), got {num_classes!r}"
            )
        self.network = network
        self.num_classes = num_classes

    def _one_hot_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Label maps, integer ``(B, 1, H, W)`` or one-hot ``(B, num_classes, H, W)``, as a float one-hot."""
        labels = labels.detach().cpu()
        if labels.ndim < 3 or labels.shape[1] not in (1, self.num_classes):
            raise ValueError(
                f"label maps must be integer (B, 1, H, W) or one-hot (B, num_classes={self.num_classes}, H, W), "
                f"got shape {list(labels.shape)}"
            )
        if labels.shape[1] == 1:
            bad = labels[(labels < 0) | (labels >= self.num_classes) | (labels != labels.round())]
            if bad.numel():
                raise ValueError(
                    f"label maps must hold integer classes 0 .. {self.num_classes - 1} (num_classes="
                    f"{self.num_classes}), got the value {bad[0].item()}"
                )
            return one_hot(labels.long(), self.num_classes).float()
        if not (((labels == 0) | (labels == 1)).all() and (labels.sum(dim=1) == 1).all()):
            raise ValueError(
                f"one-hot label maps (B, num_classes={self.num_classes}, H, W) must hold 0/1 with exactly one class "
                "per pixel"
            )
        return labels.float()

    def __call__(self, y_pred: torch.Tensor | Sequence[torch.Tensor], y: torch.Tensor | Sequence[torch.Tensor]) -> None:
        if self.network is None:
            raise RuntimeError("this mIoU is skipped (no segmentation network weights) and cannot be computed")
        labels = self._one_hot_labels(_batch(y))
        images = _batch(y_pred).float()
        parameter = next(self.network.parameters(), None)
        logits = _evaluate(self.network, images if parameter is None else images.to(parameter.device))
        if not isinstance(logits, torch.Tensor) or logits.ndim != labels.ndim or logits.shape[1] != self.num_classes:
            shape = list(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(
                f"the segmentation network must output logits (B, num_classes={self.num_classes}, H, W), got {shape}"
            )
        if logits.shape[0] != labels.shape[0] or logits.shape[2:] != labels.shape[2:]:
            raise ValueError(
                f"the segmentation network's logits {list(logits.shape)} do not match the label maps "
                f"{list(labels.shape)} in batch size or spatial shape"
            )
        prediction = one_hot(logits.detach().argmax(dim=1, keepdim=True).cpu(), self.num_classes).float()
        self.extend(get_confusion_matrix(prediction, labels, include_background=True))

    def per_class(self) -> torch.Tensor:
        """IoU of each class over all images seen, ``(num_classes,)``; NaN for a class in neither labels nor
        predictions."""
        confusion = self.get_buffer()
        if confusion is None or len(confusion) == 0:
            raise ValueError("the mIoU has seen no images: call it with (images, label maps) first")
        tp, fp, _, fn = confusion.double().sum(dim=0).unbind(dim=-1)
        union = tp + fp + fn
        return torch.where(union > 0, tp / union.clamp(min=1), torch.nan).float()

    def aggregate(self) -> torch.Tensor:
        """The mean of :meth:`per_class` over the classes that occur (a scalar tensor)."""
        return self.per_class().nanmean()


class SegmentationMeanIoU(_UnitRangeHandler):
    """mIoU of a segmentation network on the generated images against the label maps they were made from.

    The network is one trained on the real (image, label map) pairs of this data set, so the value says how
    faithful the generated images are to their label maps *for that network*. It is not comparable to the mIoU
    published for OASIS (another segmenter, other data), nor between networks.

    Args:
        network: the segmentation network, taking [0, 1] images and giving logits ``(B, num_classes, H, W)``.
        num_classes: every class, background included.
        weights: None uses ``network`` as given (its weights already loaded); a path loads a checkpoint
            (``load_network_weights``: a state dict or one under ``checkpoint_keys``); an empty or missing path skips
            the metric with one warning naming ``weights_key``.
        input_range: value range of the generated images, mapped onto [0, 1]; the label maps are passed unchanged.
        output_transform: extracts ``(y_pred, y)`` = (generated images, label maps), e.g.
            ``from_engine(["pred", "image"])``.
        weights_key: the config key that sets ``weights``.
        checkpoint_keys: keys of a bundle checkpoint dict that may hold the network's state dict.
    """

    targets_are_images = False

    def __init__(
        self,
        network: nn.Module,
        num_classes: int,
        weights: str | None = None,
        input_range: Sequence[float] = (0.0, 1.0),
        output_transform: Callable = lambda x: x,
        weights_key: str = "segmenter_weights",
        checkpoint_keys: Sequence[str] = ("model", "network"),
    ) -> None:
        ready = _segmenter_ready(network, weights, weights_key, checkpoint_keys)
        super().__init__(
            SegmentationIoUMetric(network if ready else None, num_classes),
            input_range,
            output_transform,
            save_details=False,
            skipped=not ready,
        )


# --------------------------------------------------------------------------------------------------------------------
# LPIPS


class LPIPSMetric(RegressionMetric):
    """Per-image LPIPS distance of ``(B, C, H, W)`` images in [0, 1] (``(B, 1)``), reduced as MONAI's metrics.

    Args:
        network: a loaded :class:`~common.networks.perceptual.LPIPSNetwork`; None means skipped (calling raises).
        reduction: MONAI reduction of the per-image values.
    """

    def __init__(self, network: LPIPSNetwork | None, reduction: MetricReduction | str = MetricReduction.MEAN) -> None:
        super().__init__(reduction=reduction)
        self.network = network

    def _compute_metric(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.network is None:
            raise RuntimeError("LPIPS is skipped (no weights) and cannot be computed")
        parameter = next(self.network.parameters())
        with torch.no_grad():
            distance = self.network(y_pred.float().to(parameter.device), y.float().to(parameter.device))
        return distance.to(y_pred.device).unsqueeze(1)


class LPIPS(_UnitRangeHandler):
    """Mean per-image LPIPS v0.1 between generated and real images (lower is closer), from local weights only.

    Skipped with one warning naming the config keys when either file is empty or missing.

    Args:
        backbone_weights: torchvision's ImageNet ``alexnet``/``vgg16`` state dict.
        linear_weights: the lpips package's ``weights/v0.1/<net>.pth`` linear heads.
        net: ``"alex"`` (lpips' default) or ``"vgg"`` (the seed's code).
        input_range: value range of both images (mapped to [0, 1], then to LPIPS' [-1, 1] inside the network).
        output_transform: extracts ``(y_pred, y)``.
        save_details: keep each image's value in ``engine.state.metric_details``.
        backbone_key: config key of ``backbone_weights``, named in the warning.
        linear_key: config key of ``linear_weights``.
    """

    def __init__(
        self,
        backbone_weights: str | None = "",
        linear_weights: str | None = "",
        net: str = "alex",
        input_range: Sequence[float] = (0.0, 1.0),
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
        backbone_key: str = "lpips_backbone_weights",
        linear_key: str = "lpips_weights",
    ) -> None:
        paths = optional_weights(
            {backbone_key: backbone_weights, linear_key: linear_weights},
            f"LPIPS (torchvision's {net} ImageNet weights and the lpips v0.1 {net} linear heads)",
        )
        network = load_lpips(paths[backbone_key], paths[linear_key], net) if paths else None
        super().__init__(LPIPSMetric(network), input_range, output_transform, save_details, skipped=network is None)
