"""Tests of common.networks.SDAutoencoderKL and its Stable Diffusion VAE checkpoint loader.

The reference is a small randomly initialised ``diffusers.AutoencoderKL`` (a test-only dependency), saved as diffusers
safetensors and as a CompVis/LDM ``.ckpt``; both must load into SDAutoencoderKL and give diffusers' outputs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from common.networks import SDAutoencoderKL, load_sd_autoencoder, load_sd_vae_state_dict
from tests.oracles import tiny_diffusers_vae

TINY = {"base_channels": 8, "channel_mults": (1, 2), "num_res_blocks": 1, "norm_groups": 4}
ATOL = 1e-5


def _diffusers_to_ldm(state: dict[str, torch.Tensor], levels: int) -> dict[str, torch.Tensor]:
    """Rename a diffusers AutoencoderKL state dict to CompVis/LDM keys, attention projections as 1x1 convolutions."""
    rules = [
        (r"mid_block\.resnets\.(\d)", lambda m: f"mid.block_{int(m[1]) + 1}"),
        (r"mid_block\.attentions\.0\.", lambda m: "mid.attn_1."),
        (r"down_blocks\.(\d+)\.resnets\.", lambda m: f"down.{m[1]}.block."),
        (r"down_blocks\.(\d+)\.downsamplers\.0\.", lambda m: f"down.{m[1]}.downsample."),
        (r"up_blocks\.(\d+)\.resnets\.", lambda m: f"up.{levels - 1 - int(m[1])}.block."),
        (r"up_blocks\.(\d+)\.upsamplers\.0\.", lambda m: f"up.{levels - 1 - int(m[1])}.upsample."),
        (r"conv_shortcut", lambda m: "nin_shortcut"),
        (r"conv_norm_out", lambda m: "norm_out"),
        (r"attn_1\.group_norm", lambda m: "attn_1.norm"),
        (r"attn_1\.to_(q|k|v)", lambda m: f"attn_1.{m[1]}"),
        (r"attn_1\.to_out\.0", lambda m: "attn_1.proj_out"),
    ]
    ldm = {}
    for key, tensor in state.items():
        for pattern, replacement in rules:
            key = re.sub(pattern, replacement, key)
        if re.search(r"attn_1\.(q|k|v|proj_out)\.weight", key):
            tensor = tensor[:, :, None, None]
        ldm[key] = tensor
    return ldm


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A seeded tiny diffusers VAE (every parameter perturbed) saved in both formats."""
    pytest.importorskip("diffusers")
    vae = tiny_diffusers_vae()
    folder = tmp_path_factory.mktemp("sd_vae")
    vae.save_pretrained(folder / "vae", safe_serialization=True)
    ldm = _diffusers_to_ldm(vae.state_dict(), levels=2)
    sd_checkpoint = {f"first_stage_model.{k}": v for k, v in ldm.items()}
    sd_checkpoint["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(2)  # rest of a full SD checkpoint
    torch.save({"state_dict": sd_checkpoint, "global_step": 1}, folder / "sd.ckpt")
    return {
        "vae": vae,
        "ldm": ldm,
        "diffusers": folder / "vae" / "diffusion_pytorch_model.safetensors",
        "ldm_ckpt": folder / "sd.ckpt",
        "folder": folder,
    }


def test_ldm_helper_agrees_with_diffusers_converter(reference: dict) -> None:
    """The test's LDM naming is the real one: diffusers' own LDM->diffusers converter maps it back exactly."""
    single_file_utils = pytest.importorskip("diffusers.loaders.single_file_utils")
    ldm = {f"first_stage_model.{k}": v for k, v in reference["ldm"].items()}
    back = single_file_utils.convert_ldm_vae_checkpoint(ldm, reference["vae"].config)
    expected = reference["vae"].state_dict()
    assert set(back) == set(expected)
    for key, tensor in expected.items():
        assert torch.equal(back[key], tensor), key


def _legacy_diffusers(reference: dict) -> Path:
    """The diffusers file with the attention names of diffusers < 0.14 (query/key/value/proj_attn)."""
    from safetensors.torch import save_file

    names = {"group_norm": "group_norm", "to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    state = {}
    for key, tensor in reference["vae"].state_dict().items():
        for new, old in names.items():
            key = key.replace(f"attentions.0.{new}.", f"attentions.0.{old}.")
        state[key] = tensor.contiguous()
    path = reference["folder"] / "legacy.safetensors"
    save_file(state, path)
    return path


@pytest.mark.parametrize("source", ["diffusers", "ldm_ckpt", "legacy"])
def test_matches_diffusers(reference: dict, source: str) -> None:
    path = _legacy_diffusers(reference) if source == "legacy" else reference[source]
    model = load_sd_autoencoder(str(path), **TINY)
    vae = reference["vae"]
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        posterior = vae.encode(x).latent_dist
        expected_image = vae.decode(posterior.mean).sample
        mean, logvar = model.encode_posterior(x)
        latent = model.encode(x)
        image = model.decode(latent)
    assert mean.shape == (1, 4, 16, 16)
    torch.testing.assert_close(mean, posterior.mean, atol=ATOL, rtol=0)
    torch.testing.assert_close(logvar, posterior.logvar, atol=ATOL, rtol=0)
    torch.testing.assert_close(latent, posterior.mean * 0.18215, atol=ATOL, rtol=0)
    torch.testing.assert_close(image, expected_image, atol=ATOL, rtol=0)
    torch.testing.assert_close(model(x), image, atol=ATOL, rtol=0)
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())


def test_state_dict_formats_agree(reference: dict) -> None:
    ldm = load_sd_vae_state_dict(str(reference["ldm_ckpt"]))
    diffusers = load_sd_vae_state_dict(str(reference["diffusers"]))
    assert set(ldm) == set(diffusers) == set(SDAutoencoderKL(**TINY).state_dict())
    for key, tensor in ldm.items():
        assert torch.equal(tensor, diffusers[key]), key


def test_default_is_the_sd2_first_stage() -> None:
    """SD 2's VAE has 83,653,863 parameters (as diffusers' AutoencoderKL with the SD 2 config) and downsamples by 8."""
    with torch.device("meta"):
        model = SDAutoencoderKL()
    assert sum(p.numel() for p in model.parameters()) == 83_653_863
    assert model.downsampling == 8 and model.scale_factor == 0.18215


def test_logvar_is_clamped() -> None:
    model = SDAutoencoderKL(**TINY).eval()
    x = torch.zeros(1, 3, 16, 16)
    with torch.no_grad():
        model.quant_conv.bias[4:] = 1e3
        high = model.encode_posterior(x)[1]
        model.quant_conv.bias[4:] = -1e3
        low = model.encode_posterior(x)[1]
    assert high.shape == (1, 4, 8, 8) and torch.all(high == 20.0) and torch.all(low == -30.0)


@pytest.mark.filterwarnings("ignore:.torch.jit.script. is deprecated:DeprecationWarning")
def test_torchscript() -> None:
    """Bundles export their networks to TorchScript; the scripted autoencoder gives the same outputs."""
    model = SDAutoencoderKL(**TINY).eval()
    scripted = torch.jit.script(model)
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x))
        torch.testing.assert_close(scripted.encode_posterior(x), model.encode_posterior(x))


