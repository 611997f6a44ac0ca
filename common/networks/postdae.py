"""The Post-DAE denoising autoencoder (Larrazabal et al., MICCAI 2019) as the unofficial reference code builds it.

A convolutional encoder halves the resolution at every stage, a fully connected bottleneck squeezes the mask into a
low-dimensional code (the "manifold of plausible shapes"), and a transposed-convolution decoder restores the input
size. MONAI's ``AutoEncoder`` has no fully connected bottleneck and ``VarAutoEncoder`` is variational, hence this
module.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod

import torch
from torch import nn

__all__ = ["PostDAE"]


def _conv_act(in_channels: int, out_channels: int, stride: int, conv_type: type[nn.Module]) -> list[nn.Module]:
    return [conv_type(in_channels, out_channels, kernel_size=3, stride=stride, padding=1), nn.ReLU(inplace=True)]


class PostDAE(nn.Module):
    """Convolutional denoising autoencoder with a fully connected bottleneck, for masks of one fixed size.

    Architecture of ``balazsborsos/dae_postprocessing`` (``models/DAE.py``) with its quirks kept by default:

    * encoder stage ``i``: Conv3x3 stride 2 -> ReLU -> Conv3x3 -> ReLU; the last stage has only the strided conv;
    * bottleneck: Flatten -> Linear(features, ``latent_size``) -> ReLU -> Linear(``latent_size``, features), with no
      activation after the second Linear (``bottleneck_activation=False``, as the repository's duplicate module names
      end up building it);
    * decoder stage: ConvTranspose3x3 stride 2 -> ReLU -> Conv3x3 -> Sigmoid; the repository puts a Sigmoid after
      *every* decoder stage (``decoder_activation="sigmoid"``); ``"relu"`` uses ReLU between stages instead.

    The last decoder stage returns **logits**: the repository's final Sigmoid is applied by the loss
    (``DiceLoss(sigmoid=True)``) and by the post-processing, which is numerically the same model and lets MONAI's
    losses, metrics and exporters treat it like any other segmentation network.

    Args:
        spatial_dims: 2 for images, 3 for volumes.
        in_channels: channels of the input mask (1 for a binary mask).
        out_channels: channels of the output logits.
        img_size: spatial size the network is built for; every entry must be divisible by 2 ** len(encoder_channels).
        encoder_channels: output channels of each encoder stage.
        decoder_channels: output channels of each decoder stage but the last, which gives ``out_channels``
            (one entry fewer than ``encoder_channels``).
        latent_size: width of the code between the two Linear layers (512 in the reference configuration).
        bottleneck_activation: add a ReLU after the second Linear layer.
        decoder_activation: activation inside and between decoder stages, ``"sigmoid"`` (reference) or ``"relu"``.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        img_size: Sequence[int] = (512, 512),
        encoder_channels: Sequence[int] = (16, 32, 32, 32, 32),
        decoder_channels: Sequence[int] = (16, 16, 16, 16),
        latent_size: int = 512,
        bottleneck_activation: bool = False,
        decoder_activation: str = "sigmoid",
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if len(img_size) != spatial_dims:
            raise ValueError(f"img_size must have {spatial_dims} entries, got {list(img_size)}.")
        if len(decoder_channels) != len(encoder_channels) - 1:
            raise ValueError(
                f"decoder_channels must have one entry fewer than encoder_channels ({len(encoder_channels) - 1}), "
                f"got {list(decoder_channels)}."
            )
        factor = 2 ** len(encoder_channels)
        if any(s % factor for s in img_size):
            raise ValueError(f"every entry of img_size must be divisible by {factor}, got {list(img_size)}.")
        if decoder_activation not in ("sigmoid", "relu"):
            raise ValueError(f"decoder_activation must be 'sigmoid' or 'relu', got {decoder_activation!r}.")
        if latent_size < 1:
            raise ValueError(f"latent_size must be positive, got {latent_size}.")

        self.img_size = [int(s) for s in img_size]
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        conv_t = nn.ConvTranspose2d if spatial_dims == 2 else nn.ConvTranspose3d

        layers: list[nn.Module] = []
        channels = in_channels
        for stage, width in enumerate(encoder_channels):
            layers += _conv_act(channels, width, 2, conv)
            if stage < len(encoder_channels) - 1:
                layers += _conv_act(width, width, 1, conv)
            channels = width
        self.encoder = nn.Sequential(*layers)

        code_shape = (channels, *(s // factor for s in self.img_size))
        features = prod(code_shape)
        self.to_code = nn.Sequential(nn.Flatten(), nn.Linear(features, latent_size), nn.ReLU(inplace=True))
        from_code: list[nn.Module] = [nn.Linear(latent_size, features)]
        if bottleneck_activation:
            from_code.append(nn.ReLU(inplace=True))
        self.from_code = nn.Sequential(*from_code, nn.Unflatten(1, code_shape))

        def activation() -> nn.Module:
            return nn.Sigmoid() if decoder_activation == "sigmoid" else nn.ReLU(inplace=True)

        layers = []
        widths = [*decoder_channels, out_channels]
        for stage, width in enumerate(widths):
            last = stage == len(widths) - 1
            layers += [
                conv_t(channels, channels, kernel_size=3, stride=2, padding=1, output_padding=1),
                nn.ReLU(inplace=True),
                conv(channels, width, kernel_size=3, padding=1),
            ]
            if not last:
                layers.append(activation())
            channels = width
        self.decoder = nn.Sequential(*layers)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Return the ``latent_size``-dimensional code of a batch of masks."""
        return self.to_code(self.encoder(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map a batch of (corrupted) masks ``(B, C, *img_size)`` to logits of the restored masks."""
        if list(x.shape[2:]) != self.img_size:
            raise ValueError(
                f"PostDAE was built for masks of size {self.img_size}, got {list(x.shape[2:])}; resize the input "
                "(the bundles' preprocessing does) or set image_size to match."
            )
        return self.decoder(self.from_code(self.encode(x)))
