"""Tests of common.engines' OASIS losses, LabelMix, the wavelet critic's losses, R1 and the shape-consistency loss."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional

from common.engines import (
    LabelMixLoss,
    OASISDiscriminatorLoss,
    OASISGeneratorLoss,
    ShapeConsistencyLoss,
    class_balanced_weights,
    label_mix,
    n_plus_one_targets,
    nonsaturating_discriminator_loss,
    nonsaturating_generator_loss,
    oasis_cross_entropy,
    r1_penalty,
)


def _onehot(classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    return functional.one_hot(classes, num_classes).permute(0, 3, 1, 2).float()


def _random_label(batch: int = 2, num_classes: int = 5, size: int = 8, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return _onehot(torch.randint(0, num_classes, (batch, size, size), generator=generator), num_classes)


# a 1 x 2 x 2 label with classes [[0, 0], [0, 1]] out of 3 (class 2 absent)
HAND_LABEL = _onehot(torch.tensor([[[0, 0], [0, 1]]]), 3)


# ----------------------------------------------------------------------------------------------------------------
# class balancing and targets


def test_class_balanced_weights_known_values() -> None:
    """occ = (3, 1, 0), two classes present, B*H*W = 4: w_0 = 4 / (2 * 3), w_1 = 4 / (2 * 1)."""
    weights = class_balanced_weights(HAND_LABEL)
    torch.testing.assert_close(weights, torch.tensor([[[2 / 3, 2 / 3], [2 / 3, 2.0]]]))


def test_class_balanced_weights_ignore_background() -> None:
    """Background removed before counting: one class present, w_1 = 4 / (1 * 1), w_0 = 0."""
    weights = class_balanced_weights(HAND_LABEL, ignore_background=True)
    torch.testing.assert_close(weights, torch.tensor([[[0.0, 0.0], [0.0, 4.0]]]))


def test_class_balanced_weights_are_counted_over_the_batch() -> None:
    label = _random_label(batch=3, num_classes=4, size=6)
    weights = class_balanced_weights(label)
    classes = label.argmax(1)
    present = classes.unique()
    totals = torch.stack([weights[classes == c].sum() for c in present])
    torch.testing.assert_close(totals, torch.full_like(totals, classes.numel() / len(present)))  # equal per class
    torch.testing.assert_close(weights.mean(), torch.tensor(1.0))


def test_n_plus_one_targets() -> None:
    torch.testing.assert_close(n_plus_one_targets(HAND_LABEL, for_real=True), torch.tensor([[[1, 1], [1, 2]]]))
    torch.testing.assert_close(n_plus_one_targets(HAND_LABEL, for_real=False), torch.zeros(1, 2, 2, dtype=torch.long))


def test_oasis_cross_entropy_real_is_balanced_and_fake_is_not() -> None:
    logits = torch.randn(1, 4, 2, 2, generator=torch.Generator().manual_seed(0))
    log_probs = logits.log_softmax(dim=1)[0]
    real = -(
        log_probs[1, :, :] * torch.tensor([[1.0, 1.0], [1.0, 0.0]]) + log_probs[2] * torch.tensor([[0, 0], [0, 1]])
    )
    weights = class_balanced_weights(HAND_LABEL)[0]
    torch.testing.assert_close(oasis_cross_entropy(logits, HAND_LABEL, for_real=True), (real * weights).mean())
    torch.testing.assert_close(oasis_cross_entropy(logits, HAND_LABEL, for_real=False), -log_probs[0].mean())
    ignored = oasis_cross_entropy(logits, HAND_LABEL, for_real=True, ignore_background=True)
    torch.testing.assert_close(ignored, real[1, 1] * 4 / 4)


def test_discriminator_and_generator_losses() -> None:
    label = _random_label()
    real_logits, fake_logits = torch.randn(2, 6, 8, 8), torch.randn(2, 6, 8, 8)
    d_loss = OASISDiscriminatorLoss()(real_logits, fake_logits, label)
    expected = oasis_cross_entropy(fake_logits, label, False) + oasis_cross_entropy(real_logits, label, True)
    torch.testing.assert_close(d_loss, expected)
    torch.testing.assert_close(OASISGeneratorLoss()(fake_logits, label), oasis_cross_entropy(fake_logits, label, True))
    ignored = OASISGeneratorLoss(ignore_background=True)(fake_logits, label)
    torch.testing.assert_close(ignored, oasis_cross_entropy(fake_logits, label, True, ignore_background=True))
    # a perfect discriminator: real pixels to their class + 1, fake pixels to 0
    perfect_real = 50 * functional.one_hot(n_plus_one_targets(label, True), 6).permute(0, 3, 1, 2).float()
    perfect_fake = 50 * functional.one_hot(n_plus_one_targets(label, False), 6).permute(0, 3, 1, 2).float()
    assert OASISDiscriminatorLoss()(perfect_real, perfect_fake, label) < 1e-6
    assert OASISGeneratorLoss()(perfect_fake, label) > 10  # the generator loses against it


def test_logit_shape_errors() -> None:
    label = _random_label(num_classes=5)
    with pytest.raises(ValueError, match=r"num_classes \+ 1 channels"):
        OASISGeneratorLoss()(torch.zeros(2, 5, 8, 8), label)
    with pytest.raises(ValueError, match=r"\[2, 6, 8, 8\]"):
        OASISDiscriminatorLoss()(torch.zeros(2, 6, 8, 8), torch.zeros(2, 6, 4, 4), label)
    with pytest.raises(ValueError, match=r"\(B, N, H, W\)"):
        class_balanced_weights(torch.zeros(5, 8, 8))


# ----------------------------------------------------------------------------------------------------------------
# LabelMix


def test_label_mix_mask_is_constant_per_class() -> None:
    label = _random_label(batch=3, num_classes=8, size=16)
    real, fake = torch.randn(3, 1, 16, 16), torch.randn(3, 1, 16, 16)
    mixed, mask = label_mix(real, fake, label, generator=torch.Generator().manual_seed(0))
    assert mask.shape == (3, 1, 16, 16) and set(mask.unique().tolist()) == {0.0, 1.0}
    classes = label.argmax(1, keepdim=True)
    for c in classes.unique():
        assert mask[classes == c].unique().numel() == 1  # one bit per class, for the whole batch
    torch.testing.assert_close(mixed, torch.where(mask.bool(), real, fake))
    _, mask_again = label_mix(real, fake, label, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(mask_again, mask, rtol=0, atol=0)


def test_label_mix_shape_errors() -> None:
    label = _random_label()
    with pytest.raises(ValueError, match="same shape"):
        label_mix(torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 4, 4), label)
    with pytest.raises(ValueError, match="same shape"):
        label_mix(torch.zeros(3, 1, 8, 8), torch.zeros(3, 1, 8, 8), label)


def test_label_mix_loss_values() -> None:
    """Zero for a per-pixel (1x1) discriminator, which mixes its logits exactly as the images; > 0 for a 3x3 one."""
    torch.manual_seed(0)
    label = _random_label(batch=2, num_classes=6, size=8)
    real, fake = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    mixed, mask = label_mix(real, fake, label, generator=torch.Generator().manual_seed(1))
    loss = LabelMixLoss(weight=5.0)
    pixelwise = nn.Conv2d(1, 7, 1)
    assert loss(pixelwise(mixed), pixelwise(real), pixelwise(fake), mask) < 1e-10
    spatial = nn.Conv2d(1, 7, 3, padding=1)
    d_mixed, d_real, d_fake = spatial(mixed), spatial(real), spatial(fake)
    value = loss(d_mixed, d_real, d_fake, mask)
    torch.testing.assert_close(value, 5.0 * (d_mixed - (mask * d_real + (1 - mask) * d_fake)).square().mean())
    assert value > 0
    value.backward()
    assert spatial.weight.grad is not None and spatial.weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------------------------
# the unconditional critic


def test_nonsaturating_losses() -> None:
    zeros = torch.zeros(4, 1)
    torch.testing.assert_close(nonsaturating_discriminator_loss(zeros, zeros), torch.tensor(2 * math.log(2)))
    torch.testing.assert_close(nonsaturating_generator_loss(zeros), torch.tensor(math.log(2)))
    real, fake = torch.randn(4, 1), torch.randn(4, 1)
    bce = functional.binary_cross_entropy_with_logits
    expected = bce(real, torch.ones_like(real)) + bce(fake, torch.zeros_like(fake))
    torch.testing.assert_close(nonsaturating_discriminator_loss(real, fake), expected)
    torch.testing.assert_close(nonsaturating_generator_loss(fake), bce(fake, torch.ones_like(fake)))
    assert nonsaturating_discriminator_loss(torch.full((2, 1), 40.0), torch.full((2, 1), -40.0)) < 1e-12


def test_r1_penalty_of_a_linear_critic() -> None:
    """D(x) = w . x + b has gradient w for every image: the penalty is gamma * |w|^2, its gradient 2 gamma w."""
    critic = nn.Sequential(nn.Flatten(), nn.Linear(12, 1))
    real = torch.randn(3, 3, 2, 2)
    penalty = r1_penalty(critic, real, gamma=10.0)
    weight = critic[1].weight
    torch.testing.assert_close(penalty, 10.0 * weight.detach().square().sum())
    penalty.backward()
    torch.testing.assert_close(weight.grad, 20.0 * weight.detach())
    assert not real.requires_grad


def test_r1_penalty_of_a_quadratic_critic() -> None:
    """D(x) = sum x^2 / 2 has gradient x: the penalty is gamma * mean_b |x_b|^2."""

    class Quadratic(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 0.5 * x.square().flatten(1).sum(1, keepdim=True)

    real = torch.randn(4, 1, 3, 3)
    torch.testing.assert_close(r1_penalty(Quadratic(), real, gamma=2.0), 2.0 * real.square().flatten(1).sum(1).mean())


# ----------------------------------------------------------------------------------------------------------------
# shape consistency


def test_shape_loss_has_a_gradient_wrt_the_image() -> None:
    label = torch.zeros(2, 1, 8, 8, dtype=torch.long)
    label[:, :, 2:6, 2:6] = 3
    for mode in ("bce", "dice"):
        image = torch.zeros(2, 1, 8, 8).uniform_(-1, 1).requires_grad_(True)
        ShapeConsistencyLoss(mode=mode)(image, label).backward()
        assert image.grad is not None and image.grad.abs().sum() > 0, mode


def test_shape_loss_values() -> None:
    classes = torch.zeros(1, 8, 8, dtype=torch.long)
    classes[:, 2:6, 2:6] = 2
    onehot, integer = _onehot(classes, 3), classes[:, None]
    matching = torch.where(integer > 0, 1.0, -1.0)
    loss = ShapeConsistencyLoss(threshold=0.0, temperature=0.1)
    expected = functional.binary_cross_entropy_with_logits(matching / 0.1, (integer > 0).float())
    torch.testing.assert_close(loss(matching, integer), expected)
    torch.testing.assert_close(loss(matching, onehot), expected)  # one-hot and integer labels agree
    assert loss(matching, integer) < 1e-3 < loss(-matching, integer)
    dice = ShapeConsistencyLoss(threshold=0.0, temperature=0.1, mode="dice", weight=2.0)
    assert dice(matching.repeat(1, 3, 1, 1), integer) < 1e-3 < dice(-matching, integer)  # channel mean of RGB


def test_shape_loss_bad_arguments() -> None:
    with pytest.raises(ValueError, match="temperature"):
        ShapeConsistencyLoss(temperature=0.0)
    with pytest.raises(ValueError, match="mode"):
        ShapeConsistencyLoss(mode="l1")
    with pytest.raises(ValueError, match="same batch and size"):
        ShapeConsistencyLoss()(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 4, 4))
