"""Placing a configured network on its device, in the memory format its convolutions run fastest in."""

from __future__ import annotations

import torch

__all__ = ["place_network"]


def place_network(network: torch.nn.Module, device: torch.device | str, channels_last: bool = False) -> torch.nn.Module:
    """``network`` moved to ``device``; with ``channels_last``, its 4D weights in channels-last memory format.

    Convolutions whose weight is channels-last produce channels-last outputs, so the whole network then runs without
    the per-layer reorders that oneDNN (CPU) and cuDNN need for the default format; inputs need no change. Whether it
    is faster depends on the network: ``python -m tools.benchmark`` measures it for each bundle (its efficiency
    table, column channels_last); Post-DAE, where it measured faster, has a ``channels_last`` key, on by default.
    Results are the same up to floating-point rounding; checkpoints load into either format.

    Raises:
        TypeError: ``channels_last`` is not a bool (config key ``channels_last``).
    """
    if not isinstance(channels_last, bool):
        raise TypeError(f"config key 'channels_last' must be true or false, got {channels_last!r}")
    network = network.to(device)
    return network.to(memory_format=torch.channels_last) if channels_last else network
