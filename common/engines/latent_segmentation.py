"""Segmentation in a frozen KL-autoencoder's latent space (GMS, Huo et al. 2024): encoding, training step, inference.

An image is encoded to the scaled posterior mean of the autoencoder; each foreground class of its mask is encoded
on its own, as a grey image repeated to the autoencoder's channels and scaled to [-1, 1], and the class latents are
stacked along the channels (the GMS authors' suggestion for several classes: one latent mask per class). A latent
mask is decoded back to a soft mask by averaging the decoder's channels and mapping [-1, 1] to [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.inferers import Inferer
from monai.losses import DiceLoss
from monai.transforms import MapTransform
from torch import Tensor, nn
from torch.nn import functional

__all__ = [
    "EncodeLatentsd",
    "LatentPrepareBatch",
    "LatentSegmentationInferer",
    "LatentSegmentationLoss",
    "MaskLatentCodec",
    "MaskReconstructionInferer",
]

LATENT_KEYS = ("image_latent", "image_latent_std", "label_latent")


class MaskLatentCodec:
    """Maps images and class masks to a KL-autoencoder's latents and latent masks back to soft masks.

    Args:
        autoencoder: a module with ``encode_posterior(x) -> (mean, logvar)`` of ``in_channels``-channel images in
            [-1, 1], ``decode(z)`` of scaled latents and ``scale_factor`` (``common.networks.SDAutoencoderKL``); or a
            function without arguments that loads one (a config's ``"_mode_": "callable"`` loader), called on first
            use, so that inspecting a bundle (property checks, MONAI Label) works before any weights exist.
        num_classes: foreground classes of the masks (1 for binary); label maps hold 0 (background) to ``num_classes``.
        device: where a loaded autoencoder is moved to.
    """

    def __init__(
        self,
        autoencoder: nn.Module | Callable[[], nn.Module],
        num_classes: int = 1,
        device: torch.device | str | None = None,
    ) -> None:
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
        self._autoencoder = autoencoder
        self.num_classes = int(num_classes)
        self.device = device

    @property
    def autoencoder(self) -> nn.Module:
        """The autoencoder, loaded (and moved to ``device``) the first time it is needed."""
        if not isinstance(self._autoencoder, nn.Module):
            loaded = self._autoencoder()
            self._autoencoder = loaded.to(self.device) if self.device is not None else loaded
        return self._autoencoder

    @property
    def image_channels(self) -> int:
        """Channels the autoencoder reads (3 for Stable Diffusion's)."""
        return int(self.autoencoder.in_channels)

    def class_masks(self, label: Tensor) -> Tensor:
        """``(B, 1, H, W)`` label map -> ``(B, num_classes, H, W)`` float 0/1 masks of the foreground classes."""
        classes = torch.arange(1, self.num_classes + 1, device=label.device).view(1, -1, 1, 1)
        return (label.round() == classes).float()

    def autoencoder_input(self, label: Tensor) -> Tensor:
        """Each class mask of a ``(B, 1, H, W)`` label map as an image: ``(B * num_classes, channels, H, W)``."""
        masks = self.class_masks(label).flatten(0, 1).unsqueeze(1)
        return (masks * 2 - 1).expand(-1, self.image_channels, -1, -1)

    def encode_image(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """Scaled posterior mean and standard deviation of ``(B, channels, H, W)`` images in [-1, 1]."""
        mean, logvar = self.autoencoder.encode_posterior(image)
        scale = self.autoencoder.scale_factor
        return mean * scale, torch.exp(0.5 * logvar) * scale

    def encode_masks(self, label: Tensor) -> Tensor:
        """Latent mask of a ``(B, 1, H, W)`` label map: the class latents stacked, ``(B, num_classes * c, h, w)``."""
        mean, _ = self.autoencoder.encode_posterior(self.autoencoder_input(label))
        latent = mean * self.autoencoder.scale_factor
        return latent.reshape(label.shape[0], -1, *latent.shape[2:])

    def decode_masks(self, latent: Tensor) -> Tensor:
        """Soft masks ``(B, num_classes, H, W)`` in [0, 1] of latent masks ``(B, num_classes * c, h, w)``."""
        batch = latent.shape[0]
        per_class = latent.reshape(batch * self.num_classes, -1, *latent.shape[2:])
        decoded = self.autoencoder.decode(per_class).mean(dim=1)
        return ((decoded + 1) / 2).clamp(0, 1).reshape(batch, self.num_classes, *decoded.shape[1:])


def _check_pair(image: Tensor, label: Tensor, codec: MaskLatentCodec, where: str) -> None:
    if image.shape[-3] != codec.image_channels or label.shape[-3] != 1 or image.shape[-2:] != label.shape[-2:]:
        raise ValueError(
            f"{where}: expected an image with {codec.image_channels} channel(s) and a one-channel label of the same "
            f"size, got image {list(image.shape)} and label {list(label.shape)}."
        )


class EncodeLatentsd(MapTransform):
    """Encode one item's image and label with the frozen autoencoder, so a ``CacheDataset`` can keep the latents.

    Adds ``image_latent`` and ``image_latent_std`` (scaled posterior mean and standard deviation, the latter for the
    latent noise augmentation), ``label_latent``; keeps ``label`` as uint8 (the Dice target) and drops the image,
    which training no longer needs.

    Args:
        codec: the autoencoder's ``MaskLatentCodec``.
        image_key: key of the ``(C, H, W)`` image in [-1, 1].
        label_key: key of the ``(1, H, W)`` label map.
        device: where to run the encoder; the latents are returned on the CPU.
    """

    def __init__(
        self,
        codec: MaskLatentCodec,
        image_key: str = "image",
        label_key: str = "label",
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__([image_key, label_key])
        self.codec = codec
        self.image_key = image_key
        self.label_key = label_key
        self.device = torch.device(device)

    @torch.no_grad()
    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = torch.as_tensor(d.pop(self.image_key)).float()
        label = torch.as_tensor(d[self.label_key]).float()
        _check_pair(image, label, self.codec, "EncodeLatentsd")
        image = image.as_subclass(Tensor)[None].to(self.device)
        label = label.as_subclass(Tensor)[None].to(self.device)
        mean, std = self.codec.encode_image(image)
        d["image_latent"], d["image_latent_std"] = mean[0].cpu(), std[0].cpu()
        d["label_latent"] = self.codec.encode_masks(label)[0].cpu()
        d[self.label_key] = label[0].round().to(torch.uint8).cpu()
        return d


class LatentPrepareBatch:
    """``prepare_batch`` of GMS training: image latents (with posterior noise) in, latent mask and masks as target.

    Batches of ``EncodeLatentsd`` items use their cached latents; batches of images (``image`` and ``label``) are
    encoded here, on the training device, without gradients. With probability ``noise_prob`` (once per batch, as the
    original) the input is a sample of the image's posterior, ``mean + std * N(0, 1)``, instead of its mean.

    Returns ``(image_latent, (label_latent, masks))`` with ``masks`` ``(B, num_classes, H, W)`` float.
    """

    def __init__(self, codec: MaskLatentCodec, noise_prob: float = 0.5) -> None:
        if not 0.0 <= noise_prob <= 1.0:
            raise ValueError(f"noise_prob must be in [0, 1], got {noise_prob}.")
        self.codec = codec
        self.noise_prob = float(noise_prob)

    def __call__(
        self,
        batchdata: Mapping[str, Tensor],
        device: torch.device | str | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        def move(key: str) -> Tensor:
            return torch.as_tensor(batchdata[key]).to(device=device, non_blocking=non_blocking, **kwargs)

        label = move("label").float()
        if all(k in batchdata for k in LATENT_KEYS):
            mean, std, label_latent = (move(k).float() for k in LATENT_KEYS)
        else:
            image = move("image").float()
            _check_pair(image, label, self.codec, "LatentPrepareBatch")
            with torch.no_grad():
                mean, std = self.codec.encode_image(image)
                label_latent = self.codec.encode_masks(label)
        if self.noise_prob and torch.rand(()) < self.noise_prob:
            mean = mean + std * torch.randn_like(std)
        return mean, (label_latent, self.codec.class_masks(label))


class LatentSegmentationLoss(nn.Module):
    """GMS loss: for each deep-supervision head, ``latent_weight * MSE(latent)`` + ``dice_weight * Dice(decoded)``.

    ``pred`` is ``(B, heads, C, h, w)`` (``LatentMappingModel`` in training mode) or ``(B, C, h, w)``; ``target`` is
    ``(label_latent, masks)`` from ``LatentPrepareBatch``. The Dice term decodes every head with the frozen decoder,
    so gradients flow through it (the method's main cost). The heads' losses are summed, as in the original.
    """

    def __init__(self, codec: MaskLatentCodec, latent_weight: float = 1.0, dice_weight: float = 1.0) -> None:
        super().__init__()
        self.codec = codec
        self.latent_weight = float(latent_weight)
        self.dice_weight = float(dice_weight)
        self.dice = DiceLoss()

    def forward(self, pred: Tensor, target: Sequence[Tensor]) -> Tensor:
        label_latent, masks = target
        heads = pred.unbind(dim=1) if pred.ndim == 5 else (pred,)
        loss = pred.new_zeros(())
        if self.latent_weight:
            loss = loss + self.latent_weight * sum(functional.mse_loss(head, label_latent) for head in heads)
        if self.dice_weight:
            decoded = self.codec.decode_masks(torch.cat(heads)).split(pred.shape[0])  # one decoder pass for all heads
            loss = loss + self.dice_weight * sum(self.dice(soft, masks) for soft in decoded)
        return loss


class LatentSegmentationInferer(Inferer):
    """GMS inference in one pass: encode the image (posterior mean), map it, decode the soft masks.

    Returns ``(B, num_classes, H, W)`` soft masks in [0, 1]; ``common.transforms.SoftMasksToLabeld`` thresholds them.
    """

    def __init__(self, codec: MaskLatentCodec) -> None:
        super().__init__()
        self.codec = codec

    def __call__(self, inputs: Tensor, network: nn.Module, *args: Any, **kwargs: Any) -> Tensor:
        if inputs.ndim != 4 or inputs.shape[1] != self.codec.image_channels:
            raise ValueError(
                f"LatentSegmentationInferer expects (B, {self.codec.image_channels}, H, W) images in [-1, 1], "
                f"got {list(inputs.shape)}."
            )
        latent = network(self.codec.encode_image(inputs)[0], *args, **kwargs)
        return self.codec.decode_masks(latent[:, 0] if latent.ndim == 5 else latent)


class MaskReconstructionInferer(Inferer):
    """Soft masks of a label map reconstructed by the codec's autoencoder: how well it can represent masks.

    Validation of autoencoder training: the Dice of these reconstructions bounds what GMS can reach with it.
    ``inputs`` is the ``(B, 1, H, W)`` label map; ``network`` is the autoencoder being trained (the codec's).
    """

    def __init__(self, codec: MaskLatentCodec) -> None:
        super().__init__()
        self.codec = codec

    def __call__(self, inputs: Tensor, network: nn.Module, *args: Any, **kwargs: Any) -> Tensor:
        return self.codec.decode_masks(self.codec.encode_masks(inputs))
