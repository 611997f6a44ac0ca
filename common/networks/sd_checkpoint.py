"""Load Stable Diffusion VAE weights, CompVis/LDM or diffusers, into ``SDAutoencoderKL``.

Two formats are read, told apart by their keys, whatever the file type:

* CompVis/LDM: a full SD checkpoint (``state_dict`` with ``first_stage_model.*`` keys, the rest ignored) or a bare
  first-stage one (``encoder.down.0.block.0.norm1.weight``, ``quant_conv.weight``, ...; LDM training checkpoints'
  ``loss.*`` discriminator/LPIPS weights are ignored); attention projections are 1x1 convolutions.
* diffusers: ``vae/diffusion_pytorch_model.safetensors`` (``encoder.down_blocks.0.resnets.0.norm1.weight``, ...;
  attention ``to_q/to_k/to_v/to_out.0`` or the older ``query/key/value/proj_attn``, as Linear layers); its decoder
  ``up_blocks`` run from the deepest level, the reverse of LDM's ``up`` list.

``.ckpt``/``.pt``/``.pth``/``.bin`` files are read by ``torch.load(weights_only=True)``, which refuses pickled
objects other than tensors and containers, and ``.safetensors`` files by ``safetensors``. No weights are ever
downloaded: the path is a local file.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from common.bundle import verify_weights

from .sd_autoencoder import SDAutoencoderKL

__all__ = ["load_sd_autoencoder", "load_sd_vae_state_dict"]

TORCH_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
FIRST_STAGE_PREFIX = "first_stage_model."
LDM, DIFFUSERS, LEGACY_DIFFUSERS = 0, 1, 2  # columns of the name tables below; LDM's names are the model's
FORMAT_NAMES = ("CompVis/LDM", "diffusers", "diffusers (legacy attention names)")

# Parameter names of each kind of block relative to the block, as (LDM, diffusers, legacy diffusers); each stands
# for "<name>.weight" and "<name>.bias".
PARAMETERS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "plain": (("", "", ""),),
    "resnet": (
        ("norm1", "norm1", "norm1"),
        ("conv1", "conv1", "conv1"),
        ("norm2", "norm2", "norm2"),
        ("conv2", "conv2", "conv2"),
        ("nin_shortcut", "conv_shortcut", "conv_shortcut"),
    ),
    "attention": (
        ("norm", "group_norm", "group_norm"),
        ("q", "to_q", "query"),
        ("k", "to_k", "key"),
        ("v", "to_v", "value"),
        ("proj_out", "to_out.0", "proj_attn"),
    ),
}
OPTIONAL = ".nin_shortcut."  # only residual blocks that change the width have a shortcut convolution
PROJECTIONS = re.compile(r".*\.attn_1\.(q|k|v|proj_out)\.weight")  # 1x1 convolutions here, Linear in diffusers

# Per format: the levels, residual blocks per encoder level and per decoder level, read from the keys.
LAYOUT_PATTERNS = (
    (r"encoder\.down\.(\d+)\.", r"encoder\.down\.\d+\.block\.(\d+)\.", r"decoder\.up\.\d+\.block\.(\d+)\."),
    (
        r"encoder\.down_blocks\.(\d+)\.",
        r"encoder\.down_blocks\.\d+\.resnets\.(\d+)\.",
        r"decoder\.up_blocks\.\d+\.resnets\.(\d+)\.",
    ),
)


class Layout(NamedTuple):
    """Depth of an SD autoencoder: what the key names depend on."""

    levels: int
    encoder_blocks: int
    decoder_blocks: int


def _blocks(layout: Layout) -> Iterator[tuple[str, str, str]]:
    """(kind, LDM prefix, diffusers prefix) of every block, in SDAutoencoderKL's state-dict order."""
    levels = layout.levels
    mid = [
        ("resnet", "mid.block_1", "mid_block.resnets.0"),
        ("attention", "mid.attn_1", "mid_block.attentions.0"),
        ("resnet", "mid.block_2", "mid_block.resnets.1"),
    ]
    head = [("plain", "norm_out", "conv_norm_out"), ("plain", "conv_out", "conv_out")]
    encoder = [("plain", "conv_in", "conv_in")]
    for i in range(levels):
        encoder += [
            ("resnet", f"down.{i}.block.{j}", f"down_blocks.{i}.resnets.{j}") for j in range(layout.encoder_blocks)
        ]
        if i < levels - 1:
            encoder.append(("plain", f"down.{i}.downsample.conv", f"down_blocks.{i}.downsamplers.0.conv"))
    decoder = [("plain", "conv_in", "conv_in"), *mid]
    for i in reversed(range(levels)):  # the order they run, deepest first, which is diffusers' numbering
        k = levels - 1 - i
        decoder += [("resnet", f"up.{i}.block.{j}", f"up_blocks.{k}.resnets.{j}") for j in range(layout.decoder_blocks)]
        if i > 0:
            decoder.append(("plain", f"up.{i}.upsample.conv", f"up_blocks.{k}.upsamplers.0.conv"))
    for part, blocks in (("encoder", [*encoder, *mid, *head]), ("decoder", [*decoder, *head])):
        for kind, ldm, diffusers in blocks:
            yield kind, f"{part}.{ldm}", f"{part}.{diffusers}"
    for name in ("quant_conv", "post_quant_conv"):
        yield "plain", name, name


