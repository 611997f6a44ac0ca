"""Tests of common.networks.PostDAE, the Post-DAE denoising autoencoder."""

from __future__ import annotations

import re
from math import prod

import numpy as np
import pytest
import torch
from monai.losses import DiceLoss
from torch import nn

from common.data.synthetic import lung_mask
from common.networks import PostDAE
from common.transforms import RandMaskCorruption

TINY = {"img_size": (32, 32), "encoder_channels": (8, 8), "decoder_channels": (8,), "latent_size": 16}
CORRUPTION_32 = {
    "tile_deletion_kwargs": {"patch_size": 8, "max_patches": 3},
    "disc_addition_kwargs": {"radius": 3, "max_discs": 3},
    "edge_swap_kwargs": {"num_swaps": 20, "max_distance": 3},
}


def _expected_parameters(
    spatial_dims: int = 2,
    in_channels: int = 1,
    out_channels: int = 1,
    img_size: tuple[int, ...] = (512, 512),
    encoder_channels: tuple[int, ...] = (16, 32, 32, 32, 32),
    decoder_channels: tuple[int, ...] = (16, 16, 16, 16),
    latent_size: int = 512,
) -> int:
    """Weights + biases of the architecture the PostDAE docstring describes (3x3 kernels everywhere)."""
    kernel = 3**spatial_dims

    def conv(cin: int, cout: int) -> int:
        return cin * cout * kernel + cout

    total, channels = 0, in_channels
    for stage, width in enumerate(encoder_channels):
        total += conv(channels, width)  # strided conv
        if stage < len(encoder_channels) - 1:
            total += conv(width, width)
        channels = width
    features = channels * prod(s // 2 ** len(encoder_channels) for s in img_size)
    total += features * latent_size + latent_size  # Linear(features, latent)
    total += latent_size * features + features  # Linear(latent, features)
    for width in (*decoder_channels, out_channels):
        total += conv(channels, channels) + conv(channels, width)  # ConvTranspose keeps the width, then Conv
        channels = width
    return total


def _count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("batch", [1, 3])
def test_2d_output_shape_equals_input_shape(batch):
    torch.manual_seed(0)
    net = PostDAE(**TINY)
    x = torch.rand(batch, 1, 32, 32)
    assert net(x).shape == x.shape


def test_3d_output_shape_and_code():
    torch.manual_seed(0)
    net = PostDAE(spatial_dims=3, img_size=(32, 32, 32), encoder_channels=(4, 4), decoder_channels=(4,), latent_size=8)
    x = torch.rand(2, 1, 32, 32, 32)
    assert net(x).shape == x.shape
    assert net.encode(x).shape == (2, 8)
    assert _count(net) == _expected_parameters(3, 1, 1, (32, 32, 32), (4, 4), (4,), 8)


def test_multichannel_output_shape():
    net = PostDAE(in_channels=2, out_channels=3, **TINY)
    assert net(torch.rand(1, 2, 32, 32)).shape == (1, 3, 32, 32)


def test_encode_gives_latent_code():
    net = PostDAE(img_size=(64, 32), encoder_channels=(8, 8, 8), decoder_channels=(8, 8), latent_size=12)
    assert net.encode(torch.rand(5, 1, 64, 32)).shape == (5, 12)


def test_parameter_count_at_defaults():
    expected = _expected_parameters()
    assert abs(expected - 8.49e6) < 0.01e6  # the size quoted for the reference configuration
    assert _count(PostDAE()) == expected


def test_parameter_count_of_a_small_configuration():
    kwargs = {"img_size": (64, 32), "encoder_channels": (4, 6, 8), "decoder_channels": (5, 7), "latent_size": 10}
    net = PostDAE(in_channels=2, out_channels=3, **kwargs)
    assert _count(net) == _expected_parameters(2, 2, 3, (64, 32), (4, 6, 8), (5, 7), 10)


def test_wrong_input_size_names_both_sizes():
    net = PostDAE(**TINY)
    with pytest.raises(ValueError, match=re.escape("[32, 32]")) as err:
        net(torch.rand(1, 1, 64, 48))
    assert "[64, 48]" in str(err.value)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"img_size": (34, 32)}, "divisible by 4"),
        ({"img_size": (32, 32), "decoder_channels": (8, 8)}, "decoder_channels"),
        ({"img_size": (32, 32), "decoder_channels": ()}, "decoder_channels"),
        ({"img_size": (32, 32), "decoder_activation": "tanh"}, "decoder_activation"),
        ({"img_size": (32, 32, 32)}, "img_size"),
        ({"img_size": (32, 32), "spatial_dims": 1}, "spatial_dims"),
        ({"img_size": (32, 32), "latent_size": 0}, "latent_size"),
    ],
)
def test_bad_constructor_arguments(kwargs, message):
    args = {"encoder_channels": (8, 8), "decoder_channels": (8,), "latent_size": 16, **kwargs}
    with pytest.raises(ValueError, match=message):
        PostDAE(**args)


