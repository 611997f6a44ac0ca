"""The benchmark run: checks the options, measures the machine, then each bundle's phases in child processes."""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from common.io import atomic_write_json
from tools.benchmark import report
from tools.benchmark.children import ChildFailedError, run_child
from tools.benchmark.machine import CONV_SHAPES, QUICK_CONV_SHAPES, conv_ceiling, cpu_info
from tools.benchmark.paper import PAPER
from tools.benchmark.quality import DATA_FOLDERS
from tools.benchmark.specs import BUNDLES, REPO_ROOT
from tools.benchmark.synthetic_data import write_quick_data

__all__ = ["DEFAULT_DATA_ROOT", "DEFAULT_OUT_DIR", "GOALS", "benchmark"]

logger = logging.getLogger("tools.benchmark")

DEFAULT_OUT_DIR = REPO_ROOT / "results" / "benchmark"
DEFAULT_DATA_ROOT = REPO_ROOT.parent / "shared" / "data"
#: efficiency goals: achieved FLOP/s of a training step over the conv2d ceiling; data wait over the step cycle
GOALS = {"ceiling_fraction": 0.5, "data_wait_fraction": 0.1}
#: timed training iterations after one warm-up, and repeats of each timed step (full / quick)
ITERATIONS = {False: 4, True: 3}
REPEATS = {False: 3, True: 2}
#: ... but fewer (at least one timed) once they take longer than this, for the slow default-size steps
TIMING_S = {False: 90.0, True: 30.0}
#: quick mode's training budget per bundle (every trainer still runs one epoch)
QUICK_BUDGET_S = 2.0
#: a torch.compile measurement still running after this is stopped and reported as such
COMPILE_TIMEOUT_S = 1200.0


def _bundle_names(bundles: str | Sequence[str] | None) -> list[str]:
    if bundles is None or bundles == "":
        return list(BUNDLES)
    names = [b.strip() for b in bundles.split(",")] if isinstance(bundles, str) else [str(b) for b in bundles]
    unknown = [n for n in names if n not in BUNDLES]
    if unknown or not names:
        raise ValueError(f"--bundles: unknown bundle(s) {unknown}; choose from {', '.join(BUNDLES)}")
    return list(dict.fromkeys(names))


def _budget(budget_s: Any) -> float:
    if isinstance(budget_s, bool) or not isinstance(budget_s, int | float) or not math.isfinite(budget_s):
        raise ValueError(f"--budget_s must be a positive number of seconds, got {budget_s!r}")
    if budget_s <= 0:
        raise ValueError(f"--budget_s must be a positive number of seconds, got {budget_s!r}")
    return float(budget_s)


def _threads(threads: Any) -> int | None:
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"--threads must be a positive whole number, got {threads!r}")
    return threads


def _data_root(data_root: str, names: list[str]) -> Path:
    root = Path(data_root).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"--data_root: folder {root} does not exist (quick mode, --quick, needs no data)")
    missing = sorted({DATA_FOLDERS[n] for n in names if not (root / DATA_FOLDERS[n]).is_dir()})
    if missing:
        raise FileNotFoundError(f"--data_root: {root} lacks the data set folder(s) {missing}")
    return root


def _out_dir(out_dir: str, overwrite: bool) -> Path:
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out_dir: {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"--out_dir: folder {out} exists and is not empty; pass --overwrite to replace it")
        if out in (REPO_ROOT, *REPO_ROOT.parents) or (out / ".git").exists() or out == Path.home():
            raise ValueError(f"--out_dir: refusing to clear {out} (it holds the repository or a home folder)")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _phase(results: dict, key: str, phase: str, arguments: dict, folder: Path, timeout: float | None = None) -> dict:
    """Run one phase; a failure is recorded under ``results[key]`` as ``{"error": ...}`` and the run goes on."""
    try:
        outcome = run_child(phase, arguments, folder, timeout, results["threads"])
    except ChildFailedError as err:
        logger.error("%s", err)
        outcome = {"error": str(err)}
    results.setdefault("phase_seconds", {})[phase] = outcome.get("seconds")
    results[key] = outcome
    return outcome


def _run_bundle(
    name: str,
    work: Path,
    data_root: Path,
    quick: bool,
    budget: float,
    compile_: bool | str,
    ceiling: float,
    threads: int | None,
) -> dict:
    """Every phase of one bundle, each in its own process, in order (training writes what inference loads).

    ``compile_``: True to measure torch.compile, else why it is not measured.
    """
    spec = BUNDLES[name]
    logs, speed_work = work / "logs", work / "speed"
    raw: dict[str, Any] = {"ceiling_gflops_per_s": ceiling, "threads": threads}
    base = {"name": name, "work": str(speed_work), "quick": quick}
    if spec.pretrain is not None:
        _phase(raw, "pretrain", "pretrain", base, logs)
    timing = {"repeats": REPEATS[quick], "max_seconds": TIMING_S[quick]}
    _phase(raw, "train", "train", {**base, "iterations": ITERATIONS[quick] + 1, "max_seconds": TIMING_S[quick]}, logs)
    _phase(raw, "step", "step", {**base, **timing, "levers": ["channels_last", "bf16"]}, logs)
    if compile_ is True:
        _phase(raw, "compile", "compile", {**base, **timing}, logs, COMPILE_TIMEOUT_S)
    else:
        raw["compile_status"] = f"not measured ({compile_})"
    if spec.pixel_features:
        _phase(raw, "pixel_features", "pixel_features", base, logs)
    _phase(raw, "infer", "infer", base, logs)
    quality_args = {"name": name, "work": str(work / "quality"), "data_root": str(data_root), "quick": quick}
    _phase(raw, "quality", "quality", {**quality_args, "budget_s": budget}, logs)
    return _assemble(name, raw)


