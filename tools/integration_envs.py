"""Create the separate virtual environments that MONAI Label and MONAI Deploy need.

MONAI Label 0.8.5 pins numpy < 2 and pydicom 2 (through pydicom-seg), and the MONAI Deploy App SDK pulls Holoscan and
needs pydicom and highdicom, so neither can share the main environment. Each lives in ``.venvs/<name>`` (or under
``--root``), built from ``requirements-<name>.txt`` with PyTorch pinned first (a bare ``torch`` pulls the newest CUDA
build), plus this repository's ``common`` installed editable so the environment runs the current code.

Examples (from the repository root)::

    python -m tools.integration_envs create monailabel
    python -m tools.integration_envs create all
    python -m tools.integration_envs python deploy      # prints the environment's interpreter
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
import venv
from dataclasses import dataclass
from pathlib import Path

import fire

__all__ = ["ENVIRONMENTS", "REPO_ROOT", "EnvironmentSpec", "create", "env_python", "envs_root", "main"]

logger = logging.getLogger("tools.integration_envs")

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class EnvironmentSpec:
    """What goes into one environment besides ``requirements-<name>.txt``.

    ``torch``: installed first, exactly pinned. ``no_deps``: installed last with ``--no-deps``, for a package whose own
    dependency list cannot be installed here (the requirements file lists what it really needs).
    """

    torch: tuple[str, ...]
    no_deps: tuple[str, ...] = ()


ENVIRONMENTS: dict[str, EnvironmentSpec] = {
    # PyPI's torchvision builds link the CUDA PyTorch libraries and fail to import beside the 2.13.0 CPU wheel
    # ("operator torchvision::nms does not exist"); MONAI Label imports torchvision at start-up, so this environment
    # takes the matching CUDA pair (it runs on the CPU). MONAI Label's own dependency list asks for sam2, an sdist
    # whose build downloads another CUDA PyTorch, and for an unpinned torchvision: hence --no-deps.
    "monailabel": EnvironmentSpec(torch=("torch==2.14.1", "torchvision==0.29.1"), no_deps=("monailabel==0.8.5",)),
    "deploy": EnvironmentSpec(torch=("torch==2.13.0",)),
}
_STAMP = ".genseg-env.json"


def envs_root(root: str | os.PathLike | None = None) -> Path:
    """Where the environments live: ``root``, else ``$GENSEG_ENVS``, else ``<repository>/.venvs``."""
    return Path(root or os.environ.get("GENSEG_ENVS") or REPO_ROOT / ".venvs").resolve()


def env_python(name: str, root: str | os.PathLike | None = None) -> Path:
    """The interpreter of environment ``name`` (it may not exist yet)."""
    _check_name(name)
    return envs_root(root) / name / "bin" / "python"


def _check_name(name: str) -> None:
    if name not in ENVIRONMENTS:
        raise ValueError(f"unknown environment {name!r}: expected one of {sorted(ENVIRONMENTS)} (or 'all').")


def _requirements(name: str) -> Path:
    return REPO_ROOT / f"requirements-{name}.txt"


def _fingerprint(name: str) -> str:
    text = _requirements(name).read_text() + json.dumps([ENVIRONMENTS[name].torch, ENVIRONMENTS[name].no_deps])
    return hashlib.sha256(text.encode()).hexdigest()


def _pip(python: Path, *args: str) -> None:
    command = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--quiet", *args]
    logger.info("%s", " ".join(command))
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"'{' '.join(command)}' failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")


def _create_one(name: str, root: Path, force: bool) -> dict:
    target = root / name
    stamp = target / _STAMP
    fingerprint = _fingerprint(name)
    if not force and stamp.is_file() and json.loads(stamp.read_text()).get("fingerprint") == fingerprint:
        logger.info("environment %s is up to date in %s", name, target)
        return {"name": name, "path": str(target), "seconds": 0.0, "created": False}
    start = time.perf_counter()
    venv.EnvBuilder(clear=True, with_pip=True).create(target)
    python = target / "bin" / "python"
    spec = ENVIRONMENTS[name]
    _pip(python, *spec.torch)
    _pip(python, "-r", str(_requirements(name)))
    if spec.no_deps:
        _pip(python, "--no-deps", *spec.no_deps)
    _pip(python, "--no-deps", "-e", str(REPO_ROOT))
    seconds = time.perf_counter() - start
    stamp.write_text(json.dumps({"fingerprint": fingerprint, "install_seconds": round(seconds, 1)}))
    logger.info("environment %s created in %s in %.0f s", name, target, seconds)
    return {"name": name, "path": str(target), "seconds": round(seconds, 1), "created": True}


def create(name: str = "all", root: str | None = None, force: bool = False) -> list[dict]:
    """Create environment ``name`` (``monailabel``, ``deploy`` or ``all``); a no-op where it is up to date.

    Returns one record per environment: its path, install seconds and whether it was (re)built.
    """
    names = sorted(ENVIRONMENTS) if name == "all" else [name]
    for n in names:
        _check_name(n)
    folder = envs_root(root)
    folder.mkdir(parents=True, exist_ok=True)
    return [_create_one(n, folder, bool(force)) for n in names]


def main() -> None:
    """Command-line entry point: an unknown environment or a failed install is a short error with exit status 1."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    try:
        fire.Fire({"create": create, "python": lambda name, root=None: str(env_python(name, root))})
    except (ValueError, RuntimeError) as err:
        logger.error("%s", err)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
