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
