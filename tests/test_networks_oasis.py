"""Tests of common.networks' OASIS generator, SPADE, residual block and (N+1)-class discriminator."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional
from torch.nn.utils import parametrize

from common.networks import OASISSPADE, OASISDiscriminator, OASISGenerator, OASISResBlock

NUM_CLASSES = 4
SMALL_G = {"channels": 4, "channel_mults": (4, 4, 2, 1), "z_dim": 8, "spade_hidden": 16, "image_size": 32}
SMALL_D = {"channels": (8, 8, 16), "head_channels": 8}


def _onehot(classes: torch.Tensor, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    return functional.one_hot(classes, num_classes).permute(0, 3, 1, 2).float()


def _label(batch: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return _onehot(torch.randint(0, NUM_CLASSES, (batch, size, size), generator=generator))


@pytest.fixture(scope="module")
def generator() -> OASISGenerator:
    torch.manual_seed(0)
    return OASISGenerator(NUM_CLASSES, **SMALL_G).eval()


def _spectral(module: nn.Module) -> bool:
    return parametrize.is_parametrized(module, "weight")


# ----------------------------------------------------------------------------------------------------------------
# SPADE and the residual block


def test_spade_is_batchnorm_without_affine_then_label_scale_and_shift() -> None:
    torch.manual_seed(0)
    spade = OASISSPADE(norm_channels=3, label_channels=NUM_CLASSES, hidden_channels=8).train()
    assert isinstance(spade.first_norm, nn.BatchNorm2d) and not spade.first_norm.affine
    assert isinstance(spade.mlp_shared[1], nn.ReLU)
    assert all(type(m) is nn.Conv2d for m in (spade.mlp_shared[0], spade.mlp_gamma, spade.mlp_beta))
    assert spade.mlp_shared[0].out_channels == 8 and not any(_spectral(m) for m in spade.modules())
    with torch.no_grad():  # gamma = 0.5 and beta = -1 everywhere
        for conv, value in ((spade.mlp_gamma, 0.5), (spade.mlp_beta, -1.0)):
            conv.weight.zero_()
            conv.bias.fill_(value)
    x = torch.randn(2, 3, 8, 8)
    expected = functional.batch_norm(x, None, None, training=True) * 1.5 - 1.0
    torch.testing.assert_close(spade(x, _label(2, 32)), expected)


def test_spade_resizes_the_segmap_by_nearest_neighbour() -> None:
    spade = OASISSPADE(norm_channels=2, label_channels=NUM_CLASSES, hidden_channels=4).eval()
    label = _label(1, 16)
    small = functional.interpolate(label, size=(4, 4), mode="nearest")
    x = torch.randn(1, 2, 4, 4)
    torch.testing.assert_close(spade(x, label), spade(x, small))
    with pytest.raises(ValueError, match="odd"):
        OASISSPADE(2, NUM_CLASSES, kernel_size=2)


@pytest.mark.parametrize(("fin", "fout"), [(8, 4), (4, 8), (6, 6)])
def test_resblock_shortcut_widths_and_spectral_norm(fin: int, fout: int) -> None:
    block = OASISResBlock(fin, fout, label_channels=NUM_CLASSES, spade_hidden=8)
    assert block.conv_0.out_channels == min(fin, fout) == block.conv_1.in_channels
    assert _spectral(block.conv_0) and _spectral(block.conv_1)
    if fin == fout:
        assert block.conv_s is None and block.norm_s is None
    else:
        assert _spectral(block.conv_s) and block.conv_s.bias is None and block.conv_s.kernel_size == (1, 1)
    assert block(torch.randn(2, fin, 8, 8), _label(2, 16)).shape == (2, fout, 8, 8)


# ----------------------------------------------------------------------------------------------------------------
# generator


def _conv_params(cin: int, cout: int, k: int, bias: bool = True) -> int:
    return k * k * cin * cout + (cout if bias else 0)


def _expected_generator_parameters(
    num_classes: int, out_channels: int, channels: int, channel_mults: tuple[int, ...], z_dim: int, hidden: int
) -> int:
    """Weights and biases of the architecture the OASISGenerator docstring describes."""
    cond = num_classes + z_dim

    def spade(norm: int) -> int:
        return _conv_params(cond, hidden, 3) + 2 * _conv_params(hidden, norm, 3)

    def block(fin: int, fout: int) -> int:
        mid = min(fin, fout)
        total = _conv_params(fin, mid, 3) + _conv_params(mid, fout, 3) + spade(fin) + spade(mid)
        return total + (_conv_params(fin, fout, 1, bias=False) + spade(fin) if fin != fout else 0)

    widths = [channels * m for m in channel_mults]
    total = _conv_params(cond, widths[0], 3) + _conv_params(widths[-1], out_channels, 3)
    return total + sum(block(widths[i], widths[i + 1]) for i in range(len(widths) - 1))


def test_generator_default_plan_matches_oasis() -> None:
    """256 x 256, ch 64, 38 classes (TWWinde's semantic_nc): 8 x 8 input, 1024 ... 64 channels, six blocks."""
    with torch.device("meta"):  # the plan without allocating 71 M parameters; spectral norm does not change it
        net = OASISGenerator(num_classes=38, out_channels=3, spectral_norm=False)
    assert net.input_size == (8, 8) and net.image_size == (256, 256)
    assert net.widths == [1024, 1024, 1024, 512, 256, 128, 64]
    assert net.fc.in_channels == 64 + 38 and net.fc.out_channels == 1024
    assert [(b.conv_0.in_channels, b.conv_1.out_channels) for b in net.body] == [
        (1024, 1024),
        (1024, 1024),
        (1024, 512),
        (512, 256),
        (256, 128),
        (128, 64),
    ]
    assert net.body[0].norm_0.mlp_shared[0].out_channels == 128
    count = sum(p.numel() for p in net.parameters())
    assert count == _expected_generator_parameters(38, 3, 64, (16, 16, 16, 8, 4, 2, 1), 64, 128)


def test_generator_small_shapes_range_and_parameter_count(generator: OASISGenerator) -> None:
    image = generator(_label())
    assert image.shape == (2, 1, 32, 32) and image.abs().max() <= 1
    assert generator.input_size == (8, 8)
    count = sum(p.numel() for p in generator.parameters())
    assert count == _expected_generator_parameters(NUM_CLASSES, 1, 4, (4, 4, 2, 1), 8, 16)
    with torch.no_grad():
        rectangular = OASISGenerator(NUM_CLASSES, 3, **{**SMALL_G, "image_size": (16, 32)})(
            _onehot(torch.zeros(1, 16, 32).long())
        )
    assert rectangular.shape == (1, 3, 16, 32)


def test_generator_spectral_norm_only_in_residual_blocks(generator: OASISGenerator) -> None:
    spectral = {name for name, m in generator.named_modules() if _spectral(m)}
    assert spectral and all(name.split(".")[-1] in {"conv_0", "conv_1", "conv_s"} for name in spectral)
    assert not _spectral(generator.fc) and not _spectral(generator.conv_img)


def test_generator_initialisation_is_xavier_normal_gain_002() -> None:
    torch.manual_seed(0)
    net = OASISGenerator(NUM_CLASSES, channels=16, channel_mults=(4, 1), z_dim=8, spade_hidden=16, image_size=8)
    weight = net.fc.weight  # (64, 12, 3, 3): fan_in 108, fan_out 576
    expected = 0.02 * (2.0 / (108 + 576)) ** 0.5
    assert abs(weight.std().item() / expected - 1) < 0.05
    assert torch.all(net.fc.bias == 0) and torch.all(net.body[0].norm_0.mlp_gamma.bias == 0)


def test_generator_depends_on_z(generator: OASISGenerator) -> None:
    label = _label()
    z = torch.randn(2, 8)
    with torch.no_grad():
        same = generator(label, z), generator(label, z.clone())
        other = generator(label, torch.randn(2, 8))
        drawn = generator(label), generator(label)
    torch.testing.assert_close(*same, rtol=0, atol=0)
    assert not torch.allclose(same[0], other)
    assert not torch.allclose(*drawn)  # z is drawn afresh when not given


def test_generator_noise_from_a_torch_generator_is_reproducible(generator: OASISGenerator) -> None:
    label = _label()
    with torch.no_grad():
        a = generator(label, generator=torch.Generator().manual_seed(7))
        b = generator(label, generator=torch.Generator().manual_seed(7))
        c = generator(label, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)


def test_generator_depends_on_the_label(generator: OASISGenerator) -> None:
    label = _label()
    changed = label.clone()
    changed[:, :, 8:24, 8:24] = _onehot(torch.full((2, 16, 16), 3))
    z = torch.randn(2, 8)
    with torch.no_grad():
        difference = (generator(label, z) - generator(changed, z)).abs()
    assert difference.max() > 0
    assert difference[:, :, 8:24, 8:24].mean() > difference[:, :, :4, :4].mean()  # mostly where the label changed


def test_generator_without_noise() -> None:
    net = OASISGenerator(NUM_CLASSES, **{**SMALL_G, "z_dim": 0}).eval()
    assert net.fc.in_channels == NUM_CLASSES
    label = _label()
    with torch.no_grad():
        torch.testing.assert_close(net(label), net(label), rtol=0, atol=0)
    with pytest.raises(ValueError, match="z_dim=0"):
        net(label, torch.randn(2, 8))


@pytest.mark.parametrize(
    ("label", "z", "match"),
    [
        (torch.zeros(2, NUM_CLASSES + 1, 32, 32), None, "num_classes"),
        (torch.zeros(2, NUM_CLASSES, 32), None, "num_classes"),
        (torch.zeros(2, NUM_CLASSES, 16, 16), None, "image_size"),
        (torch.zeros(2, NUM_CLASSES, 32, 32), torch.zeros(2, 7), r"z must have shape \(2, 8\)"),
        (torch.zeros(2, NUM_CLASSES, 32, 32), torch.zeros(3, 8), r"z must have shape \(2, 8\)"),
    ],
)
def test_generator_bad_inputs(
    generator: OASISGenerator, label: torch.Tensor, z: torch.Tensor | None, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        generator(label, z)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"image_size": 34}, "divisible by 2 \\*\\* \\(len\\(channel_mults\\) - 2\\) = 4"),
        ({"image_size": (32, 32, 32)}, "image_size"),
        ({"channel_mults": (4,)}, "channel_mults"),
        ({"z_dim": -1}, "z_dim"),
        ({"channels": 0}, "channels"),
    ],
)
def test_generator_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        OASISGenerator(NUM_CLASSES, **{**SMALL_G, **kwargs})


