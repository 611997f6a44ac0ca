"""Smoke test of the SDF benchmark on synthetic nuclei tiles named like MoNuSeg's (the real data is not needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tools.benchmark_sdf as benchmark
from common.data.synthetic import nuclei_tile


@pytest.fixture
def tiles(tmp_path: Path) -> Path:
    """Two 32x32 tiles of each of 10 "patients", in the shared folder's layout (images/, masks/)."""
    data = tmp_path / "data"
    for sub in ("images", "masks"):
        (data / sub).mkdir(parents=True)
    for patient in range(10):
        for quadrant in ("q0", "q3"):
            image, mask = nuclei_tile(32, rng=patient * 2 + (quadrant == "q3"), num_nuclei=(2, 4))
            name = f"TCGA-A{patient}-00{patient:02d}-01Z-00-DX1_{quadrant}.png"
            Image.fromarray(np.round(image.transpose(1, 2, 0) * 255).astype(np.uint8)).save(data / "images" / name)
            Image.fromarray((mask > 0).astype(np.uint8) * 255).save(data / "masks" / name)
    return data


def test_all_steps_write_every_method_and_the_uncertainty_auroc(tiles: Path, tmp_path: Path, monkeypatch) -> None:
    tiny = {"dim": 8, "fusion_channels": 4, "channel_mults": [1, 2], "attention_heads": 1, "attention_head_channels": 8}
    monkeypatch.setattr(benchmark, "SMALL_NETWORK", tiny)
    monkeypatch.setattr(benchmark, "TRAINING", {**benchmark.TRAINING, "patch_size": [32, 32], "val_interval": 1})
    monkeypatch.setattr(benchmark, "ODE_STEPS", (2,))
    work = tmp_path / "work"
    results = benchmark.all_steps(str(tiles), str(work), epochs=1, num_samples=2, pc_steps=3)
    datalist = json.loads((work / "datalist.json").read_text())
    groups = {section: {e["group"] for e in entries} for section, entries in datalist.items()}
    assert not groups["test"] & groups["training"], "a patient in both training and test"
    evaluated = results["evaluate"]
    assert set(evaluated) == {"test_tiles", "ode_2", "pc_3", "ode_10_k2", "basic_unet"}
    assert evaluated["test_tiles"] == len(datalist["test"]) == 4
    assert evaluated["pc_3"]["nfe"] == 5 and evaluated["ode_2"]["nfe"] == 2
    for name in ("ode_2", "pc_3", "ode_10_k2", "basic_unet"):
        assert 0 <= evaluated[name]["dice"] <= 1 and evaluated[name]["seconds_per_tile"] > 0
    assert 0 <= evaluated["ode_10_k2"]["uncertainty_auroc"] <= 1
    assert json.loads((work / "results.json").read_text()) == json.loads(json.dumps(results))
    assert "| pc_3 | 5 |" in (work / "results.md").read_text()
