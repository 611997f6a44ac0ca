"""Samplers against closed forms: Gaussian data with the exact network, so the right answer is known."""

from __future__ import annotations

import pytest
import torch

from common.diffusion import VESDE, VPSDE, ancestral_sample, dpmpp_2m_sample, make_sde, pc_sample
from tests.oracles import GaussianOracle, ode_solution

MEAN, STD = 0.05, 0.1


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _ode_errors(name: str, steps: tuple[int, ...]) -> dict[int, float]:
    sde = make_sde(name)
    oracle = GaussianOracle(sde, MEAN, STD)
    x = sde.prior_sample((2, 1, 8, 8), _generator())
    exact = ode_solution(x, float(sde.sigma_grid(5)[0]), MEAN, STD)
    return {n: (dpmpp_2m_sample(oracle, sde, x, num_steps=n) - exact).abs().max().item() for n in steps}


def test_ode_sampler_is_second_order_on_the_exact_flow() -> None:
    """VE: DPM-Solver++(2M) converges to the exact probability-flow solution, error / 4 per doubling of steps."""
    errors = _ode_errors("ve", (20, 40, 80))
    assert errors[40] < errors[20] / 3 and errors[80] < errors[40] / 3, errors
    assert errors[80] < 5e-3 * STD


def test_ode_sampler_on_the_vp_process_reaches_the_exact_flow() -> None:
    """VP: the grid is snapped to the trained steps, so convergence is not smooth, but it gets there."""
    errors = _ode_errors("vp", (5, 40))
    assert errors[40] < 0.1 * STD and errors[40] < errors[5] / 10, errors


def test_ode_sampler_counts_one_evaluation_per_step_and_is_deterministic() -> None:
    sde = VESDE()
    oracle = GaussianOracle(sde, MEAN, STD)
    x = sde.prior_sample((1, 1, 4, 4), _generator())
    counter = [0]
    first = dpmpp_2m_sample(oracle, sde, x, num_steps=7, counter=counter)
    assert counter == [7]
    torch.testing.assert_close(dpmpp_2m_sample(oracle, sde, x, num_steps=7), first)


def test_pc_sampler_draws_the_data_distribution() -> None:
    """Predictor-corrector sampling of the VE SDE recovers mean and spread of Gaussian data (in spite of the clipped
    prior draws), with 2 evaluations per step (the first predictor step is a no-op and skipped)."""
    sde = VESDE()
    oracle = GaussianOracle(sde, MEAN, STD)
    x = sde.prior_sample((1, 1, 64, 64), _generator())
    counter = [0]
    sample = pc_sample(oracle, sde, x, num_steps=200, generator=_generator(1), counter=counter)
    assert counter == [399]
    assert sample.mean().item() == pytest.approx(MEAN, abs=0.01)
    assert sample.std().item() == pytest.approx(STD, rel=0.1)


def test_pc_sampler_per_sample_norms_make_samples_independent_of_the_batch() -> None:
    """A sample is the same next to a very different partner (the original's whole-batch norms break this)."""
    sde = VESDE()

    def network(x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return -x[:, :1] * x[:, 1:]  # the condition scales the score, so the two samples' scores differ a lot

    x = sde.prior_sample((2, 1, 8, 8), _generator())
    mixed = torch.stack([torch.ones(1, 8, 8), 100 * torch.ones(1, 8, 8)])
    alike = mixed[[0, 0]]
    with_partner = pc_sample(network, sde, x, mixed, num_steps=5, generator=_generator(3))
    with_twin = pc_sample(network, sde, x, alike, num_steps=5, generator=_generator(3))
    torch.testing.assert_close(with_partner[0], with_twin[0])
    assert not torch.allclose(with_partner[1], with_twin[1])


def test_ancestral_sampler_draws_the_data_distribution() -> None:
    sde = VPSDE(num_train_timesteps=200)
    oracle = GaussianOracle(sde, MEAN, STD)
    x = sde.prior_sample((1, 1, 64, 64), _generator())
    counter = [0]
    sample = ancestral_sample(oracle, sde, x, generator=_generator(1), counter=counter)
    assert counter == [200]
    assert sample.mean().item() == pytest.approx(MEAN, abs=0.01)
    assert sample.std().item() == pytest.approx(STD, rel=0.1)


def test_samplers_refuse_the_wrong_process_and_bad_steps() -> None:
    oracle_ve = GaussianOracle(VESDE(), MEAN, STD)
    x = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match="needs the VE SDE"):
        pc_sample(oracle_ve, VPSDE(), x)
    with pytest.raises(ValueError, match="needs the VP process"):
        ancestral_sample(oracle_ve, VESDE(), x)
    with pytest.raises(ValueError, match="all 1000 trained steps"):
        ancestral_sample(oracle_ve, VPSDE(), x, num_steps=10)
    with pytest.raises(ValueError, match=">= 1"):
        dpmpp_2m_sample(oracle_ve, VESDE(), x, num_steps=0)
    with pytest.raises(ValueError, match="num_steps >= 1"):
        pc_sample(oracle_ve, VESDE(), x, num_steps=0)
