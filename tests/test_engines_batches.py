"""PlainTensorBatch: a supervised trainer's batch without MetaTensor metadata tracking."""

from __future__ import annotations

import torch
from monai.data import MetaTensor

from common.engines import PlainTensorBatch


def test_metatensors_become_plain_tensors_with_the_same_values() -> None:
    image = MetaTensor(torch.rand(2, 1, 8, 8), meta={"filename_or_obj": "a.png"})
    label = MetaTensor((torch.rand(2, 1, 8, 8) > 0.5).float())
    plain_image, plain_label = PlainTensorBatch()({"image": image, "label": label}, torch.device("cpu"))
    assert type(plain_image) is torch.Tensor and type(plain_label) is torch.Tensor
    assert torch.equal(plain_image, image.as_tensor()) and torch.equal(plain_label, label.as_tensor())


def test_a_batch_without_label_and_plain_tensors_pass_through() -> None:
    image = torch.rand(1, 1, 4, 4)
    plain_image, plain_label = PlainTensorBatch()({"image": image}, torch.device("cpu"))
    assert plain_image is image and plain_label is None
