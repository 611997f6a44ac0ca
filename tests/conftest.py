"""Shared fixtures: the repository layout and the bundles under test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
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


def overrides_of(name: str) -> dict:
    """A bundle's tiny test sizes, ``tests/bundle_overrides/<name>.json``."""
    path = REPO_ROOT / "tests" / "bundle_overrides" / f"{name}.json"
    assert path.is_file(), f"bundle '{name}' has no tiny test sizes: add {path.relative_to(REPO_ROOT)}"
    return json.loads(path.read_text())


def configs(bundle: Path, *names: str) -> list[str]:
    return [str(bundle / "configs" / n) for n in names]


def cli_args(overrides: dict) -> list[str]:
    """Config overrides as ``monai.bundle`` command-line arguments."""
    return [f"--{k}={json.dumps(v)}" if not isinstance(v, str) else f"--{k}={v}" for k, v in overrides.items()]


def run_bundle_cli(
    bundle: Path, config_names: list[str], overrides: dict, launcher: list[str] | None = None, timeout: int = 900
) -> str:
    """Run ``monai.bundle run training`` on ``bundle``'s configs (merged in order); return its output.

    ``launcher`` replaces ``python -m`` (e.g. torchrun's ``python -m torch.distributed.run ... -m``).
    """
    config_files = configs(bundle, *config_names)
    cmd = [
        *(launcher or [sys.executable, "-m"]),
        "monai.bundle",
        "run",
        "training",
        "--config_file",
        config_files[0] if len(config_files) == 1 else json.dumps(config_files),
        "--bundle_root",
        str(bundle),
        *cli_args(overrides),
    ]
    # a crash in native code (an abort, a segfault) then prints every thread's Python stack to stderr
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    result = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-8000:]
    return result.stdout + result.stderr


def pretrain_tiny(bundle: Path) -> None:
    """Train what ``bundle``'s training needs first (GMS: its autoencoder), if anything, with the tiny sizes."""
    spec = overrides_of(bundle.name)
    if "pretrain" in spec:
        run_bundle_cli(bundle, spec["pretrain"]["configs"], {**spec["train"], **spec["pretrain"]["args"]})


def train_tiny(bundle: Path, **extra: object) -> Path:
    """Train ``bundle`` (a copy) with its tiny sizes, plus ``extra`` overrides, through the model-zoo command line."""
    pretrain_tiny(bundle)
    output = run_bundle_cli(bundle, ["train.json"], {**overrides_of(bundle.name)["train"], **extra})
    assert "synthetic" in output, "an empty dataset_dir must say that it uses synthetic data"
    return bundle


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
