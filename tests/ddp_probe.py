"""A probe that a torchrun test adds to a bundle's ``run`` list: what each process trains on, and what it writes.

It attaches to the bundle's own trainer, so the record is of the run itself: at every epoch start (after MONAI has
called the sampler's ``set_epoch``) the dataset indices this process's data loader will draw, once, the handler
classes attached to its trainer (checkpoint savers and loggers must be on rank 0 only), and, as the process exits,
the files it sees in the bundle's models folder (no process may end before rank 0 has written its last checkpoint).
"""

from __future__ import annotations

import atexit
import json
from pathlib import Path

import torch.distributed as dist
from ignite.engine import Engine, Events


def record_epochs(trainer: Engine, output_prefix: str, models_dir: str) -> None:
    """Write ``<output_prefix><rank>.json`` with this process's indices per epoch and its handler classes, and
    ``<output_prefix><rank>_exit.json`` with the files under ``models_dir`` when the process exits."""
    rank = dist.get_rank() if dist.is_initialized() else 0
    record: dict = {"rank": rank, "world_size": dist.get_world_size() if dist.is_initialized() else 1, "epochs": []}
    handlers = {
        type(getattr(func, "__self__", func)).__name__
        for event_handlers in trainer._event_handlers.values()
        for func, *_ in event_handlers
    }
    record["handlers"] = sorted(handlers)

    def on_epoch(engine: Engine) -> None:
        record["epochs"].append([int(i) for i in iter(engine.data_loader.sampler)])
        Path(f"{output_prefix}{rank}.json").write_text(json.dumps(record))

    trainer.add_event_handler(Events.EPOCH_STARTED, on_epoch)

    def on_exit() -> None:
        files = sorted(str(p.relative_to(models_dir)) for p in Path(models_dir).rglob("*") if p.is_file())
        Path(f"{output_prefix}{rank}_exit.json").write_text(json.dumps(files))

    atexit.register(on_exit)
