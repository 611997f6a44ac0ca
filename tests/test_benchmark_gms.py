"""Smoke test of the GMS benchmark on synthetic polyp frames in the shared folders' layout (no real data needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tools.benchmark_gms as benchmark
from common.data.synthetic import polyp_frame
from tests.conftest import REPO_ROOT

WIDTHS = ("image_size", "channels", "channel_mults", "norm_groups", "cached_variants")
SPEC = json.loads((REPO_ROOT / "tests" / "bundle_overrides" / "gms_latent_segmentation.json").read_text())
TINY = {k: v for k, v in SPEC["train"].items() if k in WIDTHS or k.startswith("autoencoder_")}


@pytest.fixture
def frames(tmp_path: Path) -> Path:
    """20 polyp frames of 40x40 (images/, masks/ with the same names), two of them near-duplicates."""
    data = tmp_path / "data"
    for sub in ("images", "masks"):
        (data / sub).mkdir(parents=True)
    for i in range(20):
        image, mask = polyp_frame(40, rng=i if i != 1 else 0)
        pixels = np.round(image.transpose(1, 2, 0) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(data / "images" / f"case_{i:02d}.png")
        Image.fromarray(mask * 255).save(data / "masks" / f"case_{i:02d}.png")
    return data


def test_all_steps_compare_gms_with_the_unet_and_time_the_cache(frames: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(benchmark, "DATASETS", {"busi": frames})
    monkeypatch.setattr(benchmark, "SMALL_AUTOENCODER", TINY)
    work = tmp_path / "work"
    results = benchmark.all_steps(str(work), datasets=("busi",), autoencoder_epochs=1, gms_epochs=2)
    run = results["datasets"]["busi"]
    datalist = json.loads((work / "busi" / "datalist.json").read_text())
    assert run["split"] == {section: len(entries) for section, entries in datalist.items()}
    sections = [s for s, entries in datalist.items() for e in entries if e["image"].endswith(("_00.png", "_01.png"))]
    assert len(set(sections)) == 1, "near-duplicate frames 0 and 1 were split apart"
    assert run["train_gms"]["epochs"] == 2 and len(run["train_gms"]["epoch_seconds"]) == 2
    budget = run["train_autoencoder"]["seconds"] + run["train_gms"]["seconds"]
    unet_seconds = run["train_unet"]["seconds"]
    assert 0.5 * budget <= unet_seconds <= 1.5 * budget + 5, f"the UNet trained {unet_seconds:.1f} s of {budget:.1f} s"
    assert run["train_unet"]["iterations"] >= 1
    for name in ("gms", "unet", "autoencoder_mask_reconstruction"):
        scores = run["evaluate"][name]
        assert 0 <= scores["dice"] <= 1 and 0 <= scores["iou"] <= scores["dice"] + 1e-6
        assert scores["images"] == len(datalist["test"])
    assert run["evaluate"]["gms"]["trainable"] < run["evaluate"]["unet"]["trainable"]
    speed = results["cache_speed"]
    assert speed["paper_loss_speedup"]["factor"] > 0 and speed["latent_only_cache"]["epoch_seconds"] > 0
    assert (work / "busi" / "models" / "unet.pt").is_file() and (work / "busi" / "models" / "autoencoder.pt").is_file()
    assert not (benchmark.BUNDLE / "models" / "model.pt").exists(), "the benchmark wrote into the bundle"
    assert "| busi | GMS |" in (work / "results.md").read_text()