def test_generator_without_spectral_norm_loads_a_trained_state_and_scripts(generator: OASISGenerator) -> None:
    """A spectrally normalised checkpoint loads into the plain network with the same eval output, and scripts."""
    plain = OASISGenerator(NUM_CLASSES, **SMALL_G, spectral_norm=False).eval()
    assert not any(_spectral(m) for m in plain.modules())
    plain.load_state_dict(generator.state_dict(), strict=True)
    label, z = _label(), torch.randn(2, 8)
    with torch.no_grad():
        expected = generator(label, z)
        torch.testing.assert_close(plain(label, z), expected)
        scripted = torch.jit.script(plain)
        torch.testing.assert_close(scripted(label, z), expected)
        seeded = scripted(label, None, torch.Generator().manual_seed(3))
        torch.testing.assert_close(seeded, plain(label, generator=torch.Generator().manual_seed(3)))


# ----------------------------------------------------------------------------------------------------------------
# discriminator


def test_discriminator_default_plan_matches_oasis() -> None:
    with torch.device("meta"):
        net = OASISDiscriminator(num_classes=38, in_channels=3, spectral_norm=False)
    down = [(b.conv1.in_channels, b.conv2.out_channels) for b in net.body_down]
    up = [(b.conv1.in_channels, b.conv2.out_channels) for b in net.body_up]
    assert down == [(3, 128), (128, 128), (128, 256), (256, 256), (256, 512), (512, 512)]
    assert up == [(512, 512), (1024, 256), (512, 256), (512, 128), (256, 128), (256, 64)]
    assert net.layer_up_last.in_channels == 64 and net.layer_up_last.out_channels == 39
    assert net.body_down[0].first and not any(b.first for b in [*net.body_down[1:], *net.body_up])