def _key_table(layout: Layout, column: int) -> dict[str, str]:
    """Map every key of format ``column`` to its SDAutoencoderKL (LDM) key, in model order."""
    table = {}
    for kind, ldm_prefix, diffusers_prefix in _blocks(layout):
        prefixes = (ldm_prefix, diffusers_prefix, diffusers_prefix)
        for names in PARAMETERS[kind]:
            for parameter in ("weight", "bias"):
                model_key = ".".join(p for p in (ldm_prefix, names[LDM], parameter) if p)
                table[".".join(p for p in (prefixes[column], names[column], parameter) if p)] = model_key
    return table


def _read(path: str) -> dict[str, Tensor]:
    """All tensors of a checkpoint file, from its ``state_dict`` entry when it has one."""
    if not str(path):
        raise ValueError(
            "autoencoder_path is empty: give the path of Stable Diffusion's VAE weights (with the GMS bundle's "
            "configs/sd_vae.json, the SD_VAE_PATH environment variable or --autoencoder_path)."
        )
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(
            f"no autoencoder weights at {path} (config key 'autoencoder_path'): give Stable Diffusion's VAE "
            "(.ckpt or .safetensors, see the GMS bundle's configs/sd_vae.json) or train one first with the GMS "
            "bundle's configs/train_autoencoder.json."
        )
    verify_weights(file)
    where = f"{path} (config key 'autoencoder_path')"
    suffix = file.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(file, device="cpu")
        except SafetensorError as err:
            raise ValueError(
                f"{path} (config key 'autoencoder_path'): not a readable safetensors file ({err})."
            ) from err
    if suffix not in TORCH_SUFFIXES:
        raise ValueError(f"{where}: unknown checkpoint format; expected .safetensors or one of {TORCH_SUFFIXES}.")
    try:
        loaded: Any = torch.load(file, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(file))
    except Exception as err:  # truncated, empty, not a zip or pickle, or objects beyond weights
        raise ValueError(
            f"{where}: torch.load(weights_only=True) cannot read it ({err}). If the file holds pickled objects besides "
            "the weights and you trust it, re-save its state_dict with torch.save, or use the diffusers "
            "vae/diffusion_pytorch_model.safetensors."
        ) from err
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping):
        raise ValueError(f"{path}: unknown checkpoint format; expected a state dict, got {type(loaded).__name__}.")
    return {k: v for k, v in loaded.items() if isinstance(v, Tensor)}


def _count(keys: list[str], pattern: str) -> int:
    """One more than the largest index the pattern's group captures at the start of a key (0 if none matches)."""
    indices = [int(m.group(1)) for m in map(re.compile(pattern).match, keys) if m]
    return max(indices, default=-1) + 1


