"""Running a bundle's configs from a benchmark: one workflow, its wall time per epoch and in total.

Benchmarks run the bundles exactly as users do (the same configs, with overrides for data, sizes and output folders)
so the numbers they report are the bundles' own, not a re-implementation's. A training can be given a wall-clock
budget instead of a number of epochs (``StopAtDeadline``); a benchmark run in a child process reports its own peak
memory (``peak_rss_bytes``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events
from monai.bundle import ConfigWorkflow

__all__ = ["StopAtDeadline", "bundle_workflow", "epoch_times", "peak_rss_bytes", "timed_run"]

logger = logging.getLogger("tools.bundle_runs")


class StopAtDeadline:
    """Ends an engine's run before its wall time would pass ``seconds``, within an epoch if need be.

    The clock starts when the handler is attached (attach it just before running the engine). After every iteration,
    when the time so far plus the longest iteration and the longest epoch-end so far would pass ``seconds``, the
    epoch is ended early (``engine.terminate_epoch()``): its ``EPOCH_COMPLETED`` handlers (validation, checkpoints)
    still run, on the weights trained so far, and the run is then terminated. An epoch-end is timed from the last
    iteration to this handler's check, which is attached after the engine's own handlers, so their work counts in the
    budget; an epoch end not yet seen (the first validation) cannot be reserved and may overrun it. A run whose
    epochs are longer than another's is thus stopped at the same wall time, not at the end of an
    epoch. At least one iteration always runs; the ``COMPLETED`` handlers (final checkpoint) run after the
    termination as after a full run. The engine's ``max_epochs`` still caps the run; schedules sized by
    ``max_epochs`` see that number, not the number of epochs that fit.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start = self.last_tick = 0.0
        self.longest_iteration = self.longest_epoch_end = 0.0
        self.out_of_time = False

    def attach(self, engine: Engine) -> None:
        """Start the clock and check the budget after every iteration and at every epoch end of ``engine``."""
        self.start = self.last_tick = time.perf_counter()
        self.longest_iteration = self.longest_epoch_end = 0.0
        self.out_of_time = False
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    def _would_pass(self, now: float) -> bool:
        return now - self.start + self.longest_iteration + self.longest_epoch_end > self.seconds

    def iteration_completed(self, engine: Engine) -> None:
        """End the epoch early when another iteration and an epoch end would not fit."""
        now = time.perf_counter()
        self.longest_iteration = max(self.longest_iteration, now - self.last_tick)
        self.last_tick = now
        if self._would_pass(now):
            self.out_of_time = True
            engine.terminate_epoch()

    def epoch_completed(self, engine: Engine) -> None:
        """Terminate the run after an epoch ended early, or when nothing more would fit."""
        now = time.perf_counter()
        self.longest_epoch_end = max(self.longest_epoch_end, now - self.last_tick)
        self.last_tick = now
        if self.out_of_time or self._would_pass(now):
            logger.info(
                "budget of %.0f s reached in epoch %d, iteration %d (%.0f s)",
                self.seconds,
                engine.state.epoch,
                engine.state.iteration,
                now - self.start,
            )
            engine.terminate()


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


def timed_run(
    bundle: Path,
    configs: Sequence[str],
    trainer_id: str = "train#trainer",
    seconds: float | None = None,
    **overrides: Any,
) -> dict:
    """Run a training workflow and return its wall times, epochs and iterations.

    ``seconds``: a wall-clock budget for the trainer (``StopAtDeadline``); its ``max_epochs`` override still caps it.
    """
    start = time.perf_counter()
    workflow = bundle_workflow(bundle, configs, **overrides)
    trainer = workflow.parser.get_parsed_content(trainer_id)
    setup = time.perf_counter() - start
    times = epoch_times(trainer)
    if seconds is not None:
        StopAtDeadline(seconds).attach(trainer)
    workflow.run()
    workflow.finalize()
    return {
        "seconds": time.perf_counter() - start,
        "setup_seconds": setup,
        "epoch_seconds": times,
        "epochs": trainer.state.epoch,
        "iterations": trainer.state.iteration,
    }


def peak_rss_bytes() -> int:
    """This process's own peak resident memory (Linux ``VmHWM``: the high-water mark of its address space since it
    started, so nothing of a parent process or of other children counts; worker processes are not included).

    ``os.wait4``'s ``ru_maxrss`` is no substitute: a child started with fork or vfork takes over its parent's memory
    high-water mark at ``exec`` (with Python's default vfork, the parent's own peak), and ``RUSAGE_CHILDREN`` is the
    maximum over every finished child.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB (KiB) in /proc
    raise RuntimeError("no VmHWM in /proc/self/status (peak memory is measured on Linux only)")
