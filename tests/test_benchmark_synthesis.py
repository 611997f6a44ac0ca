"""Smoke test of the synthesis benchmark on synthetic polyp frames in Kvasir's layout (no real data needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tools.benchmark_synthesis as benchmark
from common.data.synthetic import polyp_frame
from tests.conftest import REPO_ROOT

SPEC = json.loads((REPO_ROOT / "tests" / "bundle_overrides" / "ct_label_to_image_synthesis.json").read_text())
SIZES = ("image_size", "generator_", "z_dim", "spade_hidden", "discriminator_", "wavelet_", "segmenter_", "bn_refresh")
TINY = {k: v for k, v in SPEC["train"].items() if k.startswith(SIZES)} | {"batch_size": 4, "ema_decay": 0.9}


@pytest.fixture
def frames(tmp_path: Path) -> Path:
    """20 polyp frames of 40x40 with their masks (images/, masks/ with the same names), Kvasir's layout."""
    data = tmp_path / "data"
    for sub in ("images", "masks"):
        (data / sub).mkdir(parents=True)
    for i in range(20):
        image, mask = polyp_frame(40, rng=i)
        Image.fromarray(np.round(image.transpose(1, 2, 0) * 255).astype(np.uint8)).save(
            data / "images" / f"f{i:02d}.png"
        )
        Image.fromarray(mask * 255).save(data / "masks" / f"f{i:02d}.png")
    return data


def test_all_steps_evaluate_and_compare_real_with_synthetic_pairs(frames: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(benchmark, "DATASETS", {"kvasir": frames})
    monkeypatch.setattr(benchmark, "CPU_SIZES", TINY)
    work = tmp_path / "work"
    results = benchmark.all_steps(
        str(work),
        kvasir_epochs=1,
        segmenter_epochs=1,
        downstream_iterations=4,
        datasets=("kvasir",),
        n_real=4,
        seeds=(0, 1),
    )
    run = results["datasets"]["kvasir"]
    assert run["split"] == {"training": 14, "validation": 2, "test": 4}
    metrics = run["evaluate"]["metrics"]
    assert {"val_ssim", "val_psnr", "val_rmse", "miou_synthetic", "miou_real", "domain_frechet"} <= set(metrics)
    assert 0 <= metrics["miou_synthetic"] <= 1 and 0 <= metrics["miou_real"] <= 1
    assert len(run["evaluate"]["contact_sheets"]) == 4
    down = results["downstream"]
    for seed in ("seed0", "seed1"):
        assert down[seed]["real"]["pairs"] == 4
        assert down[seed]["real_plus_synthetic"]["pairs"] == 14, "4 real pairs plus one image for each other mask"
    synthetic = list((work / "kvasir" / "downstream" / "synthetic_seed0").glob("*_synth_1.png"))
    assert len(synthetic) == 10 and Image.open(synthetic[0]).size == (40, 40)
    assert down["all_real"]["pairs"] == 14
    assert len(down["gain"]["per_seed"]) == 2
    table = (work / "results.md").read_text()
    assert "kvasir" in table and "Gain from synthetic pairs" in table
    assert not list(frames.rglob("*_synth_*")), "the benchmark wrote into the data folder"