def _decoder_convs(net: PostDAE) -> list[int]:
    return [i for i, m in enumerate(net.decoder) if type(m) is nn.Conv2d]


def test_default_decoder_sigmoid_between_stages_and_logits_out():
    torch.manual_seed(0)
    net = PostDAE(img_size=(32, 32), encoder_channels=(8, 8, 8), decoder_channels=(8, 8), latent_size=16)
    convs = _decoder_convs(net)
    assert len(convs) == 3  # one stage per encoder stage
    for i in convs[:-1]:
        assert isinstance(net.decoder[i + 1], nn.Sigmoid)
    assert convs[-1] == len(net.decoder) - 1  # nothing after the last conv
    assert sum(isinstance(m, nn.Sigmoid) for m in net.modules()) == 2
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        net.decoder[-1].bias.fill_(50.0)
        assert net(x).min() > 1.0  # not squashed into [0, 1]
        net.decoder[-1].bias.fill_(-50.0)
        assert net(x).max() < 0.0


def test_relu_decoder_has_no_sigmoid():
    net = PostDAE(decoder_activation="relu", **TINY)
    assert not any(isinstance(m, nn.Sigmoid) for m in net.modules())
    convs = _decoder_convs(net)
    for i in convs[:-1]:
        assert isinstance(net.decoder[i + 1], nn.ReLU)
    assert convs[-1] == len(net.decoder) - 1


@pytest.mark.parametrize("bottleneck_activation", [False, True])
def test_bottleneck_activation(bottleneck_activation):
    torch.manual_seed(0)
    net = PostDAE(bottleneck_activation=bottleneck_activation, **TINY)
    seen = []
    net.decoder.register_forward_pre_hook(lambda _module, args: seen.append(args[0].detach().clone()))
    with torch.no_grad():
        net(torch.rand(4, 1, 32, 32))
    decoder_input = seen[0]
    assert decoder_input.shape == (4, 8, 8, 8)
    if bottleneck_activation:
        assert decoder_input.min() >= 0
        assert decoder_input.max() > 0
    else:
        assert decoder_input.min() < 0


@pytest.mark.filterwarnings("ignore:.torch.jit.script. is deprecated:DeprecationWarning")
@pytest.mark.parametrize("decoder_activation", ["sigmoid", "relu"])
def test_torchscript_gives_same_output(decoder_activation):
    torch.manual_seed(0)
    net = PostDAE(decoder_activation=decoder_activation, bottleneck_activation=True, **TINY).eval()
    scripted = torch.jit.script(net)
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x))
        torch.testing.assert_close(scripted.encode(x), net.encode(x))


def _dice(pred: np.ndarray, ref: np.ndarray) -> float:
    pred, ref = pred.reshape(len(pred), -1) > 0.5, ref.reshape(len(ref), -1) > 0.5
    return float(np.mean(2 * (pred & ref).sum(1) / (pred.sum(1) + ref.sum(1))))


def test_learns_to_refine_corrupted_lung_masks():
    """A tiny Post-DAE trained on corrupted synthetic lung masks restores them better than the corrupted input."""
    clean = np.stack([(lung_mask(32, seed) > 0)[None].astype(np.float32) for seed in range(8)])
    train_corruption = RandMaskCorruption(**CORRUPTION_32).set_random_state(0)
    fixed_corruption = RandMaskCorruption(**CORRUPTION_32).set_random_state(123)
    corrupted = np.stack([fixed_corruption(mask) for mask in clean])
    corrupted_dice = _dice(corrupted, clean)
    assert corrupted_dice < 0.95  # the corruption does damage the masks

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        net = PostDAE(**TINY)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        loss_function = DiceLoss(sigmoid=True)
        target = torch.from_numpy(clean)

        def refined() -> np.ndarray:
            with torch.no_grad():
                return (torch.sigmoid(net(torch.from_numpy(corrupted))) > 0.5).float().numpy()

        initial_dice = _dice(refined(), clean)
        for _ in range(300):
            batch = torch.from_numpy(np.stack([train_corruption(mask) for mask in clean]))
            optimizer.zero_grad()
            loss_function(net(batch), target).backward()
            optimizer.step()
        final_dice = _dice(refined(), clean)
    finally:
        torch.set_num_threads(threads)
    assert final_dice > initial_dice + 0.2
    assert final_dice > corrupted_dice
