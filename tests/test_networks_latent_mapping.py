"""Tests of common.networks.LatentMappingModel, the latent mapping model of GMS."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from common.networks import LatentMappingModel

SMALL = {"channels": 16, "norm_groups": 8}


def _expected_parameters(
    in_channels: int = 4,
    out_channels: int = 4,
    channels: int = 32,
    channel_mults: tuple[int, ...] = (1, 2, 4, 4),
) -> int:
    """Weights + biases of the architecture the LatentMappingModel docstring describes."""

    def conv3(cin: int, cout: int, bias: bool = True) -> int:
        return 9 * cin * cout + (cout if bias else 0)

    def rab(cin: int, cout: int) -> int:
        res = 2 * cin + 1 + conv3(cin, cout) + 2 * cout + 1 + conv3(cout, cout)  # GN, PReLU, conv, twice
        res += 0 if cin == cout else cin * cout  # 1x1 skip without bias, identity when the widths match
        attention = 2 * cout + 4 * (cout * cout + cout)  # GN, then q, k, v, proj_out
        return res + attention

    widths = [channels] + [channels * m for m in channel_mults]
    total = conv3(in_channels, channels)
    total += sum(rab(widths[i], widths[i + 1]) for i in range(len(channel_mults)))
    previous = widths[-1]
    for depth in range(len(channel_mults) - 1, -1, -1):
        total += rab(widths[depth] + previous, widths[depth])
        total += 2 * widths[depth] + conv3(widths[depth], out_channels, bias=False)  # head: GN, SiLU, conv
        previous = widths[depth]
    return total


def _count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_parameter_count_matches_the_paper() -> None:
    net = LatentMappingModel()
    assert _count(net) == _expected_parameters() == 1_564_976
    assert abs(_count(net) - 1.565e6) / 1.565e6 < 0.01
    assert {"head_out", "head_level1", "head_level2", "head_level3"} <= {n for n, _ in net.named_children()}


@pytest.mark.parametrize("channel_mults", [(1, 2), (1, 2, 4), (2, 1, 3, 1, 2)])
def test_parameter_count_other_levels(channel_mults: tuple[int, ...]) -> None:
    net = LatentMappingModel(in_channels=3, out_channels=2, channel_mults=channel_mults, **SMALL)
    assert _count(net) == _expected_parameters(3, 2, SMALL["channels"], channel_mults)


def test_initialisation() -> None:
    net = LatentMappingModel(**SMALL)
    for module in net.modules():
        if isinstance(module, nn.Conv2d) and module.bias is not None:
            assert torch.count_nonzero(module.bias) == 0
        if isinstance(module, nn.GroupNorm):
            assert torch.all(module.weight == 1) and torch.count_nonzero(module.bias) == 0


@pytest.mark.parametrize("size", [(28, 28), (17, 23)])
@pytest.mark.parametrize(("channel_mults", "heads"), [((1, 2), 2), ((1, 2, 2), 3), ((1, 2, 2, 2), 3)])
def test_output_shapes(size: tuple[int, int], channel_mults: tuple[int, ...], heads: int) -> None:
    net = LatentMappingModel(in_channels=4, out_channels=3, channel_mults=channel_mults, **SMALL)
    x = torch.randn(2, 4, *size)
    with torch.no_grad():
        train_out = net.train()(x)
        eval_out = net.eval()(x)
    assert train_out.shape == (2, heads, 3, *size)
    assert eval_out.shape == (2, 3, *size)
    # the first stacked head is the final output (no dropout or batch statistics, so train == eval)
    torch.testing.assert_close(train_out[:, 0], eval_out)

    plain = LatentMappingModel(
        in_channels=4, out_channels=3, channel_mults=channel_mults, deep_supervision=False, **SMALL
    )
    with torch.no_grad():
        assert plain.train()(x).shape == (2, 3, *size)


def test_training_heads_get_gradient() -> None:
    net = LatentMappingModel(channel_mults=(1, 2, 2, 2), **SMALL).train()
    net(torch.randn(2, 4, 12, 12)).sum().backward()
    for name in ("head_out", "head_level1", "head_level2"):
        grad = getattr(net, name)[-1].weight.grad
        assert grad is not None and torch.count_nonzero(grad) > 0, name
    # the level-3 head is kept for parity with the reference but is not part of the training output
    assert net.head_level3[-1].weight.grad is None


def _without_group_norm(net: nn.Module) -> nn.Module:
    """Replace every GroupNorm by Identity: their statistics couple all pixels, which would hide what attention does."""
    for name, module in list(net.named_modules()):
        if isinstance(module, nn.GroupNorm):
            parent_name, _, child = name.rpartition(".")
            setattr(net.get_submodule(parent_name), child, nn.Identity())
    return net


def test_attention_is_global() -> None:
    torch.manual_seed(0)
    # two levels: 1 + 4 * 2 + 1 = 10 stacked 3x3 convolutions, so without attention (and GroupNorm) the corner pixel
    # (0, 0) cannot reach the opposite corner of a 24 x 24 map
    net = _without_group_norm(LatentMappingModel(channel_mults=(1, 2), **SMALL)).eval()
    x = torch.randn(1, 4, 24, 24)
    perturbed = x.clone()
    perturbed[0, :, 0, 0] += 1.0
    with torch.no_grad():
        far_change = (net(perturbed) - net(x))[0, :, -1, -1].abs().max()
        for module in net.modules():
            if hasattr(module, "proj_out"):  # switch every attention off: its residual branch becomes zero
                nn.init.zeros_(module.proj_out.weight)
                nn.init.zeros_(module.proj_out.bias)
        local_change = (net(perturbed) - net(x))[0, :, -1, -1].abs().max()
    assert far_change > 1e-4
    assert local_change == 0


@pytest.mark.filterwarnings("ignore:.torch.jit.script. is deprecated:DeprecationWarning")
@pytest.mark.parametrize("channel_mults", [(1, 2), (1, 2, 2, 2)])
def test_torchscript_matches_eager(channel_mults: tuple[int, ...]) -> None:
    net = LatentMappingModel(channel_mults=channel_mults, **SMALL)
    scripted = torch.jit.script(net)
    x = torch.randn(2, 4, 9, 11)
    with torch.no_grad():
        torch.testing.assert_close(scripted.eval()(x), net.eval()(x))
        torch.testing.assert_close(scripted.train()(x), net.train()(x))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"channel_mults": (1,)}, "channel_mults"),
        ({"channel_mults": (1, 0, 2)}, "channel_mults"),
        ({"channels": 16, "norm_groups": 32}, "norm_groups"),
        ({"channels": 0}, "channels"),
        ({"in_channels": 0}, "in_channels"),
        ({"out_channels": 0}, "out_channels"),
        ({"norm_groups": 0}, "norm_groups"),
    ],
)
def test_constructor_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LatentMappingModel(**kwargs)


@pytest.mark.parametrize("shape", [(4, 8, 8), (1, 3, 8, 8), (1, 4, 8, 8, 8)])
def test_bad_input_shape(shape: tuple[int, ...]) -> None:
    net = LatentMappingModel(**SMALL)
    with pytest.raises(ValueError, match=r"\(B, 4, H, W\)"):
        net(torch.randn(*shape))
