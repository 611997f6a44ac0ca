"""The latent mapping model of GMS, Generative Medical Segmentation (Huo et al., 2024).

GMS encodes an image with a frozen Stable Diffusion VAE, maps the image latent to the latent of its mask with a small
network, and decodes that with the same frozen VAE. This module is the small network (``ResAttnUNet_DS`` in the
authors' repository): a U-Net-shaped stack of residual attention blocks that never changes the spatial size, because
the latents (28 x 28 for 224 x 224 images) are already small and self-attention at that size is cheap.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["LatentMappingModel"]


def _group_norm(norm_groups: int, channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(norm_groups, channels, eps=1e-6)


class _ResBlock(nn.Module):
    """Two pre-activation (GroupNorm -> PReLU -> Conv3x3) layers; the skip is a 1x1 convolution when widths differ."""

    def __init__(self, in_channels: int, out_channels: int, norm_groups: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _group_norm(norm_groups, in_channels),
            nn.PReLU(),
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            _group_norm(norm_groups, out_channels),
            nn.PReLU(),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
        )
        self.skip: nn.Module = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


class _SpatialSelfAttention(nn.Module):
    """Single-head self-attention over all ``H * W`` positions, added to its input."""

    def __init__(self, channels: int, norm_groups: int) -> None:
        super().__init__()
        self.norm = _group_norm(norm_groups, channels)
        self.q = nn.Conv2d(channels, channels, kernel_size=1)
        self.k = nn.Conv2d(channels, channels, kernel_size=1)
        self.v = nn.Conv2d(channels, channels, kernel_size=1)
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)
        self.scale = channels**-0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        normed = self.norm(x)
        q = self.q(normed).reshape(b, c, h * w)
        k = self.k(normed).reshape(b, c, h * w)
        v = self.v(normed).reshape(b, c, h * w)
        weights = torch.softmax(torch.bmm(q.transpose(1, 2), k) * self.scale, dim=-1)  # (B, query, key)
        attended = torch.bmm(v, weights.transpose(1, 2)).reshape(b, c, h, w)
        return x + self.proj_out(attended)


class _ResAttBlock(nn.Sequential):
    """A residual block followed by spatial self-attention at its output width."""

    def __init__(self, in_channels: int, out_channels: int, norm_groups: int) -> None:
        super().__init__(
            _ResBlock(in_channels, out_channels, norm_groups), _SpatialSelfAttention(out_channels, norm_groups)
        )


def _head(in_channels: int, out_channels: int, norm_groups: int) -> nn.Sequential:
    return nn.Sequential(
        _group_norm(norm_groups, in_channels),
        nn.SiLU(),
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
    )


class LatentMappingModel(nn.Module):
    """Maps an image latent to a mask latent at the same spatial size (GMS's ``ResAttnUNet_DS``).

    With ``L = len(channel_mults)`` levels and widths ``w_i = channels * channel_mults[i]``:

    * ``input_block``: Conv3x3 ``in_channels -> channels`` gives ``x_0``;
    * encoder: ``x_{i+1} = RAB(x_i)`` with ``L`` residual attention blocks (RAB: residual block, with a 1x1 skip
      convolution where the width changes, then single-head spatial self-attention) of output widths
      ``w_0 .. w_{L-1}``;
    * decoder: from depth ``L - 1`` up to 0, ``RAB(cat[x_d, previous])`` back to the width of ``x_d``, starting from
      ``previous = x_L``;
    * heads (GroupNorm -> SiLU -> Conv3x3 to ``out_channels``): ``head_level{d}`` on the decoder output at depth
      ``d >= 1`` and ``head_out`` on the final one.

    Nothing is down- or upsampled: every feature map keeps the input's ``H x W``.

    In training mode with ``deep_supervision=True`` the output is ``(B, K, out_channels, H, W)``, the heads
    ``[head_out, head_level1, head_level2]`` stacked on dim 1 (``K = min(L, 3)``), the ones the reference training
    loss uses; ``torch.unbind(pred, dim=1)`` gives them with the final output first, as MONAI's ``DynUNet`` does.
    Deeper heads (``head_level3`` at the defaults) exist so that parameters and checkpoints match the reference, but
    are not evaluated: they take no part in the loss (use ``find_unused_parameters=True`` with DDP). In eval mode, or
    with ``deep_supervision=False``, the output is the final head alone, ``(B, out_channels, H, W)``.

    Args:
        in_channels: channels of the input latent (4 for the Stable Diffusion VAE).
        out_channels: channels of the predicted latent.
        channels: width of ``input_block`` and of the final decoder block.
        channel_mults: width multipliers of the encoder blocks, one per level (at least two).
        norm_groups: groups of every GroupNorm; ``channels`` must be divisible by it.
        deep_supervision: return the stacked auxiliary heads in training mode.
    """

    def __init__(
        self,
        in_channels: int = 4,
        out_channels: int = 4,
        channels: int = 32,
        channel_mults: Sequence[int] = (1, 2, 4, 4),
        norm_groups: int = 16,
        deep_supervision: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("channels", channels),
            ("norm_groups", norm_groups),
        ):
            if value < 1:
                raise ValueError(f"{name} must be positive, got {value}.")
        mults = [int(m) for m in channel_mults]
        if len(mults) < 2 or min(mults) < 1:
            raise ValueError(f"channel_mults must have at least two positive entries, got {list(channel_mults)}.")
        if channels % norm_groups:  # every GroupNorm width is a multiple of channels
            raise ValueError(f"channels ({channels}) must be divisible by norm_groups ({norm_groups}).")

        self.in_channels = in_channels
        self.deep_supervision = deep_supervision
        self.num_levels = len(mults)

        level_widths = [channels] + [channels * m for m in mults]  # widths of x_0 .. x_L
        self.input_block = nn.Conv2d(in_channels, channels, kernel_size=3, padding=1)
        self.encoder = nn.ModuleList(
            _ResAttBlock(level_widths[i], level_widths[i + 1], norm_groups) for i in range(self.num_levels)
        )
        decoder = []
        previous = level_widths[-1]
        for depth in range(self.num_levels - 1, -1, -1):
            decoder.append(_ResAttBlock(level_widths[depth] + previous, level_widths[depth], norm_groups))
            previous = level_widths[depth]
        self.decoder = nn.ModuleList(decoder)

        for depth in range(self.num_levels - 1, 0, -1):
            self.add_module(f"head_level{depth}", _head(level_widths[depth], out_channels, norm_groups))
        if self.num_levels == 2:
            self.head_level2 = None  # two levels have no level-2 decoder output; forward checks for None
        self.head_out = _head(channels, out_channels, norm_groups)

        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="leaky_relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.GroupNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map latents ``(B, in_channels, H, W)`` to ``(B, out_channels, H, W)``, or the stacked heads in training."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"LatentMappingModel expects input of shape (B, {self.in_channels}, H, W), got {list(x.shape)}."
            )
        h = self.input_block(x)
        skips = [h]
        for block in self.encoder:
            h = block(h)
            skips.append(h)
        features: list[torch.Tensor] = []
        for i, block in enumerate(self.decoder):
            h = block(torch.cat([skips[self.num_levels - 1 - i], h], dim=1))
            features.append(h)
        out = self.head_out(h)
        if not (self.training and self.deep_supervision):
            return out
        heads = [out, self.head_level1(features[-2])]
        if self.head_level2 is not None:
            heads.append(self.head_level2(features[-3]))
        return torch.stack(heads, dim=1)