def test_bad_configuration_and_input() -> None:
    with pytest.raises(ValueError, match="norm_groups = 32"):
        SDAutoencoderKL(base_channels=48)
    with pytest.raises(ValueError, match="divisible by 2"):
        SDAutoencoderKL(**TINY).encode(torch.zeros(1, 3, 15, 16))


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "vae.safetensors"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        load_sd_autoencoder(str(path))


def test_unknown_format(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"state_dict": {"backbone.conv.weight": torch.zeros(1)}}, path)
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: unknown format"):
        load_sd_vae_state_dict(str(path))
    text = tmp_path / "vae.txt"
    text.write_text("not weights")
    with pytest.raises(ValueError, match="unknown checkpoint format"):
        load_sd_vae_state_dict(str(text))


class _Callback:
    """Stands for the training objects some LDM checkpoints pickle next to the weights."""


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    """Only tensors and containers are unpickled (weights_only=True): other objects give a clear error."""
    path = tmp_path / "sd.ckpt"
    torch.save({"state_dict": {"quant_conv.weight": torch.zeros(1)}, "callbacks": _Callback()}, path)
    with pytest.raises(
        ValueError,
        match=rf"{re.escape(str(path))} \(config key 'autoencoder_path'\): torch.load\(weights_only=True\) cannot read",
    ):
        load_sd_vae_state_dict(str(path))


def _save_ldm(reference: dict, path: Path, **changes: torch.Tensor | None) -> str:
    state = dict(reference["ldm"])
    for key, tensor in changes.items():
        if tensor is None:
            del state[key]
        else:
            state[key] = tensor
    torch.save(state, path)
    return str(path)


@pytest.mark.parametrize("key", ["encoder.down.1.block.0.conv2.weight", "decoder.up.1.upsample.conv.bias"])
def test_missing_key_is_named(reference: dict, tmp_path: Path, key: str) -> None:
    path = _save_ldm(reference, tmp_path / "vae.ckpt", **{key: None})
    with pytest.raises(ValueError, match=rf"{re.escape(path)}: key '{re.escape(key)}' .* missing"):
        load_sd_autoencoder(path, **TINY)


def test_missing_diffusers_key_is_named(reference: dict, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    key = "decoder.up_blocks.0.resnets.1.norm2.bias"
    state = {k: v.contiguous() for k, v in reference["vae"].state_dict().items() if k != key}
    save_file(state, tmp_path / "vae.safetensors")
    with pytest.raises(ValueError, match=rf"key '{re.escape(key)}' of the diffusers VAE layout is missing"):
        load_sd_vae_state_dict(str(tmp_path / "vae.safetensors"))


def test_unexpected_key_is_named(reference: dict, tmp_path: Path) -> None:
    path = _save_ldm(reference, tmp_path / "vae.pth", **{"encoder.mid.attn_2.q.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"unexpected key 'encoder\.mid\.attn_2\.q\.weight'"):
        load_sd_vae_state_dict(path)


def test_wrong_shape_is_named(reference: dict, tmp_path: Path) -> None:
    path = _save_ldm(reference, tmp_path / "vae.ckpt", **{"encoder.conv_in.weight": torch.zeros(8, 3, 5, 5)})
    with pytest.raises(ValueError, match=r"'encoder\.conv_in\.weight'.*expected \(8, 3, 3, 3\), found \(8, 3, 5, 5\)"):
        load_sd_autoencoder(path, **TINY)


def test_wrong_configuration_is_named(reference: dict) -> None:
    """A configuration that does not fit the weights: the first differing weight is named, in the file's naming."""
    with pytest.raises(ValueError, match=r"'encoder\.conv_in\.weight'.*expected \(16, 3, 3, 3\), found \(8, 3, 3, 3\)"):
        load_sd_autoencoder(str(reference["ldm_ckpt"]), **{**TINY, "base_channels": 16})
    model_key = r"\(model key 'encoder\.down\.1\.block\.0\.conv1\.weight'\)"
    with pytest.raises(ValueError, match=rf"'encoder\.down_blocks\.1\.resnets\.0\.conv1\.weight' {model_key}"):
        load_sd_autoencoder(str(reference["diffusers"]), **{**TINY, "channel_mults": (1, 1)})