def _assemble(name: str, raw: dict) -> dict:
    """The bundle's section of results.json from its phases' outputs."""
    train, step, infer = raw["train"], raw["step"], raw["infer"]
    memory = {"train_peak_rss_mb": train.get("peak_rss_mb"), "inference_peak_rss_mb": infer.get("peak_rss_mb")}
    if "pixel_features" in raw:
        memory["pixel_features_peak_rss_mb"] = raw["pixel_features"].get("peak_rss_mb")
        memory["pixel_features"] = raw["pixel_features"]
    efficiency: dict[str, Any] = {}
    if "error" in step or "error" in train:
        efficiency["error"] = step.get("error") or train.get("error")
    else:
        ceiling = raw["ceiling_gflops_per_s"]
        fraction = step["achieved_gflops_per_s"] / ceiling
        levers = {**step["levers"], "compile": raw.get("compile", {"status": raw.get("compile_status")})}
        efficiency = {
            "flops_per_step": step["flops_per_step"],
            "plain_step_seconds": step["plain_step_seconds"],
            "achieved_gflops_per_s": step["achieved_gflops_per_s"],
            "ceiling_gflops_per_s": ceiling,
            "ceiling_fraction": fraction,
            "ceiling_goal_met": fraction >= GOALS["ceiling_fraction"],
            "data_wait_fraction": train["data_wait_fraction"],
            "data_wait_goal_met": train["data_wait_fraction"] < GOALS["data_wait_fraction"],
            "profile": step["profile"],
            "levers": levers,
        }
    return {
        "quality": raw["quality"],
        "speed": {"train": train, "inference": infer},
        "memory": memory,
        "efficiency": efficiency,
        "paper": PAPER[name],
        "phase_seconds": raw.get("phase_seconds", {}),
    }


def benchmark(
    out_dir: str = str(DEFAULT_OUT_DIR),
    data_root: str = str(DEFAULT_DATA_ROOT),
    quick: bool = False,
    budget_s: float = 300.0,
    bundles: str | Sequence[str] | None = None,
    overwrite: bool = False,
    compile: bool = True,
    threads: int | None = None,
) -> dict:
    """Quality, speed, memory and efficiency of each bundle; results.json, results.md and PNGs in ``out_dir``.

    Args:
        out_dir: results folder (refused when it exists and is not empty, unless ``overwrite``).
        data_root: folder holding the real data sets (full mode only).
        quick: tiny networks and synthetic data, a few minutes; the numbers mean nothing.
        budget_s: training wall-clock seconds per bundle (full mode; the BasicUNet gets what the bundle took).
        bundles: comma-separated subset of the bundles (default: all).
        overwrite: replace a non-empty ``out_dir``.
        compile: measure torch.compile (in quick mode for the first bundle only).
        threads: torch threads of every phase and of the ceiling (default: one per core; quick mode: 1, so that a
            busy machine does not stall OpenMP's spinning threads).
    """
    start = time.perf_counter()
    names = _bundle_names(bundles)
    budget = _budget(budget_s)
    threads = _threads(1 if threads is None and quick else threads)
    root = None if quick else _data_root(data_root, names)
    out = _out_dir(out_dir, overwrite)
    work = out / "work"
    if quick:
        root = write_quick_data(work / "quick_data")
        budget = min(budget, QUICK_BUDGET_S)
    assert root is not None
    if threads is not None:
        torch.set_num_threads(threads)
    results: dict[str, Any] = {
        "quick": quick,
        "threads": threads,
        "budget_s": budget,
        "data_root": str(root),
        "goals": GOALS,
        "machine": {"cpu": cpu_info()},
        "bundles": {},
    }
    results["machine"]["conv_ceiling"] = conv_ceiling(QUICK_CONV_SHAPES if quick else CONV_SHAPES)
    for index, name in enumerate(names):
        logger.info("benchmarking %s (%d of %d)", name, index + 1, len(names))
        measure_compile: bool | str = True
        if not compile:
            measure_compile = "--compile False"
        elif quick and index > 0:
            measure_compile = "quick mode measures it for the first bundle only"
        ceiling = results["machine"]["conv_ceiling"]["gflops_per_s"]
        results["bundles"][name] = _run_bundle(
            name, work / name, root, quick, budget, measure_compile, ceiling, threads
        )
        results["seconds"] = time.perf_counter() - start
        atomic_write_json(out / "results.json", results)
    results["seconds"] = time.perf_counter() - start
    results["plots"] = report.write_plots(results, out)
    atomic_write_json(out / "results.json", results)
    report.write_markdown(results, out)
    logger.info("results in %s (%.0f s)", out, results["seconds"])
    return results
