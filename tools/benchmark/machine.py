"""The machine: CPU flags that decide which levers exist, and the measured convolution ceiling (oneDNN)."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import time
from pathlib import Path

import torch

__all__ = ["CONV_SHAPES", "QUICK_CONV_SHAPES", "bf16_support", "conv_ceiling", "cpu_info"]

logger = logging.getLogger("tools.benchmark.machine")

#: (batch, in channels, out channels, size, kernel): large 2D convolutions of the kind the bundles' U-Nets run
CONV_SHAPES = ((8, 128, 128, 64, 3), (4, 256, 256, 32, 3), (16, 64, 64, 128, 3))
QUICK_CONV_SHAPES = ((2, 64, 64, 32, 3),)


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def bf16_support() -> dict[str, object]:
    """Whether the CPU has native bf16 (AVX512-BF16 or AMX): bf16 autocast is only measured where it does."""
    flags = _cpu_flags()
    found = sorted(f for f in flags if f in ("avx512_bf16", "amx_bf16", "amx_tile"))
    return {"available": bool(found), "flags": found}


def cpu_info() -> dict[str, object]:
    """CPU model, cores, torch threads and oneDNN availability."""
    model = ""
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")
    flags = _cpu_flags()
    return {
        "model": model or platform.processor(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "avx2": "avx2" in flags,
        "avx512f": "avx512f" in flags,
        "bf16": bf16_support(),
    }


def conv_ceiling(shapes: tuple[tuple[int, int, int, int, int], ...] = CONV_SHAPES, repeats: int = 5) -> dict:
    """Best FLOP/s of forward conv2d (oneDNN, float32, no grad) over ``shapes``: the machine's practical ceiling.

    FLOPs of a convolution: 2 x batch x out channels x output pixels x in channels x kernel area.
    """
    rows = []
    with torch.no_grad():
        for n, c_in, c_out, size, k in shapes:
            x = torch.randn(n, c_in, size, size)
            conv = torch.nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False)
            flops = 2 * n * c_out * size * size * c_in * k * k
            conv(x)  # warm-up: oneDNN picks its kernels
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                conv(x)
                best = min(best, time.perf_counter() - start)
            rows.append({"shape": [n, c_in, c_out, size, k], "gflop": flops / 1e9, "gflops_per_s": flops / best / 1e9})
    best_row = max(rows, key=lambda r: r["gflops_per_s"])
    logger.info("conv2d ceiling %.1f GFLOP/s at %s", best_row["gflops_per_s"], best_row["shape"])
    return {"gflops_per_s": best_row["gflops_per_s"], "shapes": rows}
