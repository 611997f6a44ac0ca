"""Helpers that bundle configs call to find where they are."""

from __future__ import annotations

import json
import os

__all__ = ["locate_bundle_root"]


def _bundle_name(folder: str) -> str | None:
    meta = os.path.join(folder, "configs", "metadata.json")
    if not os.path.isfile(meta):
        return None
    return os.path.basename(os.path.abspath(folder))


def locate_bundle_root(name: str) -> str:
    """Return the folder of bundle ``name`` seen from the working directory.

    A bundle is run from its own folder (model-zoo habit), from the folder holding it (a downloaded bundle), or from the
    repository root (``bundles/<name>``); the first of those that holds ``configs/metadata.json`` wins, so the same
    config works in all three places. Pass ``--bundle_root`` to run it from anywhere else.
    """
    candidates = [".", name, os.path.join("bundles", name)]
    for folder in candidates:
        if _bundle_name(folder) == name:
            return os.path.abspath(folder)
    raise FileNotFoundError(
        f"cannot find bundle '{name}' from {os.getcwd()}: looked for configs/metadata.json in "
        f"{json.dumps(candidates)}; run from the repository root or the bundle folder, or pass --bundle_root <folder>."
    )
