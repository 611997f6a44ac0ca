"""Each measured phase in a fresh Python process: its result, wall time and its own peak resident memory.

The parent starts ``python -m tools.benchmark.child <phase> <arguments.json> <result.json>``; the child adds its own
peak RSS to its result (``tools.bundle_runs.peak_rss_bytes``), so the peak of one phase never includes another's, nor
the parent's (``os.wait4``'s ``ru_maxrss`` would: a child inherits its parent's memory high-water mark).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common.io import atomic_write_json, read_json
from tools.bundle_runs import peak_rss_bytes

__all__ = ["ChildFailedError", "run_child"]

logger = logging.getLogger("tools.benchmark.children")

REPO_ROOT = Path(__file__).resolve().parents[2]


class ChildFailedError(RuntimeError):
    """A phase's process ended without a result (error, or killed at its time limit)."""


def run_child(
    phase: str, arguments: dict[str, Any], folder: Path, timeout_s: float | None = None, threads: int | None = None
) -> dict[str, Any]:
    """Run ``phase`` with ``arguments`` in a child process; its result plus ``seconds`` and ``peak_rss_mb``.

    ``folder`` receives the arguments, the result and the child's log (``<phase>.log``). A child still running after
    ``timeout_s`` is killed and ``ChildFailedError`` raised, as for a non-zero exit. ``threads``: the child's
    OpenMP/MKL threads (torch's intra-op threads); None keeps torch's default (one per core).
    """
    folder.mkdir(parents=True, exist_ok=True)
    args_file, result_file, log_file = (folder / f"{phase}.{s}" for s in ("args.json", "result.json", "log"))
    atomic_write_json(args_file, arguments)
    result_file.unlink(missing_ok=True)
    command = [sys.executable, "-m", "tools.benchmark.child", phase, str(args_file), str(result_file)]
    start = time.perf_counter()
    with open(log_file, "w") as log:
        env = dict(os.environ)
        if threads is not None:
            env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            status = process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise ChildFailedError(
                f"phase {phase} passed its time limit of {timeout_s:.0f} s (log: {log_file})"
            ) from None
    seconds = time.perf_counter() - start
    if status != 0 or not result_file.is_file():
        tail = log_file.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        raise ChildFailedError(f"phase {phase} failed with exit status {status}: {tail[0]} (log: {log_file})")
    return {**read_json(result_file, f"{phase} result"), "seconds": seconds}


def child_main(phases: dict[str, Any]) -> None:
    """Entry of a child process: ``<phase> <arguments.json> <result.json>``; adds the process's ``peak_rss_mb``."""
    phase, args_file, result_file = sys.argv[1:4]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    result = {**phases[phase](**read_json(args_file, "arguments")), "peak_rss_mb": peak_rss_bytes() / 2**20}
    atomic_write_json(result_file, json.loads(json.dumps(result)))
