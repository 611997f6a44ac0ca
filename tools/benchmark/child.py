"""Entry of the benchmark's child processes: ``python -m tools.benchmark.child <phase> <args.json> <result.json>``."""

from __future__ import annotations

from tools.benchmark import quality, speed
from tools.benchmark.children import child_main

PHASES = {
    "pretrain": speed.pretrain,
    "train": speed.train_speed,
    "step": speed.step_levers,
    "compile": speed.compile_step,
    "pixel_features": speed.pixel_features,
    "infer": speed.infer_speed,
    "quality": quality.quality,
}

if __name__ == "__main__":
    child_main(PHASES)
