"""Exact score/noise "networks" for data whose distribution is known, to test samplers against closed forms."""

from __future__ import annotations

import math

import torch
from torch import nn

from common.diffusion import VPSDE, Process


class GaussianOracle(nn.Module):
    """The exact network for data with every pixel i.i.d. ``N(mean, std ** 2)``, for either process.

    The exact denoiser is ``D(x, sigma) = mean + std^2 / (std^2 + sigma^2) * (x - mean)`` in the ``x0 + sigma * n``
    parametrisation; the VE network returns the score ``(D - x) / sigma^2``, the VP network the noise. Condition
    channels after the first are ignored.
    """

    def __init__(self, process: Process, mean: float, std: float) -> None:
        super().__init__()
        self.process, self.mean, self.var = process, mean, std**2

    def denoised(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.mean + self.var / (self.var + sigma**2) * (x - self.mean)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        x = x[:, :1]
        if isinstance(self.process, VPSDE):
            sigma = self.process.sigmas[timesteps.long()].float().reshape(-1, 1, 1, 1)
            x_ve = x * (1 + sigma**2).sqrt()
            return (x_ve - self.denoised(x_ve, sigma)) / sigma
        sigma = timesteps.float().reshape(-1, 1, 1, 1)
        return (self.denoised(x, sigma) - x) / sigma**2


def ode_solution(x_start: torch.Tensor, sigma_start: float, mean: float, std: float) -> torch.Tensor:
    """Exact probability-flow ODE solution at sigma = 0 for Gaussian data, from ``x_start`` at ``sigma_start``."""
    return mean + (x_start - mean) * std / math.sqrt(std**2 + sigma_start**2)


class ConditionOracle(nn.Module):
    """The exact VE score network for "the clean SDF equals the first condition channel" (a perfect segmenter)."""

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        sigma = timesteps.float().reshape(-1, 1, 1, 1)
        return (x[:, 1:2] - x[:, :1]) / sigma**2


class PoolingAutoencoder(torch.nn.Module):
    """A KL-autoencoder with a known answer: the latent is the grey image average-pooled by ``factor``.

    ``decode`` upsamples (nearest) and repeats the grey values to the channels, so masks that are constant on
    ``factor x factor`` blocks are reconstructed exactly. The log-variance is a constant ``logvar``. It has the
    interface ``common.engines.MaskLatentCodec`` needs (``in_channels``, ``scale_factor``, ``encode_posterior``,
    ``decode``) and one parameter, so that freezing and gradients can be checked.
    """

    def __init__(self, in_channels: int = 3, latent_channels: int = 2, factor: int = 4, logvar: float = -2.0) -> None:
        super().__init__()
        self.in_channels, self.latent_channels, self.factor = in_channels, latent_channels, factor
        self.scale_factor = 0.5
        self.logvar = logvar
        self.gain = torch.nn.Parameter(torch.ones(()))

    def encode_posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        grey = torch.nn.functional.avg_pool2d(x.mean(dim=1, keepdim=True), self.factor) * self.gain
        mean = grey.expand(-1, self.latent_channels, -1, -1)
        return mean, torch.full_like(mean, self.logvar)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        grey = z.mean(dim=1, keepdim=True) / self.scale_factor
        return torch.nn.functional.interpolate(grey, scale_factor=self.factor).expand(-1, self.in_channels, -1, -1)


def tiny_diffusers_vae(seed: int = 0) -> torch.nn.Module:
    """A seeded two-level diffusers ``AutoencoderKL`` (8 and 16 channels), every parameter perturbed.

    GroupNorm's ones and zeros would hide swapped norms, so a conversion test needs perturbed weights.
    """
    import diffusers

    torch.manual_seed(seed)
    vae = diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        latent_channels=4,
        sample_size=32,
    ).eval()
    with torch.no_grad():
        for parameter in vae.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return vae


def tiny_ddpm_unet(seed: int = 0, channels: tuple[int, ...] = (8, 8, 16)) -> torch.nn.Module:
    """A seeded 3-level MONAI ``DiffusionModelUNet`` (2 channels, attention on the middle level) for fast tests."""
    from monai.networks.nets import DiffusionModelUNet

    torch.manual_seed(seed)
    return DiffusionModelUNet(
        spatial_dims=2,
        in_channels=2,
        out_channels=2,
        channels=channels,
        attention_levels=(False, True, False),
        num_res_blocks=1,
        num_head_channels=8,
        norm_num_groups=4,
    )
