"""ScoreUNet: the original's size, shapes, early fusion, TorchScript, and clear errors."""

from __future__ import annotations

import pytest
import torch

from common.networks import ScoreUNet

TINY = {"dim": 8, "fusion_channels": 4, "channel_mults": (1, 2, 2), "attention_heads": 1, "attention_head_channels": 8}


def test_default_widths_have_the_originals_parameter_count() -> None:
    """The spec's layer-by-layer count of the original network is about 63.7 M parameters."""
    assert sum(p.numel() for p in ScoreUNet().parameters()) == pytest.approx(63.7e6, rel=0.002)


def test_first_encoder_skip_is_unused_like_the_original() -> None:
    net = ScoreUNet(**TINY)
    assert len(net.down) == 3 and len(net.up) == 2, "one decoder level fewer than encoder levels"


@pytest.mark.parametrize("image_channels", [1, 3])
def test_output_shape_and_dependence_on_every_input(image_channels: int) -> None:
    torch.manual_seed(0)
    net = ScoreUNet(image_channels=image_channels, **TINY).eval()
    x = torch.randn(2, 1 + image_channels, 16, 24)
    t = torch.tensor([0.01, 3.0])
    out = net(x, t)
    assert out.shape == (2, 1, 16, 24)
    changed_image = x.clone()
    changed_image[:, 1:] += 1
    assert not torch.allclose(net(changed_image, t), out), "the image must condition the output"
    assert not torch.allclose(net(x, t.flip(0)), out), "the noise level must condition the output"
    # a sample's output does not depend on the other samples of its batch (GroupNorm, not BatchNorm)
    torch.testing.assert_close(net(x[:1], t[:1]), out[:1], atol=1e-5, rtol=1e-4)


def test_scalar_timesteps_broadcast_over_the_batch() -> None:
    net = ScoreUNet(**TINY).eval()
    x = torch.randn(3, 2, 8, 8)
    torch.testing.assert_close(net(x, torch.tensor([0.5])), net(x, torch.full((3,), 0.5)))


def test_torchscript_matches_eager() -> None:
    net = ScoreUNet(**TINY).eval()
    x, t = torch.randn(2, 2, 16, 16), torch.tensor([1, 500])
    torch.testing.assert_close(torch.jit.script(net)(x, t), net(x, t))


@pytest.mark.parametrize(
    ("shape", "match"),
    [((1, 3, 16, 16), r"expects \(B, 2, H, W\)"), ((1, 2, 16, 18), "divisible by 4")],
)
def test_bad_input_shapes_are_named(shape: tuple[int, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ScoreUNet(**TINY)(torch.zeros(shape), torch.tensor([1.0]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"norm_groups": 3}, "multiple of norm_groups"), ({"channel_mults": (1,)}, "at least two levels")],
)
def test_bad_widths_are_named(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ScoreUNet(**{**TINY, **kwargs})
