"""Stable Diffusion's first-stage KL autoencoder, with LDM's module names so the released SD VAE weights load as is.

GMS (Huo et al. 2024) segments in the latent space of the frozen Stable Diffusion 2 VAE, the LDM ``AutoencoderKL``
(Rombach et al. 2022): a convolutional encoder whose last layer emits the posterior mean and log-variance together,
one joint 1x1 ``quant_conv`` over both, a 1x1 ``post_quant_conv`` before the decoder, one more residual block per
decoder level than per encoder level, and single-head attention only in the two mid-blocks. MONAI's
``AutoencoderKL`` cannot hold these weights: it splits ``quant_conv`` in two, gives the decoder as many blocks as the
encoder, and its ``Encoder``/``Decoder`` omit the SiLU between the last GroupNorm and the output convolution. Hence
these small modules; ``common.networks.sd_checkpoint`` reads CompVis and diffusers checkpoints into them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

__all__ = ["SDAutoencoderKL"]

NORM_EPS = 1e-6  # GroupNorm epsilon of every LDM autoencoder


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=NORM_EPS)


class ResnetBlock(nn.Module):
    """Two GroupNorm-SiLU-conv3x3 steps plus the input, through a 1x1 convolution where the width changes."""

    def __init__(self, in_channels: int, out_channels: int, groups: int) -> None:
        super().__init__()
        self.norm1 = _norm(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels, groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return self.nin_shortcut(x) + self.conv2(F.silu(self.norm2(h)))


class AttnBlock(nn.Module):
    """Pre-normed residual single-head softmax self-attention over all positions, 1x1-convolution projections."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm = _norm(channels, groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        q = self.q(y).reshape(b, c, h * w).transpose(1, 2)
        k = self.k(y).reshape(b, c, h * w).transpose(1, 2)
        v = self.v(y).reshape(b, c, h * w).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(c)) v
        return x + self.proj_out(out.transpose(1, 2).reshape(b, c, h, w))


