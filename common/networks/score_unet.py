"""Conditional score network of score-based SDF segmentation (Bogensperger et al., GCPR 2023).

The network is the "annotated diffusion" U-Net the original code adapted (``models/ddpm.py::Network``), with the
conditioning image entering by early fusion (SegDiff style): the noisy SDF and the image each pass through a
residual block of their own, the two feature maps are concatenated and a 7x7 convolution mixes them before the
U-Net proper. The input is one tensor, the noisy SDF channels followed by the image channels, the layout of MONAI's
``DiffusionInferer(mode="concat")``, so the network can be swapped for a MONAI ``DiffusionModelUNet``.

Kept from the original for fidelity: additive (not scale-shift) time conditioning, GroupNorm with few groups,
linear attention at every level and full attention only in the bottleneck, and the first encoder level's skip
connection that is stored but never used by the decoder (one decoder level fewer than encoder levels).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["ScoreUNet"]


class SinusoidalEmbedding(nn.Module):
    """Transformer-style sinusoidal embedding of a real-valued time (a noise level sigma or a step index)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim < 4 or dim % 2:
            raise ValueError(f"the time embedding width must be an even number >= 4, got {dim}.")
        half = dim // 2
        self.register_buffer("frequencies", torch.exp(torch.arange(half) * (-math.log(10000.0) / (half - 1))))

    def forward(self, time: torch.Tensor) -> torch.Tensor:
        angles = time.reshape(-1, 1).float() * self.frequencies.reshape(1, -1)
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class ConvNormAct(nn.Module):
    """3x3 convolution, GroupNorm, SiLU."""

    def __init__(self, in_channels: int, out_channels: int, groups: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm = nn.GroupNorm(groups, out_channels)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class ResnetBlock(nn.Module):
    """Two conv-norm-act blocks with the time embedding added in between, plus a (1x1 conv) residual path.

    ``time_dim=0`` makes a block without time input (the early-fusion encoders and the head use those).
    """

    def __init__(self, in_channels: int, out_channels: int, groups: int, time_dim: int = 0) -> None:
        super().__init__()
        self.time_proj = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, out_channels)) if time_dim else None
        self.block1 = ConvNormAct(in_channels, out_channels, groups)
        self.block2 = ConvNormAct(out_channels, out_channels, groups)
        self.residual = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, time_emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.block1(x)
        if self.time_proj is not None and time_emb is not None:
            h = h + self.time_proj(time_emb)[:, :, None, None]
        return self.block2(h) + self.residual(x)


