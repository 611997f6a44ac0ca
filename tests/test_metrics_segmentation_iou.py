"""Tests of the segmentation mIoU in common.metrics_synthesis: dataset-level IoU per class, absent classes, the
handler's input range, and skipping (with one warning) or loading the segmentation network's weights."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from ignite.engine import Engine
from monai.handlers import from_engine
from torch import nn

import common.metrics_synthesis as synthesis
from common.metrics_synthesis import SegmentationIoUMetric, SegmentationMeanIoU


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    """Each test is a new run: no skip warning given yet."""
    monkeypatch.setattr(synthesis, "_WARNED", set())


class ReadClass(nn.Module):
    """A 'segmenter' that reads the class an image encodes: pixel value k / (N - 1) gives the one-hot logits of k."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.modes: list[bool] = []  # training mode at each call

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        classes = (images[:, 0] * (self.num_classes - 1)).round().long()
        return nn.functional.one_hot(classes, self.num_classes).permute(0, 3, 1, 2).float()


def _encode(classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Images in [0, 1] that :class:`ReadClass` segments as ``classes`` ``(B, 1, H, W)``."""
    return classes.float() / (num_classes - 1)


def _run(handler: SegmentationMeanIoU, batches: list[dict]) -> dict:
    engine = Engine(lambda _engine, batch: batch)
    handler.attach(engine, "miou")
    engine.run(batches, max_epochs=1)
    return engine.state.metrics


OUT = from_engine(["pred", "label"])

# Two 2 x 2 images (label -> prediction), 4 classes of which class 3 occurs nowhere:
#   A: 0->0, 0->0, 1->1, 1->0    B: 2->2, 2->1, 2->1, 0->0
# summed over both: class 0 TP 3 FP 1 FN 0 -> 3/4; class 1 TP 1 FP 2 FN 1 -> 1/4; class 2 TP 1 FP 0 FN 2 -> 1/3.
# Dataset-level mIoU (3/4 + 1/4 + 1/3) / 3 = 4/9; the mean of per-image mIoUs would be
# (mean(2/3, 1/2) + mean(1, 0, 1/3)) / 2 = (7/12 + 4/9) / 2 = 37/72.
LABELS = torch.tensor([[[[0, 0], [1, 1]]], [[[2, 2], [2, 0]]]])
PREDICTED = torch.tensor([[[[0, 0], [1, 0]]], [[[2, 1], [1, 0]]]])


def test_perfect_segmentation_gives_miou_1():
    labels = torch.arange(4).repeat(12).reshape(3, 1, 4, 4)
    network = ReadClass(4).train()
    metric = SegmentationIoUMetric(network, num_classes=4)
    metric(_encode(labels[:2], 4), labels[:2])  # integer label maps
    metric(list(_encode(labels[2:], 4)), list(nn.functional.one_hot(labels[2:, 0], 4).permute(0, 3, 1, 2)))  # one-hot
    assert metric.aggregate().item() == pytest.approx(1.0)
    torch.testing.assert_close(metric.per_class(), torch.ones(4))
    assert network.modes == [False, False] and network.training  # run in eval mode, put back in training mode


def test_dataset_level_miou_of_a_known_confusion_excludes_absent_classes():
    metric = SegmentationIoUMetric(ReadClass(4), num_classes=4)
    metric(_encode(PREDICTED, 4), LABELS)
    per_class = metric.per_class()
    torch.testing.assert_close(per_class[:3], torch.tensor([3 / 4, 1 / 4, 1 / 3]))
    assert math.isnan(per_class[3])  # class 3 in neither labels nor predictions
    assert metric.aggregate().item() == pytest.approx(4 / 9)
    assert metric.aggregate().item() != pytest.approx(37 / 72)  # not the per-image mean
    metric.reset()
    with pytest.raises(ValueError, match="has seen no images"):
        metric.aggregate()


def test_handler_maps_only_the_images_from_input_range():
    """Generated images in [-1, 1] are mapped to [0, 1]; integer label maps are passed unchanged."""
    handler = SegmentationMeanIoU(ReadClass(4), num_classes=4, input_range=(-1, 1), output_transform=OUT)
    images = _encode(PREDICTED, 4) * 2 - 1
    batches = [{"pred": images[i : i + 1], "label": LABELS[i : i + 1]} for i in range(2)]
    assert _run(handler, batches)["miou"] == pytest.approx(4 / 9)


def test_missing_weights_skip_with_one_warning_naming_the_key(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        empty = SegmentationMeanIoU(ReadClass(4), 4, weights="", output_transform=OUT)
        missing = SegmentationMeanIoU(ReadClass(4), 4, weights=str(tmp_path / "seg.pt"), output_transform=OUT)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(messages) == 1, messages  # once per run
    assert "mIoU" in messages[0] and "config key 'segmenter_weights' is empty" in messages[0]
    assert empty.skipped and missing.skipped
    assert _run(empty, [{"pred": _encode(PREDICTED, 4), "label": LABELS}]) == {}  # attached nothing
    with pytest.raises(RuntimeError, match="skipped"):
        SegmentationIoUMetric(None, 4)(_encode(PREDICTED, 4), LABELS)


def test_weights_loaded_from_a_checkpoint_dict(tmp_path):
    trained = nn.Conv2d(1, 3, 1)
    torch.save({"model": trained.state_dict(), "optimizer": {}}, tmp_path / "seg.pt")
    network = nn.Conv2d(1, 3, 1)
    nn.init.zeros_(network.weight)
    handler = SegmentationMeanIoU(network, 3, weights=str(tmp_path / "seg.pt"), output_transform=OUT)
    assert not handler.skipped
    torch.testing.assert_close(network.weight, trained.weight)
    value = _run(handler, [{"pred": torch.rand(2, 1, 4, 4), "label": torch.randint(0, 3, (2, 1, 4, 4))}])["miou"]
    assert 0 <= value <= 1


def test_bad_network_output_and_labels_rejected():
    images, labels = _encode(PREDICTED, 4), LABELS
    with pytest.raises(ValueError, match=r"logits \(B, num_classes=4, H, W\), got \[2, 3, 2, 2\]"):
        SegmentationIoUMetric(nn.Conv2d(1, 3, 1), num_classes=4)(images, labels)
    metric = SegmentationIoUMetric(ReadClass(4), num_classes=4)
    with pytest.raises(ValueError, match=r"integer classes 0 \.\. 3 \(num_classes=4\), got the value 4"):
        metric(images, labels + 2)
    with pytest.raises(ValueError, match=r"integer \(B, 1, H, W\) or one-hot \(B, num_classes=4, H, W\)"):
        metric(images, torch.zeros(2, 3, 2, 2))
    with pytest.raises(ValueError, match="must hold 0/1 with exactly one class per pixel"):
        metric(images, torch.full((2, 4, 2, 2), 0.25))
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        SegmentationIoUMetric(ReadClass(4), num_classes=1)
