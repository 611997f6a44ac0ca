"""Shared fixtures: the repository layout and the bundles under test."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from monai.bundle import ConfigWorkflow
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLES_DIR = REPO_ROOT / "bundles"
SCHEMA_FILE = REPO_ROOT / "common" / "resources" / "bundle_metadata_schema.json"


def bundle_names() -> list[str]:
    """Every folder in ``bundles/`` with a ``configs/metadata.json``: a new bundle gets the bundle tests by existing."""
    return sorted(p.parent.parent.name for p in BUNDLES_DIR.glob("*/configs/metadata.json"))


@pytest.fixture(scope="module")
def bundle_copy(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the bundle's shipped files in a temporary folder, so test runs never write into the repository."""
    name = request.param
    target = tmp_path_factory.mktemp("bundle") / name
    shutil.copytree(
        BUNDLES_DIR / name, target, ignore=shutil.ignore_patterns("eval", "*.pt", "*.ts", "*.onnx", "__pycache__")
    )
    os.makedirs(target / "models", exist_ok=True)
    return target


def error_text(error: BaseException | None) -> str:
    """The messages of an exception and of everything it was raised from (MONAI wraps config errors)."""
    parts = []
    while error is not None:
        parts.append(str(error))
        error = error.__cause__ or error.__context__
    return "\n".join(parts)


def bundle_workflow(
    bundle: Path, bundle_root: Path, config: str | list[str], workflow_type: str, **overrides: object
) -> ConfigWorkflow:
    """An initialised workflow of ``bundle``'s ``config`` (a name, or names merged in order; no logging config)."""
    names = [config] if isinstance(config, str) else config
    wf = ConfigWorkflow(
        config_file=[str(bundle / "configs" / name) for name in names],
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type=workflow_type,
        bundle_root=str(bundle_root),
        **overrides,
    )
    wf.initialize()
    return wf


def write_pairs(folder: Path, pairs: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, str]:
    """Write image/mask PNG pairs and a datalist using every pair in every section; return the config overrides."""
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for name, (image, mask) in pairs.items():
        Image.fromarray(image).save(folder / "images" / name)
        Image.fromarray(mask).save(folder / "masks" / name)
    entries = [{"image": f"images/{n}", "label": f"masks/{n}"} for n in pairs]
    (folder / "datalist.json").write_text(json.dumps({"training": entries, "validation": entries, "test": entries}))
    return {"dataset_dir": str(folder), "datalist": str(folder / "datalist.json")}
