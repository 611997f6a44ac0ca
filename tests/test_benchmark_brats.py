"""Smoke test of the BraTS few-shot benchmark on synthetic grey frames in BUSI's layout (no real data needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tools.benchmark_brats as benchmark
import tools.benchmark_gms as benchmark_gms
from common.data.synthetic import polyp_frame

TINY_DDPM = {
    "ddpm_channels": [8, 8, 16],
    "ddpm_attention_levels": [False, True, False],
    "ddpm_res_blocks": 1,
    "ddpm_head_channels": 8,
    "ddpm_norm_groups": 4,
    "baseline_filters": [8, 16, 32],
}
TINY_FEATURES = {"feature_blocks": [2, 3], "feature_timesteps": [50, 200]}


@pytest.fixture
def frames(tmp_path: Path) -> Path:
    """24 grey 40x40 frames with binary 0/255 masks (images/, masks/ with the same names), as BUSI is stored."""
    data = tmp_path / "data"
    for sub in ("images", "masks"):
        (data / sub).mkdir(parents=True)
    for i in range(24):
        image, mask = polyp_frame(40, rng=i)
        Image.fromarray(np.round(image.mean(axis=0) * 255).astype(np.uint8)).save(data / "images" / f"f_{i:02d}.png")
        Image.fromarray(mask * 255).save(data / "masks" / f"f_{i:02d}.png")
    return data


def test_all_steps_compare_the_three_methods_and_measure_memory(frames: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(benchmark_gms, "DATASETS", {"busi": frames})
    monkeypatch.setattr(benchmark, "SMALL_DDPM", TINY_DDPM)
    monkeypatch.setattr(benchmark, "FEATURES", TINY_FEATURES)
    monkeypatch.setattr(benchmark, "IMAGE_SIZE", [32, 32])
    monkeypatch.setattr(benchmark, "PIXEL_TRAINING", {"max_epochs": 2, "ensemble_size": 2})
    monkeypatch.setattr(benchmark, "MEMORY_DDPM", {**TINY_DDPM, "feature_blocks": [1, 2, 3], "feature_timesteps": [5]})
    monkeypatch.setattr(benchmark, "MEMORY_RUN", {"images": 6, "size": 32})
    monkeypatch.setattr(benchmark, "SYNTHETIC_RUN", {"cases": 8, "shape": (32, 32, 32), "epochs": 1})
    work = tmp_path / "work"
    results = benchmark.all_steps(str(work), shots=(4,), pretrain_epochs=1, epochs=2)

    datalist = json.loads((work / "busi" / "datalist_n4.json").read_text())
    assert len(datalist["training"]) == 4 and len(datalist["unlabelled"]) == 24
    assert all("label" not in item for item in datalist["unlabelled"]), "the DDPM must never see a label"
    assert results["pretrain"]["epochs"] == 1
    for method in benchmark.METHODS:
        scores = results["evaluate"][f"n4_{method}"]
        assert 0 <= scores["dice"] <= 1 and scores["images"] <= len(datalist["test"])
        assert scores["trainable"] > 0
    assert results["fewshot"]["n4_denoiser"]["epochs"] == 2 and results["fewshot"]["n4_pixel"]["epochs"] == 2
    memory = results["memory"]
    assert memory["pixels"] == 6 * 32 * 32 and memory["features_per_pixel"] == 16 + 8 + 8
    assert 0 < memory["peak_rss_gb"] < 8
    synthetic = results["synthetic"]
    assert set(synthetic["dice"]) == {"WT", "TC", "ET"} and synthetic["splits"]["training"] == 10
    assert not (benchmark.BUNDLE / "models" / "model.pt").exists(), "the benchmark wrote into the bundle"
    report = (work / "results.md").read_text()
    assert "| 4 | DynUNet |" in report and "peak RSS" in report and "Synthetic BraTS-layout" in report
