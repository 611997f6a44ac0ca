"""Losses of OASIS semantic image synthesis and of the optional wavelet critic (``models/losses.py`` of OASIS/USIS).

* The OASIS discriminator is an (N+1)-class segmenter: channel 0 of its logits is "fake", channel ``k + 1`` is class
  ``k``. Real images are trained to their label (``argmax + 1``) with a class-balanced cross-entropy, generated
  images to "fake" with a plain one; the generator is trained to make its images segment as their label
  (``OASISDiscriminatorLoss``, ``OASISGeneratorLoss``).
* LabelMix mixes real and generated images class by class and asks the discriminator's logits to mix the same way
  (``label_mix``, ``LabelMixLoss``).
* The wavelet critic (``common.networks.WaveletDiscriminator``) is trained with the non-saturating loss and the R1
  gradient penalty (``nonsaturating_*_loss``, ``r1_penalty``).
* ``ShapeConsistencyLoss`` is a differentiable replacement for TWWinde's mask loss, which had no gradient.

All label maps are one-hot, (B, N, H, W), background (class 0) included, as the generator takes them.
"""

from __future__ import annotations

from typing import Literal

import torch
from monai.losses import DiceLoss
from torch import Tensor, nn
from torch.nn import functional

__all__ = [
    "LabelMixLoss",
    "OASISDiscriminatorLoss",
    "OASISGeneratorLoss",
    "ShapeConsistencyLoss",
    "class_balanced_weights",
    "label_mix",
    "n_plus_one_targets",
    "nonsaturating_discriminator_loss",
    "nonsaturating_generator_loss",
    "oasis_cross_entropy",
    "r1_penalty",
]


def _check_label(label_onehot: Tensor) -> None:
    if label_onehot.dim() != 4:
        raise ValueError(f"Expected a one-hot label map of shape (B, N, H, W), got {list(label_onehot.shape)}.")


def class_balanced_weights(label_onehot: Tensor, ignore_background: bool = False) -> Tensor:
    """Per-pixel weights (B, H, W) of OASIS's class-balanced cross-entropy, computed over the batch.

    With ``occ_c`` the number of pixels of class ``c`` in the batch and ``n_present`` the number of classes that
    occur, a pixel of class ``c`` weighs ``w_c = (B * H * W) / (n_present * occ_c)``: every present class gets the
    same total weight and the weights average 1 over classes (``get_class_balancing``). With ``ignore_background``
    (OASIS's ``contain_dontcare_label``) class 0 is removed before counting and its pixels weigh 0.
    """
    _check_label(label_onehot)
    occurrence = label_onehot.detach().sum(dim=(0, 2, 3))
    if ignore_background:
        occurrence[0] = 0
    present = occurrence > 0
    n_present = present.sum().clamp(min=1)
    pixels = label_onehot.shape[0] * label_onehot.shape[2] * label_onehot.shape[3]
    coefficients = torch.where(present, pixels / (n_present * occurrence.clamp(min=1)), torch.zeros_like(occurrence))
    return coefficients[label_onehot.argmax(dim=1)]


def n_plus_one_targets(label_onehot: Tensor, for_real: bool) -> Tensor:
    """Class-index targets (B, H, W) of the (N+1)-class discriminator: ``argmax + 1`` for real, 0 ("fake") else."""
    _check_label(label_onehot)
    classes = label_onehot.argmax(dim=1)
    return classes + 1 if for_real else torch.zeros_like(classes)


