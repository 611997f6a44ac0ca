"""Exponential moving average (EMA) of a network's weights, as an ignite handler (MONAI has none), and the
re-estimation of BatchNorm statistics that an averaged network needs before it is evaluated."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from copy import deepcopy
from itertools import islice
from typing import Any

import torch
from ignite.engine import Engine, Events
from torch import nn

__all__ = ["ExponentialMovingAverage", "refresh_batchnorm_statistics"]


def _unwrap(network: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel``/``DataParallel`` wrapper, or ``network`` itself."""
    inner = getattr(network, "module", None)
    return inner if isinstance(inner, nn.Module) else network


class ExponentialMovingAverage:
    """Keep an EMA copy of a trainer's network: ``ema = decay * ema + (1 - decay) * param`` after each update.

    Diffusion models are sampled with the EMA weights (improved-diffusion uses decay 0.995 at every step). The EMA
    network (``ema_network``, eval mode, no gradients) is an ``nn.Module``, so configs pass ``@ema#ema_network`` to
    evaluators, inferers and savers; the handler itself goes in a checkpoint's ``save_dict`` to be resumed.

    Floating-point parameters are averaged; buffers (BatchNorm statistics and counters) and any integer parameters
    are copied. The EMA starts as a copy of the network when the handler is created; up to ``start_iteration``
    iterations it stays a plain copy (a warm-up that keeps the random initial weights out of the average, and picks
    up weights a ``CheckpointLoader`` puts into the network when the run starts).

    Args:
        network: the trained network, possibly wrapped in ``DistributedDataParallel`` (its ``.module`` is used).
        decay: weight of the old average per update, in [0, 1).
        update_every: update after every ``update_every``-th iteration (the decay applies per update).
        start_iteration: until the trainer's iteration exceeds this, an update copies the network.
    """

    def __init__(
        self, network: nn.Module, decay: float = 0.995, update_every: int = 1, start_iteration: int = 0
    ) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}.")
        if int(update_every) != update_every or update_every < 1:
            raise ValueError(f"update_every must be an integer >= 1, got {update_every}.")
        if int(start_iteration) != start_iteration or start_iteration < 0:
            raise ValueError(f"start_iteration must be an integer >= 0, got {start_iteration}.")
        self.network = _unwrap(network)
        self.decay = float(decay)
        self.update_every = int(update_every)
        self.start_iteration = int(start_iteration)
        self.ema_network = deepcopy(self.network).eval().requires_grad_(False)
        self.num_updates = 0

    def attach(self, engine: Engine) -> None:
        """Update the EMA after every ``update_every``-th iteration of ``engine``."""
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.update_every), self)

    def __call__(self, engine: Engine) -> None:
        self.update(copy=engine.state.iteration <= self.start_iteration)

    @torch.no_grad()
    def update(self, copy: bool = False) -> None:
        """Average the network's current weights into the EMA (or copy them, with ``copy``)."""
        pairs = zip(self.ema_network.parameters(), self.network.parameters(), strict=True)
        for ema, param in pairs:
            if copy or not ema.is_floating_point():
                ema.copy_(param)
            else:
                ema.lerp_(param, 1.0 - self.decay)
        for ema, buffer in zip(self.ema_network.buffers(), self.network.buffers(), strict=True):
            ema.copy_(buffer)
        self.num_updates += 1

    def state_dict(self) -> dict[str, Any]:
        """The EMA network's state dict (``ema_network``) and the number of updates so far (``num_updates``)."""
        return {"ema_network": self.ema_network.state_dict(), "num_updates": self.num_updates}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the EMA from :meth:`state_dict`'s output, strictly; shape mismatches name the weights."""
        missing = sorted({"ema_network", "num_updates"} - set(state_dict))
        if missing:
            raise KeyError(
                f"EMA state lacks {missing}: expected the output of ExponentialMovingAverage.state_dict(), "
                f"got keys {sorted(state_dict)[:8]}."
            )
        weights, own = state_dict["ema_network"], self.ema_network.state_dict()
        mismatched = [
            f"'{k}' (checkpoint {tuple(v.shape)}, network {tuple(own[k].shape)})"
            for k, v in weights.items()
            if k in own and tuple(v.shape) != tuple(own[k].shape)
        ]
        if mismatched:
            raise ValueError(
                f"EMA weights do not fit the network, shape mismatch for {', '.join(mismatched)}: the checkpoint was "
                "saved with a different network configuration."
            )
        self.ema_network.load_state_dict(weights, strict=True)
        self.num_updates = int(state_dict["num_updates"])


_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@torch.no_grad()
def refresh_batchnorm_statistics(
    network: nn.Module,
    batches: Iterable[Any],
    num_batches: int = 50,
    prepare_batch: Callable[[Any], torch.Tensor | Sequence[torch.Tensor]] | None = None,
) -> int:
    """Re-estimate the BatchNorm running statistics of ``network`` from up to ``num_batches`` forward passes.

    Averaging weights does not average BatchNorm statistics: an EMA network evaluated with its (copied) running
    statistics gives poor images, so OASIS runs its EMA generator on 50 training batches in train mode before every
    evaluation or save (OASIS issue #21). Here the running statistics are reset and re-estimated as the plain
    average over the batches (``momentum=None`` during the passes, as ``torch.optim.swa_utils.update_bn``), under
    ``no_grad``, with the whole network in train mode (dropout active, spectral norm's power iteration refining its
    vectors for the averaged weights); momenta and every module's train/eval mode are restored afterwards.

    With ``ExponentialMovingAverage``, call it on ``ema.ema_network`` right before evaluating or saving: the next
    ``update`` copies the trained network's buffers, BatchNorm statistics included, back into the EMA.

    Args:
        network: the network (a ``DistributedDataParallel`` wrapper is unwrapped).
        batches: an iterable of network inputs, e.g. a data loader.
        num_batches: how many batches to use at most.
        prepare_batch: turns an item of ``batches`` into the network's input (a tensor, or a sequence of positional
            arguments), e.g. a one-hot label map on the network's device; by default the item itself.

    Returns:
        The number of batches used.
    """
    if int(num_batches) != num_batches or num_batches < 1:
        raise ValueError(f"num_batches must be a positive integer, got {num_batches}.")
    network = _unwrap(network)
    norms = [m for m in network.modules() if isinstance(m, _BATCH_NORMS) and m.track_running_stats]
    if not norms:
        return 0
    momenta = [m.momentum for m in norms]
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in norms]
    modes = [(m, m.training) for m in network.modules()]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    network.train()
    used = 0
    try:
        for batch in islice(batches, int(num_batches)):
            inputs = prepare_batch(batch) if prepare_batch is not None else batch
            if isinstance(inputs, torch.Tensor):
                network(inputs)
            else:
                network(*inputs)
            used += 1
        if used == 0:
            raise ValueError("refresh_batchnorm_statistics got no batches to estimate the BatchNorm statistics from.")
    except BaseException:
        for norm, (mean, var, count) in zip(norms, saved, strict=True):  # leave the statistics as they were
            norm.running_mean.copy_(mean)
            norm.running_var.copy_(var)
            norm.num_batches_tracked.copy_(count)
        raise
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        for module, training in modes:
            module.training = training
    return used
