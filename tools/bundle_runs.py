"""Running a bundle's configs from a benchmark: one workflow, its wall time per epoch and in total.

Benchmarks run the bundles exactly as users do (the same configs, with overrides for data, sizes and output folders)
so the numbers they report are the bundles' own, not a re-implementation's.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events
from monai.bundle import ConfigWorkflow

__all__ = ["bundle_workflow", "epoch_times", "timed_run"]


def bundle_workflow(
    bundle: Path, configs: Sequence[str], workflow_type: str = "train", **overrides: Any
) -> ConfigWorkflow:
    """An initialised ``ConfigWorkflow`` of ``bundle``'s ``configs`` (names in its ``configs/`` folder), overridden."""
    workflow = ConfigWorkflow(
        config_file=[str(bundle / "configs" / c) for c in configs],
        workflow_type=workflow_type,
        logging_file=str(bundle / "configs" / "logging.conf"),
        meta_file=str(bundle / "configs" / "metadata.json"),
        **overrides,
    )
    workflow.initialize()
    return workflow


def epoch_times(trainer: Engine) -> list[float]:
    """Record each epoch's wall time (training only: handlers attached earlier, such as validation, run after)."""
    times: list[float] = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda _: times.append(-time.perf_counter()))
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: times.__setitem__(-1, times[-1] + time.perf_counter()))
    return times


def timed_run(bundle: Path, configs: Sequence[str], trainer_id: str = "train#trainer", **overrides: Any) -> dict:
    """Run a training workflow and return its wall times, epochs and iterations."""
    start = time.perf_counter()
    workflow = bundle_workflow(bundle, configs, **overrides)
    trainer = workflow.parser.get_parsed_content(trainer_id)
    setup = time.perf_counter() - start
    times = epoch_times(trainer)
    workflow.run()
    workflow.finalize()
    return {
        "seconds": time.perf_counter() - start,
        "setup_seconds": setup,
        "epoch_seconds": times,
        "epochs": trainer.state.epoch,
        "iterations": trainer.state.iteration,
    }
