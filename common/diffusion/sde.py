"""Forward processes of conditional score-based models: the VE SDE and the discrete VP (DDPM) process.

Each process knows how to corrupt clean data for training, which "time" the network sees, its training loss, and
how to turn a network output into a denoised estimate ``D(x, sigma)`` of the clean data in the variance-exploding
parametrisation ``x = x0 + sigma * n``. The last one is what lets every sampler in
:py:mod:`common.diffusion.samplers` run on either process with the same trained network.

Conventions: the network is called as ``network(torch.cat([x, condition], 1), time)`` (the layout of MONAI's
``DiffusionInferer(mode="concat")``); ``condition`` may be ``None`` for an unconditional model.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from monai.networks.schedulers import DDPMScheduler

__all__ = ["SDE_NAMES", "VESDE", "VPSDE", "Process", "make_sde", "truncated_normal"]

Network = Callable[..., torch.Tensor]


def truncated_normal(
    shape: tuple[int, ...] | torch.Size,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    bound: float = 2.0,
) -> torch.Tensor:
    """Standard normal draws clipped to ``[-bound, bound]``, as every Gaussian draw of the original VE sampler."""
    return torch.randn(shape, generator=generator, device=device).clamp_(-bound, bound)


def _network_input(x: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
    return x if condition is None else torch.cat([x, condition], dim=1)


class Process:
    """Interface shared by :py:class:`VESDE` and :py:class:`VPSDE`.

    Attributes:
        name: the config name (``"ve"`` or ``"vp"``).
        data_scale: factor applied to the normalised SDF in ``[-1, 1]`` before it is diffused.
        sigma_min, sigma_max: smallest and largest noise level in the ``x0 + sigma * n`` parametrisation.
    """

    name: str = ""
    data_scale: float = 1.0
    sigma_min: float = 0.0
    sigma_max: float = 1.0

    def sample_times(self, batch_size: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Training times, one per sample."""
        raise NotImplementedError

    def perturb(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The noisy sample at time ``t`` given clean data ``x0`` and standard normal ``noise``."""
        raise NotImplementedError

    def network_time(self, t: torch.Tensor) -> torch.Tensor:
        """What the network receives as its ``timesteps`` argument for training time ``t``."""
        raise NotImplementedError

    def training_prediction(
        self, network: Network, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, condition: torch.Tensor | None
    ) -> torch.Tensor:
        """Perturb ``x0`` with ``noise`` at time ``t`` and return the network's prediction in the loss's units."""
        output = network(_network_input(self.perturb(x0, noise, t), condition), self.network_time(t))
        return self._to_loss_units(output, t)

    def _to_loss_units(self, output: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return output

    def training_target(self, noise: torch.Tensor) -> torch.Tensor:
        """What :py:meth:`training_prediction` should equal, given the noise drawn for the perturbation."""
        return noise

    def loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Training loss (a scalar) of a prediction and its target."""
        return torch.nn.functional.mse_loss(prediction, target)

    def prior_sample(
        self, shape: tuple[int, ...], generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """A draw from the prior at ``sigma_max``, in the ``x0 + sigma * n`` parametrisation."""
        raise NotImplementedError

    def sigma_grid(self, num_steps: int, rho: float = 7.0) -> torch.Tensor:
        """``num_steps`` decreasing noise levels from ``sigma_max`` to ``sigma_min`` (Karras et al. spacing), then 0."""
        if num_steps < 1:
            raise ValueError(f"the number of sampling steps must be >= 1, got {num_steps}.")
        ramp = torch.linspace(0, 1, num_steps, dtype=torch.float64)
        lo, hi = self.sigma_min ** (1 / rho), self.sigma_max ** (1 / rho)
        sigmas = (
            (hi + ramp * (lo - hi)) ** rho if num_steps > 1 else torch.tensor([self.sigma_max], dtype=torch.float64)
        )
        return torch.cat([sigmas, sigmas.new_zeros(1)])

    def denoise(
        self, network: Network, x: torch.Tensor, sigma: float, condition: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Estimate of the clean data from ``x = x0 + sigma * n`` with one network evaluation."""
        raise NotImplementedError


class VESDE(Process):
    """Variance-exploding SDE (Song et al. 2021) as the SDF paper uses it.

    ``sigma(t) = sigma_min * (sigma_max / sigma_min) ** t`` for continuous ``t`` in ``[t_min, 1]``; the network
    sees the raw ``sigma`` and predicts the score ``-n / sigma``; the loss is denoising score matching weighted by
    ``sigma ** 2``, summed over pixels and averaged over the batch. The SDF is diffused at ``data_scale`` (0.2 in
    the paper: the normalised SDF divided by 5), so ``sigma_max = 5`` is 25 times the data range.

    Args:
        sigma_min: smallest noise level.
        sigma_max: largest noise level.
        t_min: smallest training time (avoids ``sigma`` exactly ``sigma_min`` and a vanishing loss weight).
        data_scale: factor applied to the normalised SDF before diffusion.
    """

    name = "ve"

    def __init__(
        self, sigma_min: float = 0.001, sigma_max: float = 5.0, t_min: float = 1e-5, data_scale: float = 0.2
    ) -> None:
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"the VE SDE needs 0 < sigma_min < sigma_max, got {sigma_min} and {sigma_max}.")
        if not 0 <= t_min < 1:
            raise ValueError(f"t_min must be in [0, 1), got {t_min}.")
        if not data_scale > 0:
            raise ValueError(f"data_scale must be positive, got {data_scale}.")
        self.sigma_min, self.sigma_max, self.t_min, self.data_scale = sigma_min, sigma_max, t_min, data_scale

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Noise level at time ``t``."""
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def sample_times(self, batch_size: int, device: torch.device | str | None = None) -> torch.Tensor:
        return torch.rand(batch_size, device=device) * (1 - self.t_min) + self.t_min

    def perturb(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x0 + _per_sample(self.sigma(t), x0) * noise

    def network_time(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigma(t)

    def _to_loss_units(self, output: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # |s - (-n / sigma)|^2 * sigma^2 == |sigma * s - (-n)|^2: compare sigma * score with -noise
        return _per_sample(self.sigma(t), output) * output

    def training_target(self, noise: torch.Tensor) -> torch.Tensor:
        return -noise

    def loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Squared error summed over pixels, averaged over the batch (the original's DSM loss)."""
        return (prediction - target).pow(2).flatten(1).sum(dim=1).mean()

    def prior_sample(
        self, shape: tuple[int, ...], generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> torch.Tensor:
        return self.sigma_max * truncated_normal(shape, generator, device)

    def score(
        self, network: Network, x: torch.Tensor, sigma: float, condition: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The network's score estimate at noise level ``sigma``."""
        return network(_network_input(x, condition), torch.full((x.shape[0],), sigma, device=x.device))

    def denoise(
        self, network: Network, x: torch.Tensor, sigma: float, condition: torch.Tensor | None = None
    ) -> torch.Tensor:
        # Tweedie: E[x0 | x] = x + sigma^2 * score
        return x + sigma**2 * self.score(network, x, sigma, condition)


class VPSDE(Process):
    """Discrete variance-preserving (DDPM) process, the original repository's ``vp`` option.

    Linear betas ``1e-4 .. 0.02`` over ``T = 1000`` steps; the network sees the integer step and predicts the noise
    (epsilon, plain MSE loss); the SDF is diffused in ``[-1, 1]`` (``data_scale=1``). The schedule, the forward
    noising and the ancestral step are MONAI's ``DDPMScheduler`` (with ``clip_sample=False`` as in the original).

    Args:
        num_train_timesteps: ``T``.
        beta_start: first beta.
        beta_end: last beta.
        data_scale: factor applied to the normalised SDF before diffusion.
    """

    name = "vp"

    def __init__(
        self, num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02, data_scale: float = 1.0
    ) -> None:
        if num_train_timesteps < 2:
            raise ValueError(f"num_train_timesteps must be >= 2, got {num_train_timesteps}.")
        if not data_scale > 0:
            raise ValueError(f"data_scale must be positive, got {data_scale}.")
        self.data_scale = data_scale
        self.scheduler = DDPMScheduler(
            num_train_timesteps=num_train_timesteps,
            schedule="linear_beta",
            beta_start=beta_start,
            beta_end=beta_end,
            variance_type="fixed_small",
            clip_sample=False,
            prediction_type="epsilon",
        )
        alphas_cumprod = self.scheduler.alphas_cumprod.double()
        #: noise level of every training step in the ``x0 + sigma * n`` parametrisation
        self.sigmas = ((1 - alphas_cumprod) / alphas_cumprod).sqrt()
        self.sigma_min, self.sigma_max = float(self.sigmas[0]), float(self.sigmas[-1])

    @property
    def num_train_timesteps(self) -> int:
        return self.scheduler.num_train_timesteps

    def sample_times(self, batch_size: int, device: torch.device | str | None = None) -> torch.Tensor:
        return torch.randint(0, self.num_train_timesteps, (batch_size,), device=device)

    def perturb(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.scheduler.add_noise(original_samples=x0, noise=noise, timesteps=t)

    def network_time(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def prior_sample(
        self, shape: tuple[int, ...], generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> torch.Tensor:
        # x_T ~ N(0, 1) in the DDPM parametrisation is x_T * sqrt(1 + sigma_max^2) in the VE one
        return torch.randn(shape, generator=generator, device=device) * math.sqrt(1 + self.sigma_max**2)

    def step_of(self, sigma: float) -> int:
        """The training step whose noise level is closest to ``sigma`` (in log space)."""
        return int((self.sigmas.log() - math.log(sigma)).abs().argmin())

    def sigma_grid(self, num_steps: int, rho: float = 7.0) -> torch.Tensor:
        """Karras spacing snapped to the trained steps (duplicates removed), then 0."""
        grid = super().sigma_grid(num_steps, rho)[:-1]
        steps = sorted({self.step_of(float(s)) for s in grid}, reverse=True)
        return torch.cat([self.sigmas[steps], self.sigmas.new_zeros(1)])

    def denoise(
        self, network: Network, x: torch.Tensor, sigma: float, condition: torch.Tensor | None = None
    ) -> torch.Tensor:
        step = self.step_of(sigma)
        scale = 1 / math.sqrt(1 + float(self.sigmas[step]) ** 2)  # sqrt(alpha_bar)
        timesteps = torch.full((x.shape[0],), step, device=x.device, dtype=torch.long)
        eps = network(_network_input(x * scale, condition), timesteps)
        return x - float(self.sigmas[step]) * eps


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape per-sample ``values`` ``(B,)`` to broadcast over ``like`` ``(B, ...)``."""
    return values.reshape(-1, *([1] * (like.ndim - 1)))


#: Config names of the forward processes.
SDE_NAMES: dict[str, type[Process]] = {"ve": VESDE, "vp": VPSDE}


def make_sde(name: str, **kwargs: float) -> Process:
    """Build the forward process called ``name`` (``"ve"`` or ``"vp"``, the config key ``sde``) with ``kwargs``."""
    if name not in SDE_NAMES:
        raise ValueError(f"unknown sde {name!r} (config key 'sde'); valid names: {', '.join(SDE_NAMES)}.")
    return SDE_NAMES[name](**kwargs)
