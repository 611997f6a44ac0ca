"""Tests of common.diffusion.features: decoder block numbering, the DDPM feature extractor and its fixed noise."""

from __future__ import annotations

import math

import pytest
import torch
from monai.networks.nets import DiffusionModelUNet
from monai.networks.schedulers import DDPMScheduler

from common.diffusion import DiffusionFeatureExtractor, decoder_blocks, fixed_noise
from tests.oracles import tiny_ddpm_unet


def _paper_unet() -> DiffusionModelUNet:
    """The 128 x 128 DDPM of Alshenoudy et al. (improved-diffusion's 128 x 128 configuration)."""
    return DiffusionModelUNet(
        spatial_dims=2,
        in_channels=4,
        out_channels=4,
        channels=(64, 64, 128, 128, 256, 256),
        attention_levels=(False, False, True, False, False, False),
        num_res_blocks=3,
        num_head_channels=32,
        norm_num_groups=32,
    )


def _scheduler(steps: int = 100) -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=steps, schedule="cosine")


def _extractor(network: DiffusionModelUNet | None = None, **kwargs: object) -> DiffusionFeatureExtractor:
    kwargs = {"blocks": (2, 5), "timesteps": (10,), **kwargs}
    return DiffusionFeatureExtractor(network if network is not None else tiny_ddpm_unet(), _scheduler(), **kwargs)


def _images(batch: int = 2, size: int = 16) -> torch.Tensor:
    return torch.rand(batch, 2, size, size, generator=torch.Generator().manual_seed(7)) * 2 - 1


def _block_outputs(unet: DiffusionModelUNet, size: int = 16) -> list[torch.Tensor]:
    """The output of every decoder block of one forward, captured with hooks."""
    outputs: dict[int, torch.Tensor] = {}
    blocks = decoder_blocks(unet)
    handles = [
        block.register_forward_hook(lambda _m, _i, out, k=k: outputs.__setitem__(k, out))
        for k, block in enumerate(blocks)
    ]
    with torch.no_grad():
        unet(_images(1, size), torch.tensor([5]))
    for handle in handles:
        handle.remove()
    return [outputs[k] for k in range(len(blocks))]


# --------------------------------------------------------------------------------------------------------------------
# block numbering


def test_decoder_has_levels_times_res_blocks_plus_one_blocks() -> None:
    assert len(decoder_blocks(tiny_ddpm_unet())) == 3 * (1 + 1)
    assert len(decoder_blocks(_paper_unet())) == 6 * (3 + 1) == 24


def test_block_modules_follow_improved_diffusion_numbering() -> None:
    unet = tiny_ddpm_unet()
    deepest, attention_level, top = unet.up_blocks
    assert decoder_blocks(unet) == [
        deepest.resnets[0],
        deepest.upsampler,  # the last block of a level includes its up-sampling
        attention_level.attentions[0],  # a block's output includes its attention
        attention_level.upsampler,
        top.resnets[0],
        top.resnets[1],  # the top level has no up-sampler
    ]


def test_block_outputs_have_the_channels_and_sizes_of_their_level() -> None:
    shapes = [tuple(out.shape[1:]) for out in _block_outputs(tiny_ddpm_unet())]
    # levels from the deepest: 16 channels at 4x4, 8 at 8x8 (attention), 8 at 16x16; an up-sampler doubles the size
    assert shapes == [(16, 4, 4), (16, 8, 8), (8, 8, 8), (8, 16, 16), (8, 16, 16), (8, 16, 16)]


def test_each_block_output_is_what_the_next_block_or_the_output_layer_receives() -> None:
    """improved-diffusion's ``output_blocks[i]`` output is the input of block i + 1 (before its skip is appended)."""
    unet = tiny_ddpm_unet()
    resnets = [resnet for level in unet.up_blocks for resnet in level.resnets]
    inputs: dict[int, torch.Tensor] = {}
    handles = [
        module.register_forward_pre_hook(lambda _m, args, k=k: inputs.__setitem__(k, args[0]))
        for k, module in enumerate([*resnets, unet.out])
    ]
    outputs = _block_outputs(unet)
    for handle in handles:
        handle.remove()
    assert len(outputs) == len(resnets)
    for i, output in enumerate(outputs):
        received = inputs[i + 1]
        assert received.shape[1] >= output.shape[1]
        torch.testing.assert_close(received[:, : output.shape[1]], output, msg=f"block {i}")
    assert inputs[len(resnets)].shape == outputs[-1].shape, "the last block feeds the output layer, no skip"


