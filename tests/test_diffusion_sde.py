"""VE SDE and VP process: schedules, perturbation, losses at known values, denoisers that invert the perturbation."""

from __future__ import annotations

import math

import pytest
import torch

from common.diffusion import VESDE, VPSDE, make_sde, truncated_normal
from tests.oracles import GaussianOracle


def test_make_sde_names_and_bad_name() -> None:
    assert isinstance(make_sde("ve"), VESDE) and isinstance(make_sde("vp"), VPSDE)
    with pytest.raises(ValueError, match=r"unknown sde 'vx'.*'sde'"):
        make_sde("vx")


def test_ve_schedule_endpoints_and_paper_constants() -> None:
    sde = VESDE()
    assert (sde.sigma_min, sde.sigma_max, sde.data_scale) == (0.001, 5.0, 0.2)
    torch.testing.assert_close(sde.sigma(torch.tensor([0.0, 0.5, 1.0])), torch.tensor([0.001, math.sqrt(0.005), 5.0]))
    t = sde.sample_times(10_000)
    assert t.min() >= sde.t_min and t.max() <= 1
    assert torch.equal(sde.network_time(t), sde.sigma(t)), "the VE network sees the raw sigma"


def test_ve_loss_is_sigma_squared_weighted_dsm() -> None:
    sde = VESDE()
    x0, noise, t = torch.zeros(2, 1, 4, 4), torch.randn(2, 1, 4, 4), torch.tensor([0.3, 0.9])
    sigma = sde.sigma(t).reshape(-1, 1, 1, 1)
    perfect = lambda x, time: -noise / sigma  # noqa: E731 - the true score of the perturbation
    prediction = sde.training_prediction(lambda x, time: perfect(x, time), x0, noise, t, None)
    assert sde.loss(prediction, sde.training_target(noise)).item() == pytest.approx(0.0, abs=1e-10)
    zero = sde.training_prediction(lambda x, time: torch.zeros_like(x), x0, noise, t, None)
    # score 0 costs |noise|^2 summed over pixels, averaged over the batch
    expected = noise.pow(2).flatten(1).sum(1).mean()
    torch.testing.assert_close(sde.loss(zero, sde.training_target(noise)), expected)


def test_network_receives_noisy_data_then_condition() -> None:
    sde, seen = VESDE(), {}

    def network(x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        seen["x"], seen["time"] = x, time
        return x[:, :1]

    x0, noise, t, condition = (
        torch.zeros(1, 1, 2, 2),
        torch.ones(1, 1, 2, 2),
        torch.tensor([1.0]),
        torch.full((1, 3, 2, 2), 7.0),
    )
    sde.training_prediction(network, x0, noise, t, condition)
    assert seen["x"].shape[1] == 4
    torch.testing.assert_close(seen["x"][:, :1], torch.full((1, 1, 2, 2), 5.0))
    torch.testing.assert_close(seen["x"][:, 1:], condition)
    torch.testing.assert_close(seen["time"], torch.tensor([5.0]))


def test_vp_matches_ddpm_linear_schedule() -> None:
    sde = VPSDE()
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    alpha_bar = torch.cumprod(1 - betas, 0)
    torch.testing.assert_close(sde.sigmas, ((1 - alpha_bar) / alpha_bar).sqrt(), rtol=1e-3, atol=0)
    t = sde.sample_times(5000)
    assert t.dtype == torch.long and t.min() >= 0 and t.max() <= 999
    x0, noise = torch.ones(1, 1, 2, 2), torch.randn(1, 1, 2, 2)
    step = torch.tensor([500])
    expected = alpha_bar[500].sqrt() * x0 + (1 - alpha_bar[500]).sqrt() * noise
    torch.testing.assert_close(sde.perturb(x0, noise, step), expected.float())
    assert sde.training_target(noise) is noise, "the VP network predicts the noise"


@pytest.mark.parametrize("name", ["ve", "vp"])
def test_denoise_with_oracle_recovers_point_mass(name: str) -> None:
    """Data that is a single point: the exact denoiser returns it from any noisy sample."""
    sde = make_sde(name, **({"num_train_timesteps": 100} if name == "vp" else {}))
    oracle = GaussianOracle(sde, mean=0.1, std=0.0)
    x = 0.1 + 0.7 * torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(sde.denoise(oracle, x, 0.7), torch.full_like(x, 0.1), atol=1e-2, rtol=0)


@pytest.mark.parametrize("num_steps", [1, 2, 5, 20])
def test_sigma_grid_decreases_to_zero(num_steps: int) -> None:
    for sde in (VESDE(), VPSDE()):
        grid = sde.sigma_grid(num_steps)
        assert grid[-1] == 0 and torch.all(grid[:-1] > grid[1:])
        assert grid[0] == pytest.approx(sde.sigma_max, rel=1e-6)
        assert len(grid) <= num_steps + 1


def test_sigma_grid_rejects_no_steps() -> None:
    with pytest.raises(ValueError, match=">= 1"):
        VESDE().sigma_grid(0)


def test_truncated_normal_is_clipped() -> None:
    draws = truncated_normal((100_000,), torch.Generator().manual_seed(0))
    assert draws.abs().max() == 2.0 and draws.std() < 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"sigma_min": 5.0, "sigma_max": 1.0}, "sigma_min < sigma_max"), ({"data_scale": 0.0}, "data_scale")],
)
def test_ve_rejects_bad_parameters(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        VESDE(**kwargs)
