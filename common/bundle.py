"""Helpers that bundle configs call: where the bundle is, and command-line values checked before use."""

from __future__ import annotations

import json
import os

__all__ = ["as_bool", "bool_list", "locate_bundle_root"]

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


def as_bool(value: object, key: str) -> bool:
    """``value`` as a boolean, for flag config keys overridden on the command line.

    ``--key false`` reaches a config as the string ``'false'`` (the command line parses Python, where ``False`` is
    the literal), and any non-empty string is true, which would silently switch the flag on. Accepted: booleans, 0/1
    and the strings true/false/1/0 in any case; anything else is a ``ValueError`` naming ``key``.
    """
    text = str(value).strip().lower()
    if isinstance(value, bool):
        return value
    if text in _TRUE + _FALSE:
        return text in _TRUE
    raise ValueError(f"{key} must be a boolean (true/false), got {value!r}.")


def bool_list(values: list | tuple, key: str) -> list[bool]:
    """``values`` as booleans (see :func:`as_bool`), for list-of-flag config keys overridden on the command line.

    ``--key "[false, true]"`` reaches a config as the strings ``'false'``, ``'true'``.
    """
    if isinstance(values, str) or not isinstance(values, (list, tuple)):
        raise ValueError(f"{key} must be a list of booleans, got {values!r}.")
    try:
        return [as_bool(value, key) for value in values]
    except ValueError:
        raise ValueError(f"{key} must be a list of booleans (true/false), got {values!r}.") from None
