"""A probe that the reliability tests add to a bundle's ``run`` list: the loss of every iteration, and a kill -9.

It attaches to the bundle's own trainer. Each iteration appends ``{"epoch", "iteration", "loss"}`` to a JSON-lines
file (flushed, so a killed run keeps its record); with ``kill_at`` the process sends itself SIGKILL when that
iteration completes: an interruption with no clean-up at all, in the middle of an epoch.
"""

from __future__ import annotations

import json
import os
import signal

from ignite.engine import Engine, Events

from common.engines import iteration_loss


def _number(value: object) -> float | dict[str, float]:
    if isinstance(value, dict):
        return {str(k): float(v) for k, v in value.items()}
    return float(value)


def attach(trainer: Engine, record: str, kill_at: int = 0) -> None:
    """Record every iteration's loss to ``record``; kill this process after iteration ``kill_at`` (0: never)."""

    def on_iteration(engine: Engine) -> None:
        entry = {"epoch": engine.state.epoch, "iteration": engine.state.iteration}
        entry["loss"] = _number(iteration_loss(engine.state.output))
        with open(record, "a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if kill_at and engine.state.iteration == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    trainer.add_event_handler(Events.ITERATION_COMPLETED, on_iteration)
