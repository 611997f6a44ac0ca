"""Loading trained weights into a configured network, with errors that say which config key to fix."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from common.bundle import verify_weights

__all__ = ["load_network_weights", "read_checkpoint"]


def read_checkpoint(path: str | os.PathLike, config_key: str = "ckpt_dir", map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with errors that name the file and the config key to fix.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file fails its packaged checksum, or is not a readable weights-only PyTorch checkpoint
            (truncated, empty, another format, or holding pickled objects other than tensors and plain containers).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"checkpoint '{path}' does not exist (config key '{config_key}'): train that model first "
            f"(see the bundle's docs/README.md) or pass --{config_key} <file>."
        )
    verify_weights(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise ValueError(
            f"checkpoint '{path}' (config key '{config_key}') is not a readable PyTorch checkpoint ({reason}); "
            "expected a complete file written by torch.save holding weights only: is it truncated, empty or of "
            "another format? Train again or copy the file again."
        ) from err


def load_network_weights(
    network: torch.nn.Module,
    path: str,
    keys: tuple[str, ...] = ("model",),
    config_key: str = "ckpt_dir",
    map_location: Any = "cpu",
) -> torch.nn.Module:
    """Load a bundle checkpoint's weights into ``network`` strictly and return it.

    The file is a raw state dict or a dict holding one under the first of ``keys`` it has (an interval checkpoint
    ``{"model", "ema", "optimizer", ...}`` gives its EMA weights with ``keys=("ema", "model")``).

    Raises:
        FileNotFoundError: no file at ``path``; the message names ``config_key``.
        ValueError: the file is not a readable checkpoint (see :func:`read_checkpoint`), holds none of ``keys``, or
            its weights do not fit ``network`` (first key and both shapes).
    """
    state = read_checkpoint(path, config_key, map_location)
    if isinstance(state, Mapping) and not all(isinstance(v, torch.Tensor) for v in state.values()):
        found = [k for k in keys if isinstance(state.get(k), Mapping)]
        if not found:
            raise ValueError(f"checkpoint '{path}' (config key '{config_key}') holds none of {keys}: {sorted(state)}.")
        state = state[found[0]]
    expected = network.state_dict()
    for key, tensor in expected.items():
        if key not in state:
            raise ValueError(f"checkpoint '{path}' (config key '{config_key}') lacks weight {key!r}.")
        if state[key].shape != tensor.shape:
            raise ValueError(
                f"checkpoint '{path}' (config key '{config_key}'): weight {key!r} has shape {tuple(state[key].shape)}, "
                f"the configured network expects {tuple(tensor.shape)}; do the network's config keys match the run "
                "that wrote it?"
            )
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise ValueError(
            f"checkpoint '{path}' (config key '{config_key}') has weights the network lacks: {unexpected[:3]}"
        )
    network.load_state_dict(state, strict=True)
    return network
