"""Atomic file writing and checked JSON reading shared by the whole collection.

Every output is written to a temporary name in its destination folder and renamed into place with ``os.replace``,
so a crash or an error never leaves a half-written file where a complete one is expected.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "PNG_EXTENSIONS",
    "SUPPORTED_EXTENSIONS",
    "atomic_output",
    "atomic_output_dir",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "read_json",
    "split_extension",
]


#: Image file extensions the collection reads and writes (lower case; ``.nii.gz`` is one extension).
SUPPORTED_EXTENSIONS: tuple[str, ...] = (
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".tif",
    ".tiff",
    ".nii",
    ".nii.gz",
    ".nrrd",
    ".mha",
    ".dcm",
)
#: Of those, the 2D formats of ordinary pictures (written as PNG).
PNG_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def split_extension(name: str) -> tuple[str, str]:
    """Split a file name into stem and supported extension (lower case, ``.nii.gz`` whole); ``""`` if unsupported."""
    lower = name.lower()
    for extension in sorted(SUPPORTED_EXTENSIONS, key=len, reverse=True):
        if lower.endswith(extension) and len(name) > len(extension):
            return name[: -len(extension)], extension
    return name, ""


def _temp_sibling(path: Path) -> Path:
    """Return an unused hidden name beside ``path`` that ends with ``path``'s name, so its extension is kept."""
    return path.parent / f".tmp-{secrets.token_hex(4)}-{path.name}"


def _remove(path: Path) -> None:
    """Remove a file or folder if it exists, ignoring a concurrent removal."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _check_parent(path: Path) -> None:
    """Raise a clear error when the folder meant to hold ``path`` does not exist."""
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {path.parent} does not exist")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file name beside ``path`` that is renamed onto ``path`` when the block succeeds.

    For writers that want a file name (PIL, nibabel): the temporary name ends with the target's name, so writers
    that pick the format from the extension (``.png``, ``.nii.gz``) still do. On any error the temporary file is
    removed and ``path`` is left untouched. An existing ``path`` is replaced; callers decide whether that is allowed.
    """
    path = Path(path)
    _check_parent(path)
    tmp = _temp_sibling(path)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"the writer did not create the temporary file {tmp} for {path}")
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


@contextlib.contextmanager
def atomic_output_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``path`` that is renamed to ``path`` when the block succeeds.

    A folder that is being filled therefore never appears complete under its final name. ``path`` must not exist
    (an empty folder is allowed and replaced); otherwise ``FileExistsError``. On error the temporary folder is removed.
    """
    path = Path(path)
    _check_parent(path)
    tmp = _temp_sibling(path)
    tmp.mkdir()
    try:
        yield tmp
        try:
            os.replace(tmp, path)
        except OSError as err:
            if err.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                raise FileExistsError(f"{path} already exists and is not an empty folder") from err
            raise
    except BaseException:
        _remove(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` whole: readers see either the old file or the complete new one."""
    with atomic_output(path) as tmp, open(tmp, "xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` whole."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` whole; a value JSON cannot hold raises before anything is written."""
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def read_json(path: str | os.PathLike, what: str) -> Any:
    """Read a JSON file, raising an error that names ``what`` the file is and where, instead of a bare parser error.

    Raises:
        FileNotFoundError: ``path`` does not exist or is not a file.
        ValueError: ``path`` is not valid UTF-8 JSON.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{what} file {path} is not valid JSON: {err}") from err
