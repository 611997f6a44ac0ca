"""Tests of common.diffusion.DenoiserSegmentationNetwork, a DDPM noise predictor fine-tuned into a segmenter."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import DiffusionModelUNet
from monai.networks.schedulers import DDPMScheduler
from torch import nn

from common.diffusion import DenoiserSegmentationNetwork, fixed_noise
from tests.oracles import tiny_ddpm_unet


def _scheduler() -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=100, schedule="cosine")


def _network(unet: DiffusionModelUNet | None = None, **kwargs: object) -> DenoiserSegmentationNetwork:
    kwargs = {"num_classes": 3, "timestep": 20, **kwargs}
    return DenoiserSegmentationNetwork(unet if unet is not None else tiny_ddpm_unet(), _scheduler(), **kwargs)


def _randomise_head(network: DenoiserSegmentationNetwork) -> nn.Conv2d:
    """Give the zero-initialised head random weights, so gradients reach the decoder and outputs differ."""
    head = network.unet.out[1]
    torch.manual_seed(11)
    nn.init.normal_(head.weight, std=0.1)
    nn.init.normal_(head.bias, std=0.1)
    return head


def _images(batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, 2, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1


def _encoder(unet: DiffusionModelUNet) -> list[nn.Parameter]:
    return [p for m in (unet.conv_in, unet.down_blocks, unet.middle_block) for p in m.parameters()]


def test_shape_and_zero_logits_at_initialisation() -> None:
    network = _network()
    head = network.unet.out
    assert isinstance(head[0], nn.SiLU) and head[1].in_channels == 8 and head[1].out_channels == 3
    logits = network.eval()(_images())
    assert logits.shape == (2, 3, 16, 16)
    assert torch.equal(logits, torch.zeros_like(logits)), "the class head starts at zero"


def test_output_equals_monai_forward_of_the_noised_image() -> None:
    network = _network(seed=4).eval()
    _randomise_head(network)
    images = _images()
    t = torch.full((2,), 20, dtype=torch.long)
    noisy = _scheduler().add_noise(original_samples=images, noise=fixed_noise(4, (2, 16, 16)), timesteps=t)
    with torch.no_grad():
        expected = network.unet(noisy, t)
        actual = network(images)
    assert actual.abs().max() > 0.01
    torch.testing.assert_close(actual, expected)


def test_eval_is_seeded_and_training_draws_fresh_noise() -> None:
    network = _network()
    _randomise_head(network)
    images = _images()
    with torch.no_grad():
        network.eval()
        first = network(images)
        assert torch.equal(first, network(images))
        torch.testing.assert_close(first[1:], network(images[1:]), msg="an image does not depend on its batch")
        network.seed = 1
        assert not torch.allclose(first, network(images)), "another seed, other noise"
        network.train()
        assert not torch.allclose(network(images), network(images))


def test_load_ddpm_restores_the_ddpm_and_keeps_the_head(tmp_path) -> None:
    trained = tiny_ddpm_unet(seed=1)
    path = tmp_path / "ddpm.pt"
    torch.save({"ema": trained.state_dict(), "model": tiny_ddpm_unet(seed=2).state_dict()}, path)
    expected = {k: v.clone() for k, v in trained.state_dict().items() if not k.startswith("out.")}
    network = _network(tiny_ddpm_unet(seed=3))
    head = _randomise_head(network)
    head_weight = head.weight.detach().clone()
    network.load_ddpm(str(path))
    state = network.unet.state_dict()
    assert all(torch.equal(state[k], v) for k, v in expected.items()), "the EMA weights are loaded"
    assert network.unet.out[1] is head and torch.equal(head.weight, head_weight), "the class head is untouched"
    assert {k for k in state if k.startswith("out.")} == {"out.1.weight", "out.1.bias"}


def test_load_ddpm_errors(tmp_path) -> None:
    network = _network()
    with pytest.raises(FileNotFoundError, match="ddpm_path"):
        network.load_ddpm(str(tmp_path / "none.pt"))
    torch.save(tiny_ddpm_unet(channels=(16, 16, 32)).state_dict(), tmp_path / "wide.pt")
    with pytest.raises(ValueError, match=r"'conv_in\.conv\.weight' has shape \(16, 2, 3, 3\)"):
        network.load_ddpm(str(tmp_path / "wide.pt"))
    assert isinstance(network.unet.out[0], nn.SiLU), "the head is back after a failed load"


@pytest.mark.parametrize("freeze_encoder", [True, False])
def test_frozen_encoder_gets_no_gradient(freeze_encoder: bool) -> None:
    network = _network(freeze_encoder=freeze_encoder).train()
    unet = network.unet
    torch.manual_seed(5)
    with torch.no_grad():  # as after training: MONAI zero-initialises every residual block's last convolution
        for p in unet.parameters():
            if not p.any():
                p.normal_(std=0.1)
    network(_images()).square().mean().backward()
    encoder = _encoder(unet)
    decoder = [*unet.up_blocks.parameters(), *unet.out.parameters(), *unet.time_embed.parameters()]
    assert all(p.grad is not None and p.grad.any() for p in decoder)
    if freeze_encoder:
        assert all(p.grad is None and not p.requires_grad for p in encoder)
    else:
        assert all(p.grad is not None and p.grad.any() for p in encoder)


@pytest.mark.parametrize("timestep", [-1, 100])
def test_timestep_outside_the_schedule(timestep: int) -> None:
    with pytest.raises(ValueError, match=r"denoiser_timestep .* 0\.\.99"):
        _network(timestep=timestep)
