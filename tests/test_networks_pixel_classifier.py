"""Tests of common.networks.pixel_classifier (pixel MLP ensemble and its losses) and common.networks.weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.functional import cross_entropy

from common.networks import (
    ClassWeightedCrossEntropy,
    EnsembleCrossEntropy,
    PixelClassifierEnsemble,
    PixelMLP,
    load_network_weights,
)


def _ensemble(members: int = 3) -> PixelClassifierEnsemble:
    torch.manual_seed(0)
    return PixelClassifierEnsemble(num_features=6, num_classes=4, ensemble_size=members)


def _parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------------------------------------------------
# networks


def test_pixel_mlp_is_the_braintumor_ddpm_classifier() -> None:
    mlp = PixelMLP(192, 4)
    kinds = [type(m) for m in mlp]
    assert kinds == [nn.Linear, nn.ReLU, nn.BatchNorm1d, nn.Linear, nn.ReLU, nn.BatchNorm1d, nn.Linear]
    linear = (192 * 128 + 128) + (128 * 64 + 64) + (64 * 4 + 4)
    assert _parameters(mlp) == linear + 2 * 128 + 2 * 64
    assert mlp(torch.randn(5, 192)).shape == (5, 4)


def test_pixel_batch_shape() -> None:
    assert _ensemble()(torch.randn(7, 6)).shape == (7, 3, 4)


def test_feature_maps_give_each_pixel_its_pixel_batch_result() -> None:
    ensemble = _ensemble().eval()
    maps = torch.randn(2, 6, 5, 3)
    logits = ensemble(maps)
    assert logits.shape == (2, 3, 4, 5, 3)
    pixels = ensemble(maps.movedim(1, -1).reshape(-1, 6)).reshape(2, 5, 3, 3, 4)
    torch.testing.assert_close(logits, pixels.permute(0, 3, 4, 1, 2))
    torch.testing.assert_close(logits[1, :, :, 4, 2], ensemble(maps[1:, :, 4, 2])[0])
    for k, member in enumerate(ensemble.members):
        torch.testing.assert_close(logits[0, k, :, 2, 1], member(maps[:1, :, 2, 1])[0])


def test_members_are_initialised_independently() -> None:
    ensemble = _ensemble().eval()
    logits = ensemble(torch.randn(8, 6))
    assert not torch.allclose(logits[:, 0], logits[:, 1]) and not torch.allclose(logits[:, 1], logits[:, 2])
    assert not torch.equal(ensemble.members[0][0].weight, ensemble.members[1][0].weight)


@pytest.mark.filterwarnings("ignore:.torch.jit.script. is deprecated:DeprecationWarning")
def test_torchscript_gives_the_same_output() -> None:
    ensemble = _ensemble().eval()
    scripted = torch.jit.script(ensemble)
    for features in (torch.randn(9, 6), torch.randn(2, 6, 4, 4)):
        torch.testing.assert_close(scripted(features), ensemble(features))


def test_wrong_feature_count_names_feature_blocks() -> None:
    with pytest.raises(ValueError, match=r"\(N, 6\).*\[2, 5, 4, 4\].*feature_blocks"):
        _ensemble()(torch.randn(2, 5, 4, 4))
    with pytest.raises(ValueError, match="feature_blocks"):
        _ensemble()(torch.randn(6))


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"ensemble_size": 0}, "ensemble_size"), ({"num_classes": 1}, "num_classes")]
)
def test_bad_ensemble_settings(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PixelClassifierEnsemble(**{"num_features": 6, "num_classes": 3, **kwargs})


# --------------------------------------------------------------------------------------------------------------------
# losses

WEIGHTS = [0.1, 0.3, 0.3, 0.3]


@pytest.mark.parametrize("channel_dim", [False, True])
def test_class_weighted_cross_entropy_is_torchs(channel_dim: bool) -> None:
    torch.manual_seed(1)
    logits, target = torch.randn(2, 4, 5, 5), torch.randint(0, 4, (2, 5, 5))
    expected = cross_entropy(logits, target, weight=torch.tensor(WEIGHTS))
    loss = ClassWeightedCrossEntropy(WEIGHTS)(logits, target[:, None].float() if channel_dim else target)
    torch.testing.assert_close(loss, expected)
    assert not torch.allclose(loss, cross_entropy(logits, target)), "the weights matter"
    torch.testing.assert_close(ClassWeightedCrossEntropy()(logits, target), cross_entropy(logits, target))


def test_ensemble_cross_entropy_is_the_mean_of_the_members() -> None:
    torch.manual_seed(2)
    logits, target = torch.randn(10, 3, 4), torch.randint(0, 4, (10,))  # a pixel batch (N, K, C)
    members = [cross_entropy(logits[:, k], target, weight=torch.tensor(WEIGHTS)) for k in range(3)]
    torch.testing.assert_close(EnsembleCrossEntropy(WEIGHTS)(logits, target), sum(members) / 3)
    maps, label = torch.randn(2, 3, 4, 5, 5), torch.randint(0, 4, (2, 1, 5, 5))  # images (B, K, C, H, W)
    members = [cross_entropy(maps[:, k], label[:, 0]) for k in range(3)]
    torch.testing.assert_close(EnsembleCrossEntropy()(maps, label), sum(members) / 3)


def test_class_weights_of_the_wrong_length() -> None:
    with pytest.raises(ValueError, match=r"class_weights has 3 entries but the network predicts 4 classes"):
        ClassWeightedCrossEntropy([0.1, 0.3, 0.6])(torch.randn(5, 4), torch.zeros(5))
    with pytest.raises(ValueError, match="class_weights has 3 entries"):
        EnsembleCrossEntropy([0.1, 0.3, 0.6])(torch.randn(5, 2, 4), torch.zeros(5))


# --------------------------------------------------------------------------------------------------------------------
# load_network_weights


def _state(seed: int, out_features: int = 3) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return nn.Linear(2, out_features).state_dict()


def _loaded(path, keys: tuple[str, ...] = ("model",)) -> dict[str, torch.Tensor]:
    return load_network_weights(nn.Linear(2, 3), str(path), keys).state_dict()


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_load_raw_state_dict_and_keyed_checkpoints(tmp_path) -> None:
    ema, model = _state(1), _state(2)
    torch.save(ema, tmp_path / "raw.pt")
    torch.save({"ema": ema, "model": model, "optimizer": {"state": {}}, "epoch": 3}, tmp_path / "both.pt")
    torch.save({"model": model, "epoch": 3}, tmp_path / "model.pt")
    network = nn.Linear(2, 3)
    assert load_network_weights(network, str(tmp_path / "raw.pt")) is network and _same(network.state_dict(), ema)
    assert _same(_loaded(tmp_path / "both.pt", ("ema", "model")), ema), "the first key present wins"
    assert _same(_loaded(tmp_path / "both.pt", ("model", "ema")), model)
    assert _same(_loaded(tmp_path / "both.pt"), model)
    assert _same(_loaded(tmp_path / "model.pt", ("ema", "model")), model), "falls back to the next key"


def test_load_errors_name_the_config_key_and_the_problem(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"none\.pt.*config key 'ddpm_path'.*--ddpm_path"):
        load_network_weights(nn.Linear(2, 3), str(tmp_path / "none.pt"), config_key="ddpm_path")
    torch.save({"optimizer": {"state": {}}, "epoch": 3}, tmp_path / "keys.pt")
    with pytest.raises(ValueError, match=r"holds none of \('ema', 'model'\): \['epoch', 'optimizer'\]"):
        _loaded(tmp_path / "keys.pt", ("ema", "model"))
    torch.save(_state(1, out_features=5), tmp_path / "wide.pt")
    with pytest.raises(ValueError, match=r"config key 'ckpt_dir'\): weight 'weight' has shape \(5, 2\).*\(3, 2\)"):
        _loaded(tmp_path / "wide.pt")
    torch.save({"weight": _state(1)["weight"]}, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match="lacks weight 'bias'"):
        _loaded(tmp_path / "partial.pt")
    torch.save({**_state(1), "extra.weight": torch.zeros(1)}, tmp_path / "extra.pt")
    with pytest.raises(ValueError, match=r"has weights the network lacks: \['extra\.weight'\]"):
        _loaded(tmp_path / "extra.pt")


def test_failed_load_leaves_the_network_unchanged(tmp_path) -> None:
    torch.save({**_state(1), "extra.weight": torch.zeros(1)}, tmp_path / "extra.pt")
    network = nn.Linear(2, 3)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    with pytest.raises(ValueError):
        load_network_weights(network, str(tmp_path / "extra.pt"))
    assert _same(network.state_dict(), before)