def test_discriminator_outputs_n_plus_one_logits_at_full_resolution() -> None:
    torch.manual_seed(0)
    net = OASISDiscriminator(NUM_CLASSES, in_channels=1, **SMALL_D)
    image = torch.randn(2, 1, 32, 24, requires_grad=True)
    logits = net(image)
    assert logits.shape == (2, NUM_CLASSES + 1, 32, 24)
    logits.square().mean().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0


def test_discriminator_spectral_norm_everywhere_but_the_head() -> None:
    net = OASISDiscriminator(NUM_CLASSES, **SMALL_D)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert sum(_spectral(m) for m in convs) == len(convs) - 1
    assert not _spectral(net.layer_up_last)
    assert all(_spectral(b.conv1) and _spectral(b.conv2) for b in [*net.body_down, *net.body_up])


def test_discriminator_bad_input_and_arguments() -> None:
    net = OASISDiscriminator(NUM_CLASSES, **SMALL_D)
    with pytest.raises(ValueError, match="divisible by 2 \\*\\* 3 = 8"):
        net(torch.zeros(1, 1, 20, 32))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        net(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="at least two"):
        OASISDiscriminator(NUM_CLASSES, channels=(8,))
    with pytest.raises(ValueError, match="num_classes"):
        OASISDiscriminator(0)
