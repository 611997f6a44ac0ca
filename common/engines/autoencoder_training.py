"""Training a KL-autoencoder on images and masks with MONAI's trainers (reconstruction + KL, optionally adversarial).

``ImageAndMaskBatch`` puts a batch's images and its class masks (as images) side by side; ``PosteriorSampleInferer``
reconstructs them from a sample of the posterior and keeps its KL divergence for ``KLReconstructionLoss``. The
same three pieces serve ``SupervisedTrainer`` and, with ``GeneratorAdversarialLoss`` and
``DiscriminatorAdversarialLoss`` around MONAI's ``PatchAdversarialLoss``, ``AdversarialTrainer``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.inferers import Inferer
from monai.losses import PatchAdversarialLoss
from torch import Tensor, nn
from torch.nn import functional

from .latent_segmentation import MaskLatentCodec

__all__ = [
    "DiscriminatorAdversarialLoss",
    "GeneratorAdversarialLoss",
    "ImageAndMaskBatch",
    "KLReconstructionLoss",
    "PosteriorSampleInferer",
]


class ImageAndMaskBatch:
    """``prepare_batch`` for autoencoder training: the images and each class mask of the batch, as one batch.

    Returns ``(x, x)`` with ``x = cat[images, masks as images]``: ``(B * (1 + num_classes), channels, H, W)`` in
    [-1, 1], so the autoencoder learns to reproduce both (the GMS mapping needs it to encode images and decode masks).
    """

    def __init__(self, codec: MaskLatentCodec) -> None:
        self.codec = codec

    def __call__(
        self,
        batchdata: Mapping[str, Tensor],
        device: torch.device | str | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[Tensor, Tensor]:
        image = torch.as_tensor(batchdata["image"]).to(device=device, non_blocking=non_blocking, **kwargs).float()
        label = torch.as_tensor(batchdata["label"]).to(device=device, non_blocking=non_blocking, **kwargs).float()
        if image.shape[1] != self.codec.image_channels or image.shape[-2:] != label.shape[-2:]:
            raise ValueError(
                f"ImageAndMaskBatch: expected images with {self.codec.image_channels} channel(s) and labels of the "
                f"same size, got image {list(image.shape)} and label {list(label.shape)}."
            )
        x = torch.cat([image, self.codec.autoencoder_input(label)])
        return x, x


class PosteriorSampleInferer(Inferer):
    """Reconstruct ``inputs`` from one sample of the autoencoder's posterior; keep the batch's KL divergence.

    ``last_kl`` is the KL divergence of the posterior from N(0, I), summed over the latent and averaged over the
    batch, of the latest call; ``KLReconstructionLoss`` reads it. The network must have ``encode_posterior`` and
    ``decode`` (``common.networks.SDAutoencoderKL``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.last_kl: Tensor | None = None

    def __call__(self, inputs: Tensor, network: nn.Module, *args: Any, **kwargs: Any) -> Tensor:
        autoencoder = getattr(network, "module", network)
        mean, logvar = autoencoder.encode_posterior(inputs)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        self.last_kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).flatten(1).sum(1).mean()
        return autoencoder.decode(z * autoencoder.scale_factor)


class KLReconstructionLoss(nn.Module):
    """Mean absolute reconstruction error plus ``kl_weight`` times the posterior's KL divergence.

    Args:
        inferer: the ``PosteriorSampleInferer`` that made the reconstruction.
        kl_weight: weight of the KL term (1e-6 as in LDM and MONAI's autoencoder tutorials).
    """

    def __init__(self, inferer: PosteriorSampleInferer, kl_weight: float = 1e-6) -> None:
        super().__init__()
        self.inferer = inferer
        self.kl_weight = float(kl_weight)

    def forward(self, reconstruction: Tensor, target: Tensor) -> Tensor:
        if self.inferer.last_kl is None:
            raise RuntimeError("KLReconstructionLoss: its PosteriorSampleInferer has not reconstructed anything yet.")
        return functional.l1_loss(reconstruction, target) + self.kl_weight * self.inferer.last_kl


def _logits(output: Tensor | list[Tensor]) -> Tensor:
    """The logits of a ``PatchDiscriminator`` output, which lists its intermediate features and then its logits."""
    return output[-1] if isinstance(output, (list, tuple)) else output


class GeneratorAdversarialLoss(nn.Module):
    """``weight`` times MONAI's patch adversarial loss of the discriminator's logits for reconstructions."""

    def __init__(self, weight: float = 0.01, criterion: str = "least_squares") -> None:
        super().__init__()
        self.weight = float(weight)
        self.loss = PatchAdversarialLoss(criterion=criterion)

    def forward(self, fake_logits: Tensor | list[Tensor]) -> Tensor:
        return self.weight * self.loss(_logits(fake_logits), target_is_real=True, for_discriminator=False)


class DiscriminatorAdversarialLoss(nn.Module):
    """``weight`` times the mean of MONAI's patch adversarial losses for real and reconstructed images."""

    def __init__(self, weight: float = 0.01, criterion: str = "least_squares") -> None:
        super().__init__()
        self.weight = float(weight)
        self.loss = PatchAdversarialLoss(criterion=criterion)

    def forward(self, real_logits: Tensor | list[Tensor], fake_logits: Tensor | list[Tensor]) -> Tensor:
        real = self.loss(_logits(real_logits), target_is_real=True, for_discriminator=True)
        fake = self.loss(_logits(fake_logits), target_is_real=False, for_discriminator=True)
        return self.weight * 0.5 * (real + fake)
