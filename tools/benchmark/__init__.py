"""One benchmark of every bundle: quality beside a BasicUNet, speed, memory and efficiency.

``python -m tools.benchmark [--out_dir results/benchmark] [--data_root ../shared/data] [--budget_s 300]
[--bundles sdf_score_segmentation,gms_latent_segmentation] [--quick] [--overwrite] [--compile False]``

For each bundle, each phase in its own process (``children``), so the peak RSS of one phase is its own:

1. speed at the bundle's default size on its synthetic sample data (``speed``): training throughput and the share
   of each iteration spent waiting for data; FLOPs of one training step (``torch.utils.flop_counter``) over its time,
   against the conv2d ceiling measured at the start (``machine``), and its profile (time by kind of operation); the
   levers channels_last, bf16 autocast (only with AVX512-BF16/AMX) and torch.compile as time ratios; inference
   latency per image and NFE; peak RSS of training, inference and, for the DDPM bundle, pixel-feature training.
2. quality on a seeded test split of the real data (``quality``, through the per-bundle ``tools.benchmark_*``
   modules) beside a BasicUNet trained for the same wall time on the same split, and the published number where the
   paper's is known (``paper``); the SDF bundle's Dice against NFE for its samplers.

Writes ``results.json``, ``results.md`` and ``dice_vs_nfe.png``, ``throughput.png``, ``memory.png`` in
``--out_dir`` (the work files under ``work/``). ``--quick`` runs the same on tiny networks and synthetic folders in
the real data's layouts, in a few minutes; its numbers mean nothing.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import fire

__all__ = ["main"]

logger = logging.getLogger("tools.benchmark")


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point: bad input ends with a one-line error naming the option and exit status 1."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    from tools.benchmark.pipeline import benchmark

    try:
        fire.Fire(benchmark, command=argv, name="benchmark", serialize=lambda _: None)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        logger.error("%s", err)
        raise SystemExit(1) from None