def _convert(path: str) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The file's VAE weights in SDAutoencoderKL's layout, and each model key's name in the file."""
    state = _read(path)
    if any(k.startswith(FIRST_STAGE_PREFIX) for k in state):
        state = {k.removeprefix(FIRST_STAGE_PREFIX): v for k, v in state.items() if k.startswith(FIRST_STAGE_PREFIX)}
    state = {k: v for k, v in state.items() if not k.startswith("loss.")}
    keys = list(state)
    found = [[_count(keys, p) for p in patterns] for patterns in LAYOUT_PATTERNS]
    if bool(found[LDM][0]) == bool(found[DIFFUSERS][0]):
        raise ValueError(
            f"{path}: unknown format, not the weights of one Stable Diffusion VAE; expected either CompVis/LDM keys "
            "such as 'encoder.down.0.block.0.norm1.weight' or diffusers keys such as "
            f"'encoder.down_blocks.0.resnets.0.norm1.weight', found {keys[:3]} ({len(keys)} tensors)."
        )
    column = LDM if found[LDM][0] else DIFFUSERS
    layout = Layout(*found[column])
    if column == DIFFUSERS and any(re.search(r"mid_block\.attentions\.0\.query\.", k) for k in keys):
        column = LEGACY_DIFFUSERS
    table = _key_table(layout, column)
    for key, model_key in table.items():
        if key not in state and OPTIONAL not in model_key:
            raise ValueError(f"{path}: key {key!r} of the {FORMAT_NAMES[column]} VAE layout is missing.")
    for key in keys:
        if key not in table:
            raise ValueError(f"{path}: unexpected key {key!r} for a {FORMAT_NAMES[column]} VAE checkpoint.")
    converted = {}
    for key, model_key in table.items():
        if key in state:
            tensor = state[key]
            if PROJECTIONS.fullmatch(model_key) and tensor.ndim < 4 and all(s == 1 for s in tensor.shape[2:]):
                tensor = tensor.reshape(*tensor.shape[:2], 1, 1)  # Linear (or Conv1d) -> 1x1 convolution
            converted[model_key] = tensor
    return converted, {model_key: key for key, model_key in table.items()}


def _describe(model_key: str, file_keys: dict[str, str]) -> str:
    """The file's name of a model key, followed by the model's where they differ."""
    name = file_keys.get(model_key, model_key)
    return repr(name) if name == model_key else f"{name!r} (model key {model_key!r})"


def load_sd_vae_state_dict(path: str) -> dict[str, Tensor]:
    """Read SD VAE weights (CompVis/LDM or diffusers, see the module docstring) in ``SDAutoencoderKL``'s layout.

    The depth (levels, residual blocks) is read from the keys, so any LDM-style KL autoencoder converts.
    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file and the first offending key
    for an unknown format, a missing key or an unexpected key.
    """
    return _convert(path)[0]


def load_sd_autoencoder(path: str, **kwargs: Any) -> SDAutoencoderKL:
    """Build ``SDAutoencoderKL(**kwargs)``, load SD VAE weights from ``path`` strictly, and freeze it (eval mode).

    Errors are those of ``load_sd_vae_state_dict``, plus a ``ValueError`` naming the file's key, the model's key and
    both shapes at the first key whose shape (or presence) does not fit the configuration given by ``kwargs``.
    """
    state, file_keys = _convert(path)
    model = SDAutoencoderKL(**kwargs)
    expected = model.state_dict()
    hint = f"does SDAutoencoderKL({', '.join(f'{k}={v!r}' for k, v in kwargs.items())}) match the weights?"
    for key, tensor in expected.items():
        name = _describe(key, file_keys)
        if key not in state:
            raise ValueError(f"{path}: key {name} is missing; {hint}")
        if state[key].shape != tensor.shape:
            raise ValueError(
                f"{path}: key {name} has the wrong shape: expected {tuple(tensor.shape)}, "
                f"found {tuple(state[key].shape)}; {hint}"
            )
    for key in state:
        if key not in expected:
            raise ValueError(f"{path}: unexpected key {_describe(key, file_keys)}; {hint}")
    model.load_state_dict(state, strict=True)
    model.requires_grad_(False)
    return model.eval()