class _SelfAttention(nn.Module):
    """Pre-norm and query/key/value projection shared by the two attention layers."""

    def __init__(self, channels: int, heads: int, head_channels: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = head_channels**-0.5
        self.norm = nn.GroupNorm(1, channels)
        self.to_qkv = nn.Conv2d(channels, heads * head_channels * 3, 1, bias=False)

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values ``(B, heads, head_channels, H * W)`` of the normalised input."""
        b, _, h, w = x.shape
        q, k, v = self.to_qkv(self.norm(x)).reshape(b, 3, self.heads, -1, h * w).unbind(1)
        return q, k, v


class LinearAttention(_SelfAttention):
    """Pre-normed residual linear attention (Shen et al.): softmax over channels of q and over positions of k."""

    def __init__(self, channels: int, heads: int = 4, head_channels: int = 32) -> None:
        super().__init__(channels, heads, head_channels)
        self.to_out = nn.Sequential(nn.Conv2d(heads * head_channels, channels, 1), nn.GroupNorm(1, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x)
        q = q.softmax(dim=-2) * self.scale
        k = k.softmax(dim=-1)
        context = torch.einsum("bhdn,bhen->bhde", k, v)
        out = torch.einsum("bhde,bhdn->bhen", context, q).reshape(x.shape[0], -1, x.shape[2], x.shape[3])
        return self.to_out(out) + x


class Attention(_SelfAttention):
    """Pre-normed residual multi-head softmax self-attention over all positions."""

    def __init__(self, channels: int, heads: int = 4, head_channels: int = 32) -> None:
        super().__init__(channels, heads, head_channels)
        self.to_out = nn.Conv2d(heads * head_channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x)
        similarity = torch.einsum("bhdi,bhdj->bhij", q * self.scale, k)
        attention = (similarity - similarity.amax(dim=-1, keepdim=True).detach()).softmax(dim=-1)
        out = torch.einsum("bhij,bhdj->bhdi", attention, v).reshape(x.shape[0], -1, x.shape[2], x.shape[3])
        return self.to_out(out) + x


class Level(nn.Module):
    """One U-Net level: two time-conditioned residual blocks, linear attention, then a resampling layer."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        groups: int,
        time_dim: int,
        resample: nn.Module,
        heads: int,
        head_channels: int,
    ) -> None:
        super().__init__()
        self.block1 = ResnetBlock(in_channels, out_channels, groups, time_dim)
        self.block2 = ResnetBlock(out_channels, out_channels, groups, time_dim)
        self.attention = LinearAttention(out_channels, heads, head_channels)
        self.resample = resample

    def forward(self, x: torch.Tensor, time_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the features before resampling (the skip connection) and after it."""
        x = self.attention(self.block2(self.block1(x, time_emb), time_emb))
        return x, self.resample(x)


class ScoreUNet(nn.Module):
    """Conditional score (VE) or noise (VP) network with early fusion of the image, after Bogensperger et al.

    ``forward(x, timesteps)``: ``x`` is ``(B, sdf_channels + image_channels, H, W)``, the noisy SDF followed by the
    conditioning image; ``timesteps`` is ``(B,)``, the raw noise level sigma (VE) or the step index (VP). The output
    ``(B, sdf_channels, H, W)`` is the score (VE) or the predicted noise (VP). ``H`` and ``W`` must be divisible by
    ``2 ** (len(channel_mults) - 1)``.

    Defaults are the original's (about 64 M parameters at ``dim=128``).

    Args:
        sdf_channels: channels of the diffused SDF.
        image_channels: channels of the conditioning image (1 for the original's grayscale input, 3 for RGB).
        dim: base width; level ``i`` has ``dim * channel_mults[i]`` channels and the time embedding ``4 * dim``.
        fusion_channels: width of each early-fusion branch (the original's ``init_dim``/``n_fm``).
        channel_mults: width multipliers of the encoder levels (at least 2).
        norm_groups: GroupNorm groups of the residual blocks; must divide every width.
        attention_heads: heads of every (linear and full) attention layer.
        attention_head_channels: channels per attention head.
    """

    def __init__(
        self,
        sdf_channels: int = 1,
        image_channels: int = 1,
        dim: int = 128,
        fusion_channels: int = 10,
        channel_mults: Sequence[int] = (1, 2, 4, 4),
        norm_groups: int = 2,
        attention_heads: int = 4,
        attention_head_channels: int = 32,
    ) -> None:
        super().__init__()
        widths = [dim * m for m in channel_mults]
        if len(widths) < 2:
            raise ValueError(f"channel_mults needs at least two levels, got {list(channel_mults)}.")
        for name, width in (("fusion_channels", fusion_channels), *(("dim * channel_mults", w) for w in widths)):
            if width <= 0 or width % norm_groups:
                raise ValueError(f"{name} = {width} must be a positive multiple of norm_groups = {norm_groups}.")
        self.sdf_channels = sdf_channels
        self.image_channels = image_channels
        self.levels = len(widths)
        time_dim = 4 * dim
        self.time_embedding = nn.Sequential(
            SinusoidalEmbedding(dim), nn.Linear(dim, time_dim), nn.GELU(), nn.Linear(time_dim, time_dim)
        )
        self.sdf_encoder = ResnetBlock(sdf_channels, fusion_channels, norm_groups)
        self.image_encoder = ResnetBlock(image_channels, fusion_channels, norm_groups)
        self.fusion_conv = nn.Conv2d(2 * fusion_channels, 2 * fusion_channels, 7, padding=3)

        inputs = [2 * fusion_channels, *widths[:-1]]
        attention = (attention_heads, attention_head_channels)
        self.down = nn.ModuleList(
            Level(c_in, c_out, norm_groups, time_dim, self._downsample(c_out, i < len(widths) - 1), *attention)
            for i, (c_in, c_out) in enumerate(zip(inputs, widths, strict=True))
        )
        self.mid_block1 = ResnetBlock(widths[-1], widths[-1], norm_groups, time_dim)
        self.mid_attention = Attention(widths[-1], *attention)
        self.mid_block2 = ResnetBlock(widths[-1], widths[-1], norm_groups, time_dim)
        self.up = nn.ModuleList(
            Level(2 * c_out, c_in, norm_groups, time_dim, nn.ConvTranspose2d(c_in, c_in, 4, 2, 1), *attention)
            for c_in, c_out in reversed(list(itertools.pairwise(widths)))
        )
        self.head = nn.Sequential(ResnetBlock(widths[0], widths[0], norm_groups), nn.Conv2d(widths[0], sdf_channels, 1))

    @staticmethod
    def _downsample(channels: int, enabled: bool) -> nn.Module:
        """Strided 4x4 convolution halving the resolution, or identity for the deepest level."""
        return nn.Conv2d(channels, channels, 4, 2, 1) if enabled else nn.Identity()

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        expected = self.sdf_channels + self.image_channels
        if x.ndim != 4 or x.shape[1] != expected:
            raise ValueError(
                f"ScoreUNet expects (B, {expected}, H, W): {self.sdf_channels} noisy SDF channel(s) followed by "
                f"{self.image_channels} image channel(s), got shape {list(x.shape)}."
            )
        factor = 2 ** (self.levels - 1)
        if x.shape[2] % factor or x.shape[3] % factor:
            raise ValueError(f"ScoreUNet needs H and W divisible by {factor}, got {list(x.shape[2:])}.")
        time_emb = self.time_embedding(timesteps.reshape(-1).expand(x.shape[0]))
        sdf, image = x[:, : self.sdf_channels], x[:, self.sdf_channels :]
        h = self.fusion_conv(torch.cat([self.sdf_encoder(sdf), self.image_encoder(image)], dim=1))
        skips: list[torch.Tensor] = []
        for level in self.down:
            skip, h = level(h, time_emb)
            skips.append(skip)
        h = self.mid_block2(self.mid_attention(self.mid_block1(h, time_emb)), time_emb)
        for level in self.up:
            _, h = level(torch.cat([h, skips.pop()], dim=1), time_emb)
        return self.head(h)