# --------------------------------------------------------------------------------------------------------------------
# the extractor


def test_fixed_noise_is_seeded_and_standard_normal() -> None:
    noise = fixed_noise(3, (2, 64, 64))
    assert noise.shape == (1, 2, 64, 64)
    assert torch.equal(noise, fixed_noise(3, (2, 64, 64)))
    assert not torch.equal(noise, fixed_noise(4, (2, 64, 64)))
    assert abs(float(noise.mean())) < 0.05 and abs(float(noise.std()) - 1) < 0.05


def test_output_shape_and_num_features() -> None:
    extractor = _extractor(blocks=(0, 2, 5), timesteps=(10, 50))
    features = extractor(_images(3))
    assert extractor.num_features == 2 * (16 + 8 + 8) == 64
    assert features.shape == (3, extractor.num_features, 16, 16) and features.dtype == torch.float32


def test_features_are_the_block_outputs_of_the_noised_image_upsampled() -> None:
    unet, scheduler = tiny_ddpm_unet(), _scheduler()
    images = _images(1)
    features = DiffusionFeatureExtractor(unet, scheduler, blocks=(1,), timesteps=(30,), seed=5)(images)
    t = torch.tensor([30])
    noisy = scheduler.add_noise(original_samples=images, noise=fixed_noise(5, (2, 16, 16)), timesteps=t)
    captured = []
    handle = decoder_blocks(unet)[1].register_forward_hook(lambda _m, _i, out: captured.append(out))
    with torch.no_grad():
        unet(noisy, t)
    handle.remove()
    expected = torch.nn.functional.interpolate(captured[0], size=(16, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(features, expected)


def test_order_is_timestep_by_timestep_then_blocks_as_given() -> None:
    unet, images = tiny_ddpm_unet(), _images()
    blocks, timesteps = (5, 0, 2), (60, 10)
    features = _extractor(unet, blocks=blocks, timesteps=timesteps, seed=3)(images)
    parts = []
    for index, t in enumerate(timesteps):  # timestep i is noised with seed + i
        for block in blocks:
            parts.append(_extractor(unet, blocks=(block,), timesteps=(t,), seed=3 + index)(images))
    assert [p.shape[1] for p in parts] == [8, 16, 8, 8, 16, 8]
    torch.testing.assert_close(features, torch.cat(parts, dim=1))


def test_an_image_does_not_depend_on_the_rest_of_its_batch() -> None:
    extractor, images = _extractor(timesteps=(10, 70)), _images()
    together = extractor(images)
    torch.testing.assert_close(together[:1], extractor(images[:1]))
    torch.testing.assert_close(together[1:], extractor(images[1:]))
    assert not torch.allclose(together[0], together[1])


def test_noise_is_seeded() -> None:
    unet, images = tiny_ddpm_unet(), _images()
    first = _extractor(unet, seed=1)(images)
    assert torch.equal(first, _extractor(unet, seed=1)(images))
    assert torch.equal(first, _extractor(unet, seed=1)(images)), "a second call draws the same noise"
    assert not torch.allclose(first, _extractor(unet, seed=2)(images))


def test_feature_dtype() -> None:
    unet, images = tiny_ddpm_unet(), _images()
    half = _extractor(unet, feature_dtype=torch.float16)(images)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half, _extractor(unet)(images).half())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"blocks": (6,)}, "feature_blocks.*0..5"),
        ({"blocks": (-1,)}, "feature_blocks"),
        ({"blocks": ()}, "feature_blocks"),
        ({"timesteps": (100,)}, "feature_timesteps.*0..99"),
        ({"timesteps": (-1,)}, "feature_timesteps"),
        ({"timesteps": ()}, "feature_timesteps"),
    ],
)
def test_bad_blocks_or_timesteps(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _extractor(**kwargs)


def test_ddpm_is_frozen_and_stays_in_eval_mode() -> None:
    extractor = _extractor().train()
    assert extractor.training and not extractor.network.training
    assert not any(module.training for module in extractor.network.modules())
    assert not any(p.requires_grad for p in extractor.parameters())


def test_paper_network_blocks_16_to_18_give_192_features_at_half_resolution() -> None:
    unet = _paper_unet()
    parameters = sum(p.numel() for p in unet.parameters())
    assert abs(parameters - 36.2e6) / 36.2e6 < 0.005, parameters
    extractor = DiffusionFeatureExtractor(
        unet, DDPMScheduler(num_train_timesteps=4000, schedule="cosine"), blocks=(16, 17, 18), timesteps=(200,)
    )
    assert extractor.num_features == 192
    outputs = {}
    handles = [
        decoder_blocks(unet)[b].register_forward_hook(lambda _m, _i, out, b=b: outputs.__setitem__(b, out.shape))
        for b in (15, 16, 17, 18, 19)
    ]
    features = extractor(torch.zeros(1, 4, 32, 32))
    for handle in handles:
        handle.remove()
    assert features.shape == (1, 192, 32, 32)
    assert outputs[15][1:] == (128, 16, 16), "block 15 is the up-sampler of the last 128-channel level"
    assert all(outputs[b][1:] == (64, 16, 16) for b in (16, 17, 18)), "64 channels at half resolution"
    assert outputs[19][1:] == (64, 32, 32)


# --------------------------------------------------------------------------------------------------------------------
# the checkpoint


def test_checkpoint_loads_ema_weights_at_the_first_forward(tmp_path) -> None:
    ema, other = tiny_ddpm_unet(seed=1), tiny_ddpm_unet(seed=2)
    path = tmp_path / "ddpm.pt"
    torch.save({"ema": ema.state_dict(), "model": other.state_dict()}, path)
    network = tiny_ddpm_unet(seed=3)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    extractor = _extractor(network, checkpoint=str(path))
    assert all(torch.equal(v, before[k]) for k, v in network.state_dict().items()), "nothing loaded before use"
    images = _images()
    features = extractor(images)
    assert all(torch.equal(v, ema.state_dict()[k]) for k, v in network.state_dict().items())
    torch.testing.assert_close(features, _extractor(ema)(images))
    assert not any(p.requires_grad for p in network.parameters()), "loaded weights stay frozen"


def test_checkpoint_of_raw_state_dict(tmp_path) -> None:
    trained = tiny_ddpm_unet(seed=1)
    path = tmp_path / "ddpm.pt"
    torch.save(trained.state_dict(), path)
    images = _images()
    torch.testing.assert_close(
        _extractor(tiny_ddpm_unet(seed=3), checkpoint=str(path))(images), _extractor(trained)(images)
    )


def test_missing_checkpoint_names_its_config_key(tmp_path) -> None:
    extractor = _extractor(checkpoint=str(tmp_path / "none.pt"))
    with pytest.raises(FileNotFoundError, match="ddpm_path"):
        extractor(_images())


def test_checkpoint_of_another_width_names_the_weight_and_both_shapes(tmp_path) -> None:
    path = tmp_path / "wide.pt"
    torch.save({"ema": tiny_ddpm_unet(channels=(16, 16, 32)).state_dict()}, path)
    extractor = _extractor(checkpoint=str(path))
    with pytest.raises(ValueError, match=r"'conv_in\.conv\.weight' has shape \(16, 2, 3, 3\).*\(8, 2, 3, 3\)"):
        extractor(_images())


# --------------------------------------------------------------------------------------------------------------------
# the schedule


def test_monai_cosine_schedule_is_improved_diffusions() -> None:
    """T = 4000 cosine in MONAI means the same ``t`` as in the paper (improved-diffusion's ``betas_for_alpha_bar``)."""
    steps = 4000

    def alpha_bar(t: float) -> float:
        return math.cos((t / steps + 0.008) / 1.008 * math.pi / 2) ** 2

    reference = 1.0
    for i in range(201):
        reference *= 1 - min(1 - alpha_bar(i + 1) / alpha_bar(i), 0.999)
    monai = float(DDPMScheduler(num_train_timesteps=steps, schedule="cosine").alphas_cumprod[200])
    assert abs(monai - reference) < 1e-4
    assert abs(reference - 0.9919) < 1e-4
