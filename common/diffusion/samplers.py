"""Samplers of conditional score-based models, written against :py:mod:`common.diffusion.sde`.

Every sampler has the same shape: ``sampler(network, process, x, condition, ..., generator) -> x0`` where ``x`` is
the prior draw (``process.prior_sample``) and the result is the clean sample. Each returns the number of network
evaluations it made through ``counter`` when one is given (a one-element list, incremented), so benchmarks can
report NFE honestly.
"""

from __future__ import annotations

import math

import torch

from common.diffusion.sde import VESDE, VPSDE, Network, Process, truncated_normal

__all__ = ["SAMPLERS", "ancestral_sample", "dpmpp_2m_sample", "pc_sample"]


def _count(counter: list[int] | None) -> None:
    if counter is not None:
        counter[0] += 1


def _norm(x: torch.Tensor) -> torch.Tensor:
    """Per-sample Euclidean norm, shaped to broadcast over ``x``."""
    return x.flatten(1).norm(dim=1).reshape(-1, *([1] * (x.ndim - 1)))


@torch.no_grad()
def pc_sample(
    network: Network,
    process: VESDE,
    x: torch.Tensor,
    condition: torch.Tensor | None = None,
    num_steps: int = 200,
    corrector_steps: int = 1,
    snr: float = 0.15,
    generator: torch.Generator | None = None,
    counter: list[int] | None = None,
) -> torch.Tensor:
    """Predictor-corrector sampling of the VE SDE (Algorithm 1 of Bogensperger et al., after Song et al. 2021).

    Reverse-diffusion predictor then ``corrector_steps`` Langevin corrector steps with step size
    ``2 * (snr * |z| / |score|) ** 2`` on the grid ``t = linspace(1 - 1 / num_steps, 0, num_steps)``. As in the
    original, every Gaussian draw is clipped to ``[-2, 2]`` and the result is the last corrector's mean (before its
    noise). Unlike the original, which took the norms over the whole batch, the norms are per sample (as in Song et
    al.'s code), so a sample does not depend on the others in its batch.
    """
    if not isinstance(process, VESDE):
        raise ValueError(f"the predictor-corrector sampler needs the VE SDE (sde 've'), got sde {process.name!r}.")
    if num_steps < 1 or corrector_steps < 0:
        raise ValueError(
            f"pc sampling needs num_steps >= 1 and corrector_steps >= 0, got {num_steps}, {corrector_steps}."
        )
    times = torch.linspace(1 - 1 / num_steps, 0, num_steps, dtype=torch.float64)
    sigmas = [float(s) for s in process.sigma(times)]
    x_mean = x
    sigma_prev = sigmas[0]
    for sigma in sigmas:
        tau = sigma_prev**2 - sigma**2
        if tau > 0:  # the first predictor step has tau = 0 and does nothing
            _count(counter)
            score = process.score(network, x, sigma_prev, condition)
            x = x + tau * score + math.sqrt(tau) * truncated_normal(x.shape, generator, x.device)
        for _ in range(corrector_steps):
            _count(counter)
            z = truncated_normal(x.shape, generator, x.device)
            score = process.score(network, x, sigma, condition)
            step = 2 * (snr * _norm(z) / _norm(score).clamp_min(1e-12)) ** 2
            x_mean = x + step * score
            x = x_mean + (2 * step).sqrt() * z
        if not corrector_steps:
            x_mean = x
        sigma_prev = sigma
    return x_mean


@torch.no_grad()
def ancestral_sample(
    network: Network,
    process: VPSDE,
    x: torch.Tensor,
    condition: torch.Tensor | None = None,
    num_steps: int | None = None,
    generator: torch.Generator | None = None,
    counter: list[int] | None = None,
) -> torch.Tensor:
    """DDPM ancestral sampling (Ho et al. 2020) over all trained steps with the posterior variance, as the original.

    ``x`` is a prior draw in the ``x0 + sigma * n`` parametrisation (what ``VPSDE.prior_sample`` returns); the
    ancestral steps are MONAI's ``DDPMScheduler.step``. ``num_steps`` must be None or the number of trained steps.
    """
    if not isinstance(process, VPSDE):
        raise ValueError(f"ancestral DDPM sampling needs the VP process (sde 'vp'), got sde {process.name!r}.")
    scheduler = process.scheduler
    if num_steps not in (None, scheduler.num_train_timesteps):
        raise ValueError(
            f"ancestral sampling runs all {scheduler.num_train_timesteps} trained steps; got num_steps {num_steps}. "
            "Use the 'ode' sampler for fewer network evaluations."
        )
    scheduler.set_timesteps(scheduler.num_train_timesteps, device=x.device)
    sample = x / math.sqrt(1 + process.sigma_max**2)
    for step in scheduler.timesteps:
        _count(counter)
        timesteps = torch.full((x.shape[0],), int(step), device=x.device, dtype=torch.long)
        inputs = sample if condition is None else torch.cat([sample, condition], dim=1)
        sample, _ = scheduler.step(network(inputs, timesteps), int(step), sample, generator=generator)
    return sample


@torch.no_grad()
def dpmpp_2m_sample(
    network: Network,
    process: Process,
    x: torch.Tensor,
    condition: torch.Tensor | None = None,
    num_steps: int = 10,
    generator: torch.Generator | None = None,
    counter: list[int] | None = None,
    rho: float = 7.0,
) -> torch.Tensor:
    """Deterministic probability-flow ODE solver DPM-Solver++(2M) (Lu et al. 2022), one evaluation per step.

    Second-order multistep solver in ``lambda = -log(sigma)`` on Karras-spaced noise levels; the first and the
    last step are first order (the last returns the denoised estimate). Works with any :py:class:`Process`, so a
    network trained with the VE or the VP process can be sampled with as few as ``num_steps`` evaluations.
    ``generator`` is unused (the solver is deterministic given ``x``); it keeps the samplers' signatures alike.
    """
    sigmas = [float(s) for s in process.sigma_grid(num_steps, rho)]
    old_denoised: torch.Tensor | None = None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        _count(counter)
        denoised = process.denoise(network, x, sigma, condition)
        if sigma_next == 0:
            return denoised
        h = math.log(sigma / sigma_next)
        if old_denoised is not None:
            r = math.log(sigmas[i - 1] / sigma) / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        else:
            denoised_d = denoised
        x = (sigma_next / sigma) * x - math.expm1(-h) * denoised_d
        old_denoised = denoised
    return x


#: Config names of the samplers.
SAMPLERS = {"pc": pc_sample, "ancestral": ancestral_sample, "ode": dpmpp_2m_sample}
