"""Small ignite handlers that MONAI does not have."""

from __future__ import annotations

import os
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents
from monai.transforms import Randomizable
from monai.utils import set_determinism

from common.bundle import as_bool

__all__ = ["ClipGradNorm", "ProtectOutputDir", "SeedEachEpoch", "epoch_seed", "iteration_loss"]


class ClipGradNorm:
    """Clip the gradient norm of a MONAI trainer's network between its backward pass and its optimizer step.

    Args:
        max_norm: largest allowed total gradient norm (``torch.nn.utils.clip_grad_norm_``); 0 disables clipping.
    """

    def __init__(self, max_norm: float) -> None:
        if max_norm < 0:
            raise ValueError(f"max_norm must be >= 0, got {max_norm}.")
        self.max_norm = float(max_norm)

    def attach(self, engine: Engine) -> None:
        if self.max_norm > 0:
            engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if getattr(engine, "amp", False) and getattr(engine, "scaler", None) is not None:
            engine.scaler.unscale_(engine.optimizer)
        torch.nn.utils.clip_grad_norm_(engine.network.parameters(), self.max_norm)


class ProtectOutputDir:
    """Stop a run before it starts when its output folder already holds files, unless ``overwrite`` is given.

    Inference and evaluation write fixed names (``<image>_seg.png``, ``metrics.csv``), so a second run into the same
    folder would silently replace the first run's results. Attach it to the evaluator whose writers use ``folder``.

    Args:
        folder: the output folder.
        overwrite: allow writing into a folder that already holds files (the bundles' ``overwrite`` config key).
        config_key: the config key that sets ``folder``, named in the error.
    """

    def __init__(self, folder: str, overwrite: bool = False, config_key: str = "output_dir") -> None:
        self.folder = str(folder)
        self.overwrite = as_bool(overwrite, "overwrite")
        self.config_key = config_key

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        if self.overwrite or not os.path.isdir(self.folder):
            return
        present = sorted(name for name in os.listdir(self.folder) if not name.startswith("."))
        if present:
            shown = ", ".join(present[:4]) + (", ..." if len(present) > 4 else "")
            raise FileExistsError(
                f"{self.config_key} '{self.folder}' already holds {len(present)} file(s) ({shown}) from an earlier "
                f"run; pass another --{self.config_key}, or --overwrite true to replace files of the same names."
            )


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch of a run seeded with ``seed``: distinct per epoch, the same on every run."""
    return (int(seed) * 1_000_003 + int(epoch)) % 2**32


class SeedEachEpoch:
    """Seed every random source from ``(seed, epoch)`` as each training epoch starts.

    A run resumed from the checkpoint of epoch ``k`` then draws for epoch ``k + 1`` exactly what the uninterrupted
    run drew (shuffling, augmentation, diffusion noise), so on the same machine both end with the same weights. It
    seeds Python, NumPy and torch (MONAI's ``set_determinism``) and the training dataset's MONAI transforms, gives a
    dataset with ``set_epoch`` its epoch, and restarts the data loader's iterator after seeding, so that the
    shuffling order and the workers' seeds come from the new state too.

    Args:
        seed: the run's seed (the bundles' ``seed`` config key).
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        seed = epoch_seed(self.seed, engine.state.epoch)
        set_determinism(seed=seed)
        loader = engine.state.dataloader
        dataset = getattr(loader, "dataset", None)
        if isinstance(getattr(dataset, "transform", None), Randomizable):
            dataset.transform.set_random_state(seed=seed)
        if callable(getattr(dataset, "set_epoch", None)):
            dataset.set_epoch(engine.state.epoch)
        if loader is not None:
            engine.set_data(loader)


def iteration_loss(output: Any) -> torch.Tensor | dict[str, torch.Tensor]:
    """The loss of a trainer iteration's output, whether the batch was decollated (a list of dicts) or not (a dict).

    For ignite metrics and handlers that need one number per iteration (an epoch's mean loss for a plateau
    scheduler, for instance). A trainer with several losses (a dict of named terms, as a GAN trainer's) gives the
    dict, which MONAI's stats handlers log term by term.
    """
    first = output[0] if isinstance(output, (list, tuple)) else output
    loss = first["loss"]
    if isinstance(loss, dict):
        return {name: torch.as_tensor(value).detach() for name, value in loss.items()}
    return torch.as_tensor(loss).detach()