class Downsample(nn.Module):
    """Halve H and W: pad one zero row/column at the bottom/right, then a stride-2 3x3 convolution (LDM's choice)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour interpolation, then a 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class MidBlock(nn.Module):
    """Residual block, attention, residual block at the lowest resolution."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, groups)
        self.attn_1 = AttnBlock(channels, groups)
        self.block_2 = ResnetBlock(channels, channels, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


def _resnet_blocks(in_channels: int, out_channels: int, count: int, groups: int) -> nn.ModuleList:
    return nn.ModuleList(
        ResnetBlock(in_channels if i == 0 else out_channels, out_channels, groups) for i in range(count)
    )


class EncoderLevel(nn.Module):
    """Residual blocks at one resolution, then a downsampling (identity for the deepest level)."""

    def __init__(self, in_channels: int, out_channels: int, count: int, groups: int, downsample: bool) -> None:
        super().__init__()
        self.block = _resnet_blocks(in_channels, out_channels, count, groups)
        self.downsample = Downsample(out_channels) if downsample else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.block:
            x = block(x)
        return self.downsample(x)


class DecoderLevel(nn.Module):
    """Residual blocks at one resolution, then an upsampling (identity for the full-resolution level)."""

    def __init__(self, in_channels: int, out_channels: int, count: int, groups: int, upsample: bool) -> None:
        super().__init__()
        self.block = _resnet_blocks(in_channels, out_channels, count, groups)
        self.upsample = Upsample(out_channels) if upsample else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.block:
            x = block(x)
        return self.upsample(x)


class Encoder(nn.Module):
    """LDM encoder: conv_in to ``base_channels``, ``down`` levels, mid-block, GroupNorm-SiLU-conv_out."""

    def __init__(
        self, in_channels: int, out_channels: int, base_channels: int, widths: list[int], count: int, groups: int
    ) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        inputs = [base_channels, *widths[:-1]]
        self.down = nn.ModuleList(
            EncoderLevel(c_in, c_out, count, groups, downsample=i < len(widths) - 1)
            for i, (c_in, c_out) in enumerate(zip(inputs, widths, strict=True))
        )
        self.mid = MidBlock(widths[-1], groups)
        self.norm_out = _norm(widths[-1], groups)
        self.conv_out = nn.Conv2d(widths[-1], out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for level in self.down:
            x = level(x)
        return self.conv_out(F.silu(self.norm_out(self.mid(x))))


class Decoder(nn.Module):
    """LDM decoder: conv_in, mid-block, ``up`` levels deepest first, GroupNorm-SiLU-conv_out.

    ``up[str(i)]`` is level ``i`` (``"0"`` at full resolution), LDM's numbering and so its state-dict keys; the dict
    holds the levels in the order they run, which a reversed ModuleList cannot do under TorchScript.
    """

    def __init__(self, in_channels: int, out_channels: int, widths: list[int], count: int, groups: int) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, widths[-1], 3, padding=1)
        self.mid = MidBlock(widths[-1], groups)
        inputs = [*widths[1:], widths[-1]]
        self.up = nn.ModuleDict(
            {
                str(i): DecoderLevel(inputs[i], widths[i], count, groups, upsample=i > 0)
                for i in reversed(range(len(widths)))
            }
        )
        self.norm_out = _norm(widths[0], groups)
        self.conv_out = nn.Conv2d(widths[0], out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.mid(self.conv_in(z))
        for level in self.up.values():
            x = level(x)
        return self.conv_out(F.silu(self.norm_out(x)))


class SDAutoencoderKL(nn.Module):
    """The Stable Diffusion KL autoencoder (LDM ``AutoencoderKL``); defaults are SD 2's ``768-v-ema`` first stage.

    ``encode(x)`` gives the scaled posterior mean, the latent that SD's (and GMS's) diffusion works on;
    ``encode_posterior(x)`` the unscaled mean and clamped log-variance (GMS adds latent noise with it);
    ``decode(z)`` maps a scaled latent back to an image and ``forward(x)`` reconstructs ``x``. Images are
    ``(B, in_channels, H, W)`` in [-1, 1] with ``H`` and ``W`` divisible by ``f = 2 ** (len(channel_mults) - 1)``;
    latents are ``(B, latent_channels, H / f, W / f)``.

    The state-dict keys are those of LDM's first stage (``encoder.down.0.block.0.norm1.weight``,
    ``encoder.mid.attn_1.q.weight``, ``quant_conv.weight``, ``decoder.up.3.upsample.conv.weight``, ...).

    Args:
        in_channels: image channels read by the encoder.
        out_channels: image channels written by the decoder.
        base_channels: width of the first level (LDM's ``ch``); level ``i`` has ``base_channels * channel_mults[i]``.
        channel_mults: width multipliers of the levels (LDM's ``ch_mult``); each level but the last halves H and W.
        num_res_blocks: residual blocks per encoder level; every decoder level has one more, as in LDM.
        latent_channels: channels of the latent (LDM's ``z_channels``).
        norm_groups: GroupNorm groups; must divide every level's width.
        scale_factor: multiplies the posterior mean in ``encode`` and divides the latent in ``decode``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        base_channels: int = 128,
        channel_mults: Sequence[int] = (1, 2, 4, 4),
        num_res_blocks: int = 2,
        latent_channels: int = 4,
        norm_groups: int = 32,
        scale_factor: float = 0.18215,
    ) -> None:
        super().__init__()
        widths = [base_channels * m for m in channel_mults]
        if not widths or any(w <= 0 or w % norm_groups for w in (base_channels, *widths)):
            raise ValueError(
                f"base_channels = {base_channels} and base_channels * channel_mults = {widths} must be positive "
                f"multiples of norm_groups = {norm_groups}."
            )
        if num_res_blocks < 1 or latent_channels < 1 or scale_factor <= 0:
            raise ValueError(
                f"num_res_blocks ({num_res_blocks}) and latent_channels ({latent_channels}) must be >= 1 and "
                f"scale_factor ({scale_factor}) > 0."
            )
        self.in_channels = in_channels
        self.scale_factor = float(scale_factor)
        self.downsampling = 2 ** (len(widths) - 1)
        self.encoder = Encoder(in_channels, 2 * latent_channels, base_channels, widths, num_res_blocks, norm_groups)
        self.decoder = Decoder(latent_channels, out_channels, widths, num_res_blocks + 1, norm_groups)
        self.quant_conv = nn.Conv2d(2 * latent_channels, 2 * latent_channels, 1)
        self.post_quant_conv = nn.Conv2d(latent_channels, latent_channels, 1)

    def encode_posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance (clamped to [-30, 20]) of the diagonal Gaussian posterior, both unscaled."""
        if x.ndim != 4 or x.shape[2] % self.downsampling or x.shape[3] % self.downsampling:
            raise ValueError(
                f"SDAutoencoderKL expects (B, C, H, W) with H and W divisible by {self.downsampling}, "
                f"got shape {list(x.shape)}."
            )
        mean, logvar = self.quant_conv(self.encoder(x)).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)  # the range LDM's DiagonalGaussianDistribution clamps to

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The latent of ``x``: the posterior mean times ``scale_factor``."""
        return self.encode_posterior(x)[0] * self.scale_factor

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The image of a scaled latent ``z`` (divided by ``scale_factor`` first)."""
        return self.decoder(self.post_quant_conv(z / self.scale_factor))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction of ``x`` through the posterior mean."""
        return self.decode(self.encode(x))
