"""Smoke test of the Post-DAE benchmark command on synthetic masks (the real data is not needed)."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from common.data.synthetic import lung_mask
from tools.benchmark_postdae import recipes


def test_recipes_runs_every_recipe_and_writes_results(tmp_path):
    (tmp_path / "data" / "masks").mkdir(parents=True)
    for seed in range(8):
        Image.fromarray(((lung_mask(64, seed) > 0) * 255).astype(np.uint8)).save(
            tmp_path / "data" / "masks" / f"{seed}.png"
        )
    results = recipes(data_dir=str(tmp_path / "data"), work_dir=str(tmp_path / "out"), iterations=2, size=32)
    assert len(results["rows"]) == 5
    for row in results["rows"]:
        assert 0.0 <= row["refined_dice"] <= 1.0 and 0.5 < row["raw_dice"] <= 1.0
    assert json.loads((tmp_path / "out" / "results.json").read_text()) == results
    assert "ReLU decoder, Dice+BCE" in (tmp_path / "out" / "results.md").read_text()
