"""Diffusion training steps with MONAI's SupervisedTrainer: what the network sees, what the loss compares."""

from __future__ import annotations

import pytest
import torch
from monai.engines import SupervisedTrainer

from common.diffusion import VESDE, VPSDE, make_sde
from common.engines import DiffusionPrepareBatchd, DiffusionTrainingInferer
from common.networks import ScoreUNet


def _batch(size: int = 4) -> dict[str, torch.Tensor]:
    sdf = torch.full((size, 1, 16, 16), 0.1)
    sdf[:, :, 4:12, 4:12] = -0.1
    return {"sdf": sdf, "image": -sdf * 5, "label": (sdf <= 0).float()}


@pytest.mark.parametrize("name", ["ve", "vp"])
def test_prepare_batch_draws_noise_and_times_and_keeps_the_condition(name: str) -> None:
    process = make_sde(name)
    batch = _batch()
    x0, target, args, kwargs = DiffusionPrepareBatchd(process)(batch)
    assert torch.equal(x0, batch["sdf"]) and args == ()
    assert torch.equal(kwargs["condition"], batch["image"])
    assert torch.equal(target, process.training_target(kwargs["noise"]))
    assert kwargs["t"].shape == (4,)
    assert kwargs["noise"].std() > 0.5


def test_prepare_batch_names_a_missing_key() -> None:
    with pytest.raises(KeyError, match="no key 'sdf'"):
        DiffusionPrepareBatchd(VESDE())({"image": torch.zeros(1, 1, 4, 4)})


def test_training_inferer_feeds_the_perturbed_data_and_the_network_time() -> None:
    process, seen = VESDE(), {}

    def network(x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        seen["x"], seen["t"] = x, timesteps
        return torch.zeros_like(x[:, :1])

    batch = _batch(2)
    x0, _target, _, kwargs = DiffusionPrepareBatchd(process)(batch)
    DiffusionTrainingInferer(process)(x0, network, **kwargs)
    sigma = process.sigma(kwargs["t"]).reshape(-1, 1, 1, 1)
    torch.testing.assert_close(seen["x"][:, :1], x0 + sigma * kwargs["noise"])
    torch.testing.assert_close(seen["x"][:, 1:], batch["image"])
    torch.testing.assert_close(seen["t"], sigma.flatten())


def _fixed_loss(process: object, net: torch.nn.Module) -> float:
    """Loss of ``net`` on one fixed draw of noise and times (so before/after compare the same problem)."""
    torch.manual_seed(123)
    x0, target, _, kwargs = DiffusionPrepareBatchd(process)(_batch(64))
    with torch.no_grad():
        return float(process.loss(DiffusionTrainingInferer(process)(x0, net, **kwargs), target))


@pytest.mark.parametrize("process", [VESDE(), VPSDE(num_train_timesteps=100)])
def test_supervised_trainer_lowers_the_loss(process: object) -> None:
    torch.manual_seed(0)
    net = ScoreUNet(dim=8, fusion_channels=4, channel_mults=(1, 2), attention_heads=1, attention_head_channels=8)
    before = _fixed_loss(process, net)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=60,
        train_data_loader=[_batch(8)],
        network=net,
        optimizer=torch.optim.Adam(net.parameters(), 3e-3),
        loss_function=process.loss,
        prepare_batch=DiffusionPrepareBatchd(process),
        inferer=DiffusionTrainingInferer(process),
    )
    trainer.run()
    after = _fixed_loss(process, net)
    assert after < 0.7 * before, (before, after)
