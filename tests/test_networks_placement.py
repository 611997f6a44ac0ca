"""place_network: the device move and the channels-last memory format of a configured network."""

from __future__ import annotations

import pytest
import torch

from common.networks import PostDAE, place_network


def _network() -> torch.nn.Module:
    torch.manual_seed(0)
    return PostDAE(
        spatial_dims=2,
        in_channels=1,
        out_channels=1,
        img_size=[32, 32],
        encoder_channels=[4, 8, 8],
        decoder_channels=[4, 4],
        latent_size=16,
    )


def _conv_weights(network: torch.nn.Module) -> list[torch.Tensor]:
    weights = [p for p in network.parameters() if p.dim() == 4]
    assert weights, "the test network has convolutions"
    return weights


def test_channels_last_converts_every_convolution_weight_and_keeps_the_outputs() -> None:
    image = (torch.rand(2, 1, 32, 32) > 0.5).float()
    plain = place_network(_network(), "cpu")
    last = place_network(_network(), "cpu", channels_last=True)
    assert all(w.is_contiguous() for w in _conv_weights(plain))
    telling = [w for w in _conv_weights(last) if not w.is_contiguous()]
    assert telling and all(w.is_contiguous(memory_format=torch.channels_last) for w in telling)
    with torch.no_grad():
        torch.testing.assert_close(last(image), plain(image), rtol=1e-4, atol=1e-5)


def test_checkpoints_load_across_formats() -> None:
    last = place_network(_network(), "cpu", channels_last=True)
    plain = place_network(_network(), "cpu")
    for p in last.parameters():
        p.data.add_(0.5)
    plain.load_state_dict(last.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), last.state_dict().values(), strict=True))


@pytest.mark.parametrize("value", ["true", 1, None])
def test_a_non_bool_setting_names_the_key(value: object) -> None:
    with pytest.raises(TypeError, match="'channels_last' must be true or false"):
        place_network(_network(), "cpu", channels_last=value)  # type: ignore[arg-type]
