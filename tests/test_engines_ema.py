"""Tests of common.engines.ExponentialMovingAverage: known values, buffers, wrappers, checkpoints, trainer runs."""

from __future__ import annotations

import io

import pytest
import torch
from ignite.engine import Events
from monai.engines import SupervisedTrainer
from torch import nn

from common.engines import AtomicCheckpointSaver, ExponentialMovingAverage, ResumeFromCheckpoint


def _linear(value: float = 0.0) -> nn.Linear:
    network = nn.Linear(2, 1)
    _fill(network, value)
    return network


@torch.no_grad()
def _fill(network: nn.Module, value: float) -> None:
    for param in network.parameters():
        param.fill_(value)


class _Wrapper(nn.Module):
    """Stands in for DistributedDataParallel: the real network is ``.module``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


# ----------------------------------------------------------------------------------------------------------------
# updates


def test_known_values_after_k_updates():
    """Start 0, network at 1: after k updates the EMA is 1 - d^k; then a jump to 3 adds (1 - d) * (3 - ema)."""
    network, decay = _linear(0.0), 0.9
    ema = ExponentialMovingAverage(network, decay=decay)
    _fill(network, 1.0)
    for k in range(1, 6):
        ema.update()
        for param in ema.ema_network.parameters():
            torch.testing.assert_close(param, torch.full_like(param, 1 - decay**k))
    _fill(network, 3.0)
    ema.update()
    expected = decay * (1 - decay**5) + (1 - decay) * 3.0
    for param in ema.ema_network.parameters():
        torch.testing.assert_close(param, torch.full_like(param, expected))
    assert ema.num_updates == 6


def test_copy_update_and_decay_zero_follow_the_network():
    network = _linear(0.0)
    ema = ExponentialMovingAverage(network, decay=0.999)
    _fill(network, 2.5)
    ema.update(copy=True)
    assert all(torch.equal(e, p) for e, p in zip(ema.ema_network.parameters(), network.parameters(), strict=True))
    follower = ExponentialMovingAverage(network, decay=0.0)
    _fill(network, -1.0)
    follower.update()
    assert all(torch.equal(e, p) for e, p in zip(follower.ema_network.parameters(), network.parameters(), strict=True))


def test_ema_network_is_a_frozen_eval_copy():
    network = _linear(1.0).train()
    ema = ExponentialMovingAverage(network)
    assert isinstance(ema.ema_network, nn.Linear) and ema.ema_network is not network
    assert not ema.ema_network.training
    assert not any(p.requires_grad for p in ema.ema_network.parameters())
    assert all(p.requires_grad for p in network.parameters())
    _fill(network, 5.0)  # the copy is independent until an update
    assert torch.all(ema.ema_network.weight == 1.0)


def test_buffers_are_copied_and_parameters_averaged():
    network = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    _fill(network, 0.0)
    ema = ExponentialMovingAverage(network, decay=0.5)
    network.train()(torch.randn(8, 3))  # moves the BatchNorm running statistics
    network[1].running_mean.fill_(0.25)
    _fill(network, 1.0)
    ema.update()
    bn = ema.ema_network[1]
    torch.testing.assert_close(bn.running_mean, torch.full((3,), 0.25))
    torch.testing.assert_close(bn.running_var, network[1].running_var)
    assert bn.num_batches_tracked.item() == 1
    for param in ema.ema_network.parameters():
        torch.testing.assert_close(param, torch.full_like(param, 0.5))


def test_wrapped_network_uses_module():
    inner = _linear(0.0)
    ema = ExponentialMovingAverage(_Wrapper(inner), decay=0.5)
    assert isinstance(ema.ema_network, nn.Linear)
    assert set(ema.state_dict()["ema_network"]) == {"weight", "bias"}  # no "module." prefix
    _fill(inner, 4.0)
    ema.update()
    torch.testing.assert_close(ema.ema_network.weight, torch.full((1, 2), 2.0))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"decay": -0.1}, "decay"),
        ({"decay": 1.0}, "decay"),
        ({"decay": 1.5}, "decay"),
        ({"update_every": 0}, "update_every"),
        ({"update_every": 1.5}, "update_every"),
        ({"start_iteration": -1}, "start_iteration"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ExponentialMovingAverage(_linear(), **kwargs)


# ----------------------------------------------------------------------------------------------------------------
# state dict


def _roundtrip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_state_dict_round_trip():
    network = _linear(0.0)
    ema = ExponentialMovingAverage(network, decay=0.9)
    _fill(network, 1.0)
    for _ in range(3):
        ema.update()
    state = _roundtrip(ema.state_dict())
    assert set(state) == {"ema_network", "num_updates"}
    restored = ExponentialMovingAverage(_linear(7.0), decay=0.9)
    restored.load_state_dict(state)
    assert restored.num_updates == 3
    for mine, theirs in zip(restored.ema_network.parameters(), ema.ema_network.parameters(), strict=True):
        assert torch.equal(mine, theirs)
    # the saved EMA weights load into a plain network too (inference from the EMA)
    plain = _linear(7.0)
    plain.load_state_dict(state["ema_network"])
    assert torch.equal(plain.weight, ema.ema_network.weight)


def test_load_shape_mismatch_names_the_weight():
    state = ExponentialMovingAverage(nn.Linear(2, 3)).state_dict()
    with pytest.raises(ValueError, match=r"'weight' \(checkpoint \(3, 2\), network \(1, 2\)\)"):
        ExponentialMovingAverage(_linear()).load_state_dict(state)


def test_load_is_strict():
    state = ExponentialMovingAverage(_linear()).state_dict()
    with pytest.raises(KeyError, match="num_updates"):
        ExponentialMovingAverage(_linear()).load_state_dict({"ema_network": state["ema_network"]})
    extra = {"ema_network": {**state["ema_network"], "extra": torch.zeros(1)}, "num_updates": 0}
    with pytest.raises(RuntimeError, match="extra"):
        ExponentialMovingAverage(_linear()).load_state_dict(extra)


# ----------------------------------------------------------------------------------------------------------------
# in a MONAI trainer


BATCHES = [
    {"image": torch.randn(4, 3, generator=torch.Generator().manual_seed(i)), "label": torch.ones(4, 1)}
    for i in range(3)
]


def _trainer(network: nn.Module, max_epochs: int) -> SupervisedTrainer:
    return SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=max_epochs,
        train_data_loader=BATCHES,
        network=network,
        optimizer=torch.optim.SGD(network.parameters(), lr=0.1),
        loss_function=nn.MSELoss(),
    )


def test_trainer_updates_every_nth_iteration_after_warm_up():
    torch.manual_seed(0)
    network = nn.Linear(3, 1)
    initial = [p.detach().clone() for p in network.parameters()]
    trainer = _trainer(network, max_epochs=2)  # 6 iterations
    decay = 0.8
    ema = ExponentialMovingAverage(network, decay=decay, update_every=2, start_iteration=2)
    ema.attach(trainer)
    seen: list[list[torch.Tensor]] = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda _e: seen.append([p.detach().clone() for p in network.parameters()])
    )
    trainer.run()

    # updates after iterations 2 (a warm-up copy), 4 and 6
    expected = seen[1]
    for params in (seen[3], seen[5]):
        expected = [decay * e + (1 - decay) * p for e, p in zip(expected, params, strict=True)]
    assert ema.num_updates == 3
    for mine, exp, current, first in zip(
        ema.ema_network.parameters(), expected, network.parameters(), initial, strict=True
    ):
        torch.testing.assert_close(mine, exp)
        assert not torch.allclose(mine, current)
        assert not torch.allclose(mine, first)


def test_resume_restores_the_ema(tmp_path):
    """Two epochs, killed, resumed for a third: the EMA equals that of an uninterrupted three-epoch run."""

    def run(max_epochs: int, resume: bool, seed: int = 0) -> ExponentialMovingAverage:
        torch.manual_seed(seed)
        network = nn.Linear(3, 1)
        trainer = _trainer(network, max_epochs)
        ema = ExponentialMovingAverage(network, decay=0.7)
        save_dict = {"model": network, "optimizer": trainer.optimizer, "ema": ema}
        ResumeFromCheckpoint(str(tmp_path / "resumed"), load_dict=save_dict, enabled=resume).attach(trainer)
        ema.attach(trainer)
        folder = "resumed" if max_epochs == 2 or resume else "full"
        saver = AtomicCheckpointSaver(
            str(tmp_path / folder), save_dict=save_dict, save_interval=1, engine_key="trainer"
        )
        saver.attach(trainer)
        trainer.run()
        return ema

    full = run(3, resume=False)
    run(2, resume=False)
    resumed = run(3, resume=True, seed=1)
    assert resumed.num_updates == full.num_updates == 9
    for mine, theirs in zip(resumed.ema_network.parameters(), full.ema_network.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs)
