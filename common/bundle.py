"""Helpers that bundle configs call: where the bundle is, command-line values checked before use, weight checksums."""

from __future__ import annotations

import hashlib
import json
import os
import re

import yaml

__all__ = [
    "LARGE_FILES",
    "as_bool",
    "bool_list",
    "file_sha256",
    "is_segmentation_bundle",
    "locate_bundle_root",
    "verify_weights",
]

#: The model-zoo manifest of a packaged bundle's weights (path, sha256, optional url), at the bundle's root.
LARGE_FILES = "large_files.yml"

_TRUE, _FALSE = ("true", "1"), ("false", "0")


def _bundle_name(folder: str) -> str | None:
    meta = os.path.join(folder, "configs", "metadata.json")
    if not os.path.isfile(meta):
        return None
    return os.path.basename(os.path.abspath(folder))


def is_segmentation_bundle(folder: str | os.PathLike) -> bool:
    """Whether the bundle in ``folder`` segments images: its metadata ``task`` mentions segmentation.

    The tools that serve or apply bundles to images (MONAI Label, MONAI Deploy, folder segmentation) take only these;
    a synthesis bundle (label map in, image out) is refused. A folder without metadata is not a bundle: False.
    """
    meta = os.path.join(folder, "configs", "metadata.json")
    if not os.path.isfile(meta):
        return False
    with open(meta) as f:
        task = str(json.load(f).get("task", ""))
    return re.search(r"\bsegment", task, re.IGNORECASE) is not None


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


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _owning_bundle(path: str) -> str | None:
    """The nearest folder above ``path`` that holds ``configs/metadata.json`` (at most three levels up)."""
    folder = os.path.dirname(os.path.abspath(path))
    for _ in range(3):
        if _bundle_name(folder) is not None:
            return folder
        folder = os.path.dirname(folder)
    return None


def verify_weights(path: str | os.PathLike) -> None:
    """Refuse a weight file whose sha256 differs from the one its bundle's ``large_files.yml`` lists for it.

    A packaged bundle (``tools/package_bundle.py``) records the sha256 of every weight file it carries; a file that
    changed since (corrupted, truncated or replaced) is an error that names it, rather than weights loaded silently.
    A bundle without the manifest (a development checkout), or a file the manifest does not list, is not checked.

    Raises:
        ValueError: the manifest is unreadable, or lists ``path`` with another sha256.
    """
    root = _owning_bundle(str(path))
    manifest = os.path.join(root, LARGE_FILES) if root else ""
    if not root or not os.path.isfile(manifest):
        return
    try:
        with open(manifest) as f:
            entries = (yaml.safe_load(f) or {}).get("large_files", [])
    except (yaml.YAMLError, AttributeError) as err:
        raise ValueError(f"{manifest}: not a readable large_files manifest ({err}).") from err
    relative = os.path.relpath(os.path.abspath(path), root)
    for entry in entries:
        if os.path.normpath(str(entry.get("path", ""))) != relative:
            continue
        hash_type = str(entry.get("hash_type", "sha256")).lower()
        if hash_type != "sha256":
            raise ValueError(f"{manifest}: entry {relative} has hash_type {hash_type!r}; expected sha256.")
        actual = file_sha256(path)
        if actual != str(entry.get("hash_val", "")).lower():
            raise ValueError(
                f"weights '{path}' do not match {manifest}: sha256 {actual}, expected {entry.get('hash_val')}. "
                "The file changed after the bundle was packaged (corrupted, truncated or replaced); download the "
                "bundle again. If you retrained it yourself, remove this entry from the manifest or repackage."
            )
        return