def oasis_cross_entropy(
    logits: Tensor, label_onehot: Tensor, for_real: bool, ignore_background: bool = False
) -> Tensor:
    """OASIS's (N+1)-class cross-entropy (``losses_computer.loss``).

    ``for_real``: the mean of ``CE(logits, argmax + 1)`` weighted by ``class_balanced_weights``; otherwise the plain
    mean of ``CE(logits, 0)`` (no balancing for the fake target).
    """
    _check_label(label_onehot)
    expected = [label_onehot.shape[0], label_onehot.shape[1] + 1, *label_onehot.shape[2:]]
    if list(logits.shape) != expected:
        raise ValueError(
            f"Discriminator logits must have shape {expected} (num_classes + 1 channels, channel 0 = fake, at the "
            f"label's size), got {list(logits.shape)}."
        )
    loss = functional.cross_entropy(logits, n_plus_one_targets(label_onehot, for_real), reduction="none")
    if not for_real:
        return loss.mean()
    return (loss * class_balanced_weights(label_onehot, ignore_background)).mean()


class OASISDiscriminatorLoss(nn.Module):
    """OASIS discriminator loss: ``CE(D(fake) -> fake) + CE_balanced(D(real) -> label)`` (add ``LabelMixLoss``).

    Args:
        ignore_background: give class 0 zero weight (OASIS's ``contain_dontcare_label``, which TWWinde sets for CT).
            Off by default: in CT the background is air, table and all the tissue outside the labelled organs, which
            the generator must render too; ignoring it leaves most of each slice without a discriminator signal.
    """

    def __init__(self, ignore_background: bool = False) -> None:
        super().__init__()
        self.ignore_background = ignore_background

    def forward(self, real_logits: Tensor, fake_logits: Tensor, label_onehot: Tensor) -> Tensor:
        fake = oasis_cross_entropy(fake_logits, label_onehot, for_real=False)
        real = oasis_cross_entropy(real_logits, label_onehot, for_real=True, ignore_background=self.ignore_background)
        return fake + real


class OASISGeneratorLoss(nn.Module):
    """OASIS generator loss: ``CE_balanced(D(G(label)) -> label)``, the generated image must segment as its label.

    Args:
        ignore_background: as in ``OASISDiscriminatorLoss`` (use the same value for both).
    """

    def __init__(self, ignore_background: bool = False) -> None:
        super().__init__()
        self.ignore_background = ignore_background

    def forward(self, fake_logits: Tensor, label_onehot: Tensor) -> Tensor:
        return oasis_cross_entropy(fake_logits, label_onehot, for_real=True, ignore_background=self.ignore_background)


