"""SDFSamplingInferer: whole images through sliding windows, K samples, seeds, and clear errors."""

from __future__ import annotations

import pytest
import torch

from common.diffusion import VESDE, VPSDE, SDFSamplingInferer
from common.transforms import SDFSamplesToMaskd
from tests.oracles import ConditionOracle, GaussianOracle


def _sdf_image(size: tuple[int, int] = (40, 52)) -> torch.Tensor:
    """A condition image that is itself an SDF-like map: -0.1 inside a rectangle, +0.1 outside."""
    image = torch.full((1, 1, *size), 0.1)
    image[..., 5:30, 10:45] = -0.1
    return image


@pytest.mark.parametrize(("sampler", "steps"), [("ode", 3), ("pc", 20)])
def test_sliding_window_segments_a_larger_image_exactly(sampler: str, steps: int) -> None:
    image = _sdf_image()
    inferer = SDFSamplingInferer(VESDE(), sampler=sampler, num_steps=steps, num_samples=2, roi_size=16, overlap=0.25)
    summary = inferer(image, ConditionOracle())
    assert summary.shape == (1, 2, 40, 52)
    out = SDFSamplesToMaskd(keys="pred", sdf_key="sdf")({"pred": summary[0]})
    torch.testing.assert_close(out["pred"], (image[0] <= 0).float())
    assert torch.all(out["uncertainty"] == 0), "every sample agrees with a perfect network"
    torch.testing.assert_close(out["sdf"], image[0], atol=0.01, rtol=0)


def test_k_samples_give_disagreement_where_the_data_is_uncertain() -> None:
    """Gaussian data around the threshold: samples disagree, so uncertainty is high; far from it, they agree."""
    oracle_uncertain = GaussianOracle(VESDE(), mean=0.003, std=0.05)
    inferer = SDFSamplingInferer(VESDE(), sampler="ode", num_steps=5, num_samples=8, seed=0)
    summary = inferer(torch.zeros(1, 1, 16, 16), oracle_uncertain)
    uncertainty = SDFSamplesToMaskd(keys="pred")({"pred": summary[0]})["uncertainty"]
    assert uncertainty.mean() > 0.5 and uncertainty.min() >= 0 and uncertainty.max() <= 1
    certain = inferer(torch.zeros(1, 1, 16, 16), GaussianOracle(VESDE(), mean=-0.15, std=0.01))
    assert torch.all(certain[:, 1] == 1), "every sample is foreground"
    assert inferer.last_nfe == 5


def test_seed_makes_results_reproducible_and_independent_of_order() -> None:
    oracle = GaussianOracle(VESDE(), mean=0.0, std=0.05)
    inferer = SDFSamplingInferer(VESDE(), sampler="ode", num_steps=3, num_samples=2, seed=7)
    image = torch.zeros(1, 1, 8, 8)
    first = inferer(image, oracle)
    inferer(torch.zeros(1, 1, 12, 12), oracle)
    torch.testing.assert_close(inferer(image, oracle), first)
    fresh = SDFSamplingInferer(VESDE(), sampler="ode", num_steps=3, num_samples=2, seed=None)
    assert not torch.equal(fresh(image, oracle), fresh(image, oracle))


def test_image_smaller_than_the_window_is_an_error() -> None:
    inferer = SDFSamplingInferer(VESDE(), sampler="ode", num_steps=2, roi_size=(32, 32))
    with pytest.raises(ValueError, match=r"smaller than the sampling window \[32, 32\].*'patch_size'"):
        inferer(torch.zeros(1, 1, 32, 20), ConditionOracle())


@pytest.mark.parametrize(
    ("process", "kwargs", "match"),
    [
        (VESDE(), {"sampler": "euler"}, "unknown sampler 'euler'.*'sampler'"),
        (VESDE(), {"sampler": "ode", "num_steps": 0}, ">= 1.*'num_steps'"),
        (VESDE(), {"num_samples": 0}, "'num_samples'"),
        (VESDE(), {"sampler": "ancestral"}, "needs sde 'vp'"),
        (VPSDE(), {"sampler": "pc"}, "needs sde 've'"),
    ],
)
def test_bad_settings_name_the_config_key(process: object, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SDFSamplingInferer(process, **kwargs)
