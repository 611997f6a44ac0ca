"""Haar wavelet transforms and the wavelet discriminator (SWAGAN / StyleGAN2 style) of USIS and TWWinde.

The discriminator is an unconditional critic, one logit per image: it works on the Haar wavelet coefficients of the
image and, at every scale, adds a 1x1 projection of the downsampled image's coefficients to its features, so that
high-frequency detail reaches every stage (``models/discriminator.py: WaveletDiscriminator``). MONAI has no such
network, no Haar transform and no equalised-learning-rate layers; all of it is plain torch here (the reference uses
``upfirdn2d``, which for these filters is a strided convolution).

Differences from the reference:

* the input has ``in_channels`` channels (the reference: 3), so the wavelet input has ``4 * in_channels``;
* the widths are ``min(max_channels, ...)`` of the reference's table (``max_channels=512`` is the reference), so
  that tests can build small networks;
* the minibatch standard deviation uses the largest group size ``<= 4`` that divides the batch (the reference
  fails unless the batch is divisible by ``min(batch, 4)``);
* ``for_features`` / ``for_wholefrequency`` outputs (used by the reference's buggy feature-matching step) and the
  unused ``ScaledLeakyReLU`` path are left out; the Haar filters are non-persistent buffers (not in state dicts).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional

__all__ = ["HaarTransform", "InverseHaarTransform", "WaveletDiscriminator"]

_BLUR_KERNEL = (1.0, 3.0, 3.0, 1.0)
_SLOPE = 0.2


def _haar_filters() -> Tensor:
    """The four 2x2 Haar filters (LL, LH, HL, HH) as a (4, 1, 2, 2) cross-correlation kernel.

    They are the outer products of ``l = [1, 1] / sqrt(2)`` and ``h = [-1, 1] / sqrt(2)``, flipped because the
    reference applies them as a convolution (``upfirdn2d``). On a 2x2 block ``[[a, b], [c, d]]`` they give
    ``LL = (a+b+c+d)/2``, ``LH = (a+b-c-d)/2``, ``HL = (a-b+c-d)/2`` and ``HH = (a-b-c+d)/2``, an orthonormal basis.
    """
    low, high = torch.tensor([1.0, 1.0]), torch.tensor([-1.0, 1.0])  # times 1/sqrt(2) each: 1/2 for the products
    outer = [torch.outer(low, low), torch.outer(high, low), torch.outer(low, high), torch.outer(high, high)]
    filters = torch.stack(outer) / 2
    return filters.flip(-2, -1).unsqueeze(1)


class HaarTransform(nn.Module):
    """One level of the 2D Haar wavelet transform: (B, C, H, W) -> (B, 4C, H/2, W/2).

    The output channels are grouped by sub-band, ``[LL of all C channels, LH ..., HL ..., HH ...]`` (the reference's
    order). The transform is a fixed stride-2 convolution applied to every channel; H and W must be even.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("filters", _haar_filters(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        if h % 2 or w % 2:
            raise ValueError(f"HaarTransform needs an even height and width, got {list(x.shape)}.")
        bands = functional.conv2d(x.reshape(b * c, 1, h, w), self.filters.to(x.dtype), stride=2)
        return bands.reshape(b, c, 4, h // 2, w // 2).transpose(1, 2).reshape(b, 4 * c, h // 2, w // 2)


class InverseHaarTransform(nn.Module):
    """The inverse of ``HaarTransform``: (B, 4C, H, W) sub-band coefficients -> (B, C, 2H, 2W).

    A fixed stride-2 transposed convolution with the same filters (they are orthonormal), so
    ``InverseHaarTransform()(HaarTransform()(x)) == x`` up to rounding.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("filters", _haar_filters(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        b, c4, h, w = x.shape
        if c4 % 4:
            raise ValueError(f"InverseHaarTransform needs 4 sub-bands per channel, got {c4} channels.")
        c = c4 // 4
        bands = x.reshape(b, 4, c, h, w).transpose(1, 2).reshape(b * c, 4, h, w)
        return functional.conv_transpose2d(bands, self.filters.to(x.dtype), stride=2).reshape(b, c, 2 * h, 2 * w)


class _Blur(nn.Module):
    """The normalised [1, 3, 3, 1] x [1, 3, 3, 1] low-pass filter on every channel, with padding and a stride."""

    def __init__(self, pad: int, stride: int = 1) -> None:
        super().__init__()
        kernel = torch.tensor(_BLUR_KERNEL)
        kernel = torch.outer(kernel, kernel)
        self.register_buffer("kernel", (kernel / kernel.sum())[None, None], persistent=False)
        self.pad = pad
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        padded = functional.pad(x.reshape(b * c, 1, h, w), (self.pad,) * 4)
        out = functional.conv2d(padded, self.kernel.to(x.dtype), stride=self.stride)
        return out.reshape(b, c, out.shape[-2], out.shape[-1])


def _fused_leaky_relu(x: Tensor, bias: Tensor) -> Tensor:
    """StyleGAN2's fused activation: ``sqrt(2) * LeakyReLU_0.2(x + bias)``, the bias per channel (dim 1)."""
    return functional.leaky_relu(x + bias.reshape(1, -1, *([1] * (x.dim() - 2))), _SLOPE) * math.sqrt(2.0)


class _FusedLeakyReLU(nn.Module):
    """The fused activation with its own bias (zeros at first), as a layer."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return _fused_leaky_relu(x, self.bias)


class _EqualConv2d(nn.Module):
    """Equalised-learning-rate convolution: N(0, 1) weights scaled by ``1 / sqrt(fan_in)`` at every call."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.stride = stride
        self.padding = padding

    def forward(self, x: Tensor) -> Tensor:
        return functional.conv2d(x, self.weight * self.scale, stride=self.stride, padding=self.padding)


class _EqualLinear(nn.Module):
    """Equalised-learning-rate linear layer, optionally followed by the fused LeakyReLU (bias inside it)."""

    def __init__(self, in_features: int, out_features: int, activate: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.scale = 1.0 / math.sqrt(in_features)
        self.activate = activate

    def forward(self, x: Tensor) -> Tensor:
        if self.activate:
            return _fused_leaky_relu(functional.linear(x, self.weight * self.scale), self.bias)
        return functional.linear(x, self.weight * self.scale, self.bias)


class _ConvLayer(nn.Sequential):
    """StyleGAN2 ``ConvLayer``: [blur, stride-2] equalised conv without bias, then the fused LeakyReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, downsample: bool = False) -> None:
        if downsample:
            pad = len(_BLUR_KERNEL) - 2 + kernel_size - 1  # the reference's (pad0, pad1); both equal here
            layers: list[nn.Module] = [_Blur(pad // 2), _EqualConv2d(in_channels, out_channels, kernel_size, stride=2)]
        else:
            layers = [_EqualConv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)]
        super().__init__(*layers, _FusedLeakyReLU(out_channels))


class _FromWavelet(nn.Module):
    """``FromRGB``: project the (optionally downsampled) wavelet input with a 1x1 ConvLayer and add it to ``skip``.

    Downsampling goes through the image domain: inverse Haar, blur [1, 3, 3, 1] with stride 2, Haar again.
    """

    def __init__(self, wavelet_channels: int, out_channels: int, downsample: bool) -> None:
        super().__init__()
        self.downsample = downsample
        self.iwt = InverseHaarTransform()
        self.blur = _Blur(pad=1, stride=2)
        self.dwt = HaarTransform()
        self.conv = _ConvLayer(wavelet_channels, out_channels, 1)

    def forward(self, wavelets: Tensor, skip: Tensor | None) -> tuple[Tensor, Tensor]:
        if self.downsample:
            wavelets = self.dwt(self.blur(self.iwt(wavelets)))
        out = self.conv(wavelets)
        return wavelets, out if skip is None else out + skip


class WaveletDiscriminator(nn.Module):
    """Unconditional wavelet critic of USIS / TWWinde (``--netDu wavelet``): an image in, one logit per image out.

    For a ``S x S`` image (``S = image_size``) the Haar transform gives ``4 * in_channels`` sub-bands at ``S/2``.
    Each of the ``log2(S) - 3`` stages adds ``FromRGB`` (a 1x1 ConvLayer of the wavelet input, downsampled to the
    stage's size except in the first stage) to the features and applies a ``ConvBlock`` (ConvLayer 3x3, then blur
    and a stride-2 ConvLayer 3x3), halving the size down to 4 x 4, where a last ``FromRGB`` is added. The head is
    the minibatch standard deviation (one extra channel), a ConvLayer 3x3, and two equalised linear layers (the first
    with the fused LeakyReLU) down to one logit. Widths follow the reference's table: ``max_channels`` up to 32 x 32,
    ``16384 * channel_multiplier / size`` above (at 256: 128, 512, 512, 512, 512 over 128 -> 8 pixels).

    Convolutions and linear layers use equalised learning rates (N(0, 1) weights scaled by ``1/sqrt(fan_in)``,
    StyleGAN2's initialisation, which the reference keeps) and the fused LeakyReLU (slope 0.2, gain ``sqrt(2)``,
    bias added before it); there is no spectral normalisation. Train it with the non-saturating loss and the R1
    penalty (``common.engines.oasis_losses``).

    Args:
        in_channels: image channels.
        image_size: side of the square input, a power of two >= 16.
        channel_multiplier: width multiplier of the stages above 32 x 32 (2 in the reference).
        max_channels: the widest stage (512 in the reference).
        stddev_group: largest group of the minibatch standard deviation (4 in the reference).
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 256,
        channel_multiplier: float = 2,
        max_channels: int = 512,
        stddev_group: int = 4,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("max_channels", max_channels),
            ("stddev_group", stddev_group),
        ):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}.")
        if int(image_size) != image_size or image_size < 16 or image_size & (image_size - 1):
            raise ValueError(f"image_size must be a power of two >= 16, got {image_size}.")
        if channel_multiplier <= 0 or int(16384 * channel_multiplier / image_size) < 1:
            raise ValueError(f"channel_multiplier {channel_multiplier} gives no channels at image_size {image_size}.")

        def width(size: int) -> int:
            return max_channels if size <= 32 else min(max_channels, int(16384 * channel_multiplier / size))

        self.in_channels = int(in_channels)
        self.image_size = int(image_size)
        self.stddev_group = int(stddev_group)
        wavelet_channels = 4 * self.in_channels
        self.dwt = HaarTransform()
        log_size = int(math.log2(image_size)) - 1
        channels = width(self.image_size)
        self.from_rgbs = nn.ModuleList()
        self.convs = nn.ModuleList()
        for i in range(log_size, 2, -1):
            out_channels = width(2 ** (i - 1))
            self.from_rgbs.append(_FromWavelet(wavelet_channels, channels, downsample=i != log_size))
            self.convs.append(
                nn.Sequential(_ConvLayer(channels, channels, 3), _ConvLayer(channels, out_channels, 3, True))
            )
            channels = out_channels
        self.from_rgbs.append(_FromWavelet(wavelet_channels, width(4), downsample=True))
        self.final_conv = _ConvLayer(channels + 1, width(4), 3)
        self.final_linear = nn.Sequential(_EqualLinear(width(4) * 16, width(4), True), _EqualLinear(width(4), 1, False))

    def _minibatch_stddev(self, x: Tensor) -> Tensor:
        """Append the feature standard deviation over groups of samples as one constant channel (StyleGAN2)."""
        b, c, h, w = x.shape
        group = min(b, self.stddev_group)
        while b % group:
            group -= 1
        stddev = torch.sqrt(x.reshape(group, -1, c, h, w).var(0, unbiased=False) + 1e-8)
        stddev = stddev.mean(dim=(1, 2, 3)).reshape(-1, 1, 1, 1).repeat(group, 1, h, w)
        return torch.cat([x, stddev], dim=1)

    def forward(self, image: Tensor) -> Tensor:
        """Logits (B, 1) of images (B, in_channels, image_size, image_size)."""
        expected = [self.in_channels, self.image_size, self.image_size]
        if image.dim() != 4 or list(image.shape[1:]) != expected:
            raise ValueError(
                f"WaveletDiscriminator expects images of shape (B, {', '.join(map(str, expected))}), got "
                f"{list(image.shape)}."
            )
        wavelets = self.dwt(image)
        out: Tensor | None = None
        for from_rgb, conv in zip(self.from_rgbs, self.convs, strict=False):
            wavelets, out = from_rgb(wavelets, out)
            out = conv(out)
        _, out = self.from_rgbs[-1](wavelets, out)
        out = self.final_conv(self._minibatch_stddev(out))
        return self.final_linear(out.flatten(1))