def label_mix(
    real: Tensor, fake: Tensor, label_onehot: Tensor, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """LabelMix: ``(M * real + (1 - M) * fake, M)`` with ``M`` (B, 1, H, W) a random 0/1 per class of the batch.

    As OASIS's ``generate_labelmix``, each class (``argmax`` of the label) gets one random bit for the whole batch,
    so ``M`` is constant on every class region. The bits are drawn on the CPU (from ``generator`` if given).
    """
    _check_label(label_onehot)
    if real.shape != fake.shape or real.shape[0] != label_onehot.shape[0] or real.shape[2:] != label_onehot.shape[2:]:
        raise ValueError(
            f"label_mix needs real and fake images of the same shape, at the label's batch and size; got real "
            f"{list(real.shape)}, fake {list(fake.shape)}, label {list(label_onehot.shape)}."
        )
    bits = torch.randint(0, 2, (label_onehot.shape[1],), generator=generator).to(real.device, real.dtype)
    mask = bits[label_onehot.argmax(dim=1, keepdim=True)]
    return mask * real + (1 - mask) * fake, mask


class LabelMixLoss(nn.Module):
    """``weight * MSE(D(mixed), M * D(real) + (1 - M) * D(fake))`` over all N+1 logit channels (OASIS LabelMix).

    The real and fake logits are not detached (as in OASIS). ``weight`` is OASIS's ``lambda_labelmix`` (10 for
    ADE20K and COCO-Stuff, 5 for Cityscapes).
    """

    def __init__(self, weight: float = 10.0) -> None:
        super().__init__()
        self.weight = float(weight)

    def forward(self, mixed_logits: Tensor, real_logits: Tensor, fake_logits: Tensor, mask: Tensor) -> Tensor:
        target = mask * real_logits + (1 - mask) * fake_logits
        return self.weight * functional.mse_loss(mixed_logits, target)


def nonsaturating_discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Non-saturating critic loss ``mean softplus(D(fake)) + mean softplus(-D(real))`` (sigmoid cross-entropy).

    TWWinde multiplies it by ``reg_every`` (4); pass such a factor as a loss weight where the loss is used.
    """
    return functional.softplus(fake_logits).mean() + functional.softplus(-real_logits).mean()


def nonsaturating_generator_loss(fake_logits: Tensor) -> Tensor:
    """Non-saturating generator loss ``mean softplus(-D(fake))``."""
    return functional.softplus(-fake_logits).mean()


def r1_penalty(critic: nn.Module, real: Tensor, gamma: float = 10.0) -> Tensor:
    """R1 gradient penalty ``gamma * mean_b sum |d critic(real) / d real|^2``, differentiable w.r.t. the critic.

    ``gamma=10`` with no further factor is what USIS/TWWinde apply every 4th iteration in a separate critic step;
    StyleGAN2 uses ``gamma / 2 * reg_every`` instead, which a caller gets by passing that product as ``gamma``.
    """
    real = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(real).sum(), real, create_graph=True)
    return gamma * grad.pow(2).flatten(1).sum(1).mean()


class ShapeConsistencyLoss(nn.Module):
    """Soft foreground of the generated image vs the label's foreground, with a gradient w.r.t. the image.

    The image's foreground is ``sigmoid((x - threshold) / temperature)`` (the channel mean of ``x``), the label's is
    ``label > 0`` (any class but background); they are compared with binary cross-entropy or MONAI's Dice loss.
    TWWinde's mask loss (``models/mask_filter.py``) thresholded both with uint8 casts and skimage morphology on
    numpy arrays, so its L1 value carried **no gradient** into the generator; this one does. It only makes sense
    where the labels cover the whole foreground (e.g. a body label): otherwise it pushes unlabelled tissue to air.

    Args:
        threshold: intensity separating foreground from background in the image's units; -0.57 is TWWinde's
            55 / 255 for images in [0, 1], mapped to the generator's [-1, 1].
        temperature: softness of the sigmoid (smaller: closer to a hard threshold, with steeper gradients).
        mode: ``"bce"`` or ``"dice"``.
        weight: factor on the loss.
    """

    def __init__(
        self,
        threshold: float = -0.57,
        temperature: float = 0.05,
        mode: Literal["bce", "dice"] = "bce",
        weight: float = 1.0,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        if mode not in ("bce", "dice"):
            raise ValueError(f"mode must be 'bce' or 'dice', got {mode!r}.")
        self.threshold = float(threshold)
        self.temperature = float(temperature)
        self.mode = mode
        self.weight = float(weight)
        self.dice = DiceLoss(sigmoid=True)

    def forward(self, image: Tensor, label: Tensor) -> Tensor:
        """``image`` (B, C, H, W); ``label`` one-hot (B, N > 1, H, W) or integer classes (B, 1, H, W)."""
        if (
            image.dim() != 4
            or label.dim() != 4
            or image.shape[0] != label.shape[0]
            or image.shape[2:] != label.shape[2:]
        ):
            raise ValueError(
                f"ShapeConsistencyLoss needs an image (B, C, H, W) and a label (B, N, H, W) of the same batch and "
                f"size, got {list(image.shape)} and {list(label.shape)}."
            )
        classes = label.argmax(dim=1, keepdim=True) if label.shape[1] > 1 else label
        target = (classes > 0).to(image.dtype)
        logits = (image.mean(dim=1, keepdim=True) - self.threshold) / self.temperature
        if self.mode == "bce":
            loss = functional.binary_cross_entropy_with_logits(logits, target)
        else:
            loss = self.dice(logits, target)
        return self.weight * loss
