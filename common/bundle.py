"""Helpers that bundle configs call: where the bundle is, and command-line values checked before use."""

from __future__ import annotations

import json
import os

__all__ = ["bool_list", "locate_bundle_root"]

_TRUE, _FALSE = ("true", "1"), ("false", "0")


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


def bool_list(values: list | tuple, key: str) -> list[bool]:
    """``values`` as booleans, for list-of-flag config keys overridden on the command line.

    ``--key "[false, true]"`` reaches a config as the strings ``'false'``, ``'true'`` (the command line parses Python,
    not JSON), and any non-empty string is true, which would silently switch every flag on. Accepted: booleans, 0/1 and
    the strings true/false/1/0 in any case; anything else is a ``ValueError`` naming ``key``.
    """
    if isinstance(values, str) or not isinstance(values, (list, tuple)):
        raise ValueError(f"{key} must be a list of booleans, got {values!r}.")
    flags = []
    for value in values:
        text = str(value).strip().lower()
        if isinstance(value, bool) or text in _TRUE + _FALSE:
            flags.append(value if isinstance(value, bool) else text in _TRUE)
        else:
            raise ValueError(f"{key} must be a list of booleans (true/false), got {values!r}.")
    return flags
