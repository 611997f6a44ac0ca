"""Tests of common.engines.refresh_batchnorm_statistics: re-estimated statistics, restored state, the EMA use case."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional

from common.engines import ExponentialMovingAverage, refresh_batchnorm_statistics
from common.networks import OASISGenerator


def _batches(count: int, mean: float = 3.0, std: float = 2.0, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [mean + std * torch.randn(8, 2, 4, 4, generator=generator) for _ in range(count)]


def _network() -> nn.Module:
    return nn.Sequential(nn.BatchNorm2d(2), nn.Dropout(0.5)).eval().requires_grad_(False)


def test_statistics_become_the_average_over_the_batches() -> None:
    network = _network()
    batches = _batches(10)
    assert refresh_batchnorm_statistics(network, batches, num_batches=4) == 4
    norm = network[0]
    used = torch.stack(batches[:4])  # only the first num_batches
    expected_mean = used.mean(dim=(1, 3, 4)).mean(0)
    expected_var = torch.stack([b.transpose(0, 1).flatten(1).var(1) for b in batches[:4]]).mean(0)
    torch.testing.assert_close(norm.running_mean, expected_mean)
    torch.testing.assert_close(norm.running_var, expected_var)
    assert int(norm.num_batches_tracked) == 4
    assert torch.allclose(norm.running_mean, torch.full((2,), 3.0), atol=0.3)
    assert torch.allclose(norm.running_var, torch.full((2,), 4.0), atol=1.0)


def test_momentum_mode_and_gradients_are_restored() -> None:
    network = _network()
    network[0].momentum = 0.3
    refresh_batchnorm_statistics(network, _batches(3))
    assert network[0].momentum == 0.3 and not network.training and not network[0].training
    assert not any(p.requires_grad for p in network.parameters())
    trained = nn.Sequential(nn.BatchNorm2d(2), nn.Dropout(0.5)).train()
    trained[1].eval()  # a mixed-mode network keeps each module's mode
    refresh_batchnorm_statistics(trained, _batches(2))
    assert trained.training and trained[0].training and not trained[1].training


def test_prepare_batch_and_positional_inputs() -> None:
    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = nn.BatchNorm2d(2)

        def forward(self, x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
            return self.norm(x + shift)

    network = TwoInputs()
    batches = [{"image": b, "shift": torch.tensor(1.0)} for b in _batches(3)]
    used = refresh_batchnorm_statistics(network, batches, prepare_batch=lambda item: (item["image"], item["shift"]))
    assert used == 3
    expected = torch.stack([b["image"] + 1 for b in batches]).mean(dim=(1, 3, 4)).mean(0)
    torch.testing.assert_close(network.norm.running_mean, expected)


def test_no_batches_is_an_error_that_keeps_the_statistics() -> None:
    network = _network()
    refresh_batchnorm_statistics(network, _batches(2))
    before = network[0].running_mean.clone(), network[0].running_var.clone()
    with pytest.raises(ValueError, match="no batches"):
        refresh_batchnorm_statistics(network, [])
    torch.testing.assert_close(network[0].running_mean, before[0])
    torch.testing.assert_close(network[0].running_var, before[1])
    with pytest.raises(ValueError, match="num_batches"):
        refresh_batchnorm_statistics(network, _batches(1), num_batches=0)
    assert refresh_batchnorm_statistics(nn.Linear(2, 2), _batches(1)) == 0  # nothing to refresh


def test_refreshes_an_ema_oasis_generator() -> None:
    """The EMA generator's copied statistics are replaced by those of its own activations on training labels."""
    torch.manual_seed(0)
    generator = OASISGenerator(3, channels=4, channel_mults=(2, 1), z_dim=4, spade_hidden=8, image_size=8)
    ema = ExponentialMovingAverage(generator, decay=0.9)
    norm = ema.ema_network.body[0].norm_0.first_norm
    assert torch.all(norm.running_mean == 0) and torch.all(norm.running_var == 1)  # copied, never estimated
    classes = [torch.randint(0, 3, (4, 8, 8), generator=torch.Generator().manual_seed(i)) for i in range(5)]
    used = refresh_batchnorm_statistics(
        ema.ema_network, classes, prepare_batch=lambda c: functional.one_hot(c, 3).permute(0, 3, 1, 2).float()
    )
    assert used == 5 and int(norm.num_batches_tracked) == 5
    assert not torch.allclose(norm.running_mean, torch.zeros_like(norm.running_mean))
    assert not ema.ema_network.training
    assert torch.all(generator.body[0].norm_0.first_norm.running_mean == 0)  # the trained generator is untouched
