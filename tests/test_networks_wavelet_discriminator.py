"""Tests of common.networks' Haar wavelet transforms and the wavelet discriminator."""

from __future__ import annotations

import math

import pytest
import torch

from common.networks import HaarTransform, InverseHaarTransform, WaveletDiscriminator

SMALL = {"image_size": 32, "max_channels": 16}


# ----------------------------------------------------------------------------------------------------------------
# Haar transforms


def test_haar_known_values_on_one_block() -> None:
    """[[a, b], [c, d]] -> LL (a+b+c+d)/2, LH (a+b-c-d)/2, HL (a-b+c-d)/2, HH (a-b-c+d)/2 (the reference's bands)."""
    a, b, c, d = 1.0, 2.0, 4.0, 8.0
    bands = HaarTransform()(torch.tensor([[[[a, b], [c, d]]]]))
    expected = torch.tensor([a + b + c + d, a + b - c - d, a - b + c - d, a - b - c + d]) / 2
    torch.testing.assert_close(bands.flatten(), expected)


def test_haar_channels_are_grouped_by_subband() -> None:
    x = torch.stack([torch.full((4, 4), 1.0), torch.full((4, 4), 3.0)])[None]  # two constant channels
    bands = HaarTransform()(x)
    assert bands.shape == (1, 8, 2, 2)
    torch.testing.assert_close(bands[0, :2], torch.stack([torch.full((2, 2), 2.0), torch.full((2, 2), 6.0)]))
    assert torch.all(bands[0, 2:] == 0)  # a constant image has no detail


@pytest.mark.parametrize("shape", [(2, 1, 8, 8), (3, 3, 16, 6)])
def test_inverse_haar_reconstructs_exactly_and_preserves_energy(shape: tuple[int, ...]) -> None:
    x = torch.randn(*shape, dtype=torch.float64)
    bands = HaarTransform()(x)
    assert bands.shape == (shape[0], 4 * shape[1], shape[2] // 2, shape[3] // 2)
    torch.testing.assert_close(InverseHaarTransform()(bands), x, rtol=0, atol=1e-12)
    torch.testing.assert_close(bands.square().sum(), x.square().sum())  # orthonormal filters


def test_haar_filters_are_fixed_and_not_saved() -> None:
    dwt = HaarTransform()
    assert not list(dwt.parameters()) and not dwt.state_dict()
    torch.testing.assert_close(dwt.filters.flatten(1).abs(), torch.full((4, 4), 0.5))


def test_haar_bad_inputs() -> None:
    with pytest.raises(ValueError, match="even"):
        HaarTransform()(torch.zeros(1, 1, 5, 4))
    with pytest.raises(ValueError, match="4 sub-bands"):
        InverseHaarTransform()(torch.zeros(1, 6, 4, 4))


# ----------------------------------------------------------------------------------------------------------------
# discriminator


def test_default_plan_matches_the_reference() -> None:
    """256 x 256 RGB: FromRGB 12 -> 128 at 128 x 128, then 512 down to 4 x 4; head 513 -> 512, 8192 -> 512 -> 1."""
    with torch.device("meta"):
        net = WaveletDiscriminator(in_channels=3, image_size=256)
    from_rgb = [(m.conv[0].weight.shape[1], m.conv[0].weight.shape[0], m.downsample) for m in net.from_rgbs]
    assert from_rgb == [(12, 128, False)] + [(12, 512, True)] * 5
    blocks = [(b[0][0].weight.shape[1], b[1][1].weight.shape[0]) for b in net.convs]
    assert blocks == [(128, 512)] + [(512, 512)] * 4
    assert tuple(net.final_conv[0].weight.shape) == (512, 513, 3, 3)
    assert tuple(net.final_linear[0].weight.shape) == (512, 8192)
    assert tuple(net.final_linear[1].weight.shape) == (1, 512)


@pytest.mark.parametrize("batch", [1, 3, 4, 6])
def test_one_logit_per_image(batch: int) -> None:
    torch.manual_seed(0)
    net = WaveletDiscriminator(in_channels=1, **SMALL)
    image = torch.randn(batch, 1, 32, 32, requires_grad=True)
    logits = net(image)
    assert logits.shape == (batch, 1) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0


def test_equalised_learning_rate_layers() -> None:
    torch.manual_seed(0)
    net = WaveletDiscriminator(in_channels=1, image_size=32, max_channels=64)
    conv = net.convs[0][0][0]  # 64 -> 64, 3 x 3
    assert abs(conv.weight.std().item() - 1) < 0.05 and conv.scale == pytest.approx(1 / math.sqrt(64 * 9))
    assert not any("parametrizations" in name for name, _ in net.named_parameters())  # no spectral norm
    assert all(torch.all(p == 0) for name, p in net.named_parameters() if name.endswith("bias"))


def test_minibatch_stddev_channel() -> None:
    net = WaveletDiscriminator(in_channels=1, **SMALL)
    same = net._minibatch_stddev(torch.ones(4, 2, 4, 4))
    assert same.shape == (4, 3, 4, 4)
    torch.testing.assert_close(same[:, 2], torch.full((4, 4, 4), 1e-4))
    x = torch.zeros(6, 1, 1, 1)  # groups of 3 (the largest divisor of 6 up to 4), pairs (i, i + 2, i + 4)
    x[0] = 3.0
    stddev = net._minibatch_stddev(x)[:, 1].flatten()
    torch.testing.assert_close(stddev[[0, 2, 4]], torch.full((3,), math.sqrt(2.0)))
    torch.testing.assert_close(stddev[[1, 3, 5]], torch.full((3,), 1e-4))


def test_blur_downsampling_keeps_constants() -> None:
    """FromRGB's path to the next scale (inverse Haar, blur [1, 3, 3, 1] stride 2, Haar) keeps constants."""
    from_rgb = WaveletDiscriminator(in_channels=1, **SMALL).from_rgbs[1]
    bands = HaarTransform()(torch.full((1, 1, 16, 16), 2.0))
    down = from_rgb.dwt(from_rgb.blur(from_rgb.iwt(bands)))
    assert down.shape == (1, 4, 4, 4)
    torch.testing.assert_close(down[0, 0, 1:-1, 1:-1], torch.full((2, 2), 4.0))  # interior, away from zero padding


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"image_size": 48}, "power of two"),
        ({"image_size": 8}, ">= 16"),
        ({"in_channels": 0}, "in_channels"),
        ({"channel_multiplier": 0}, "channel_multiplier"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        WaveletDiscriminator(**{**SMALL, **kwargs})


def test_bad_input_shape() -> None:
    net = WaveletDiscriminator(in_channels=1, **SMALL)
    for image in (torch.zeros(2, 3, 32, 32), torch.zeros(2, 1, 64, 64), torch.zeros(1, 32, 32)):
        with pytest.raises(ValueError, match=r"\(B, 1, 32, 32\)"):
            net(image)
