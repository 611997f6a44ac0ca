"""Package a bundle as a model-zoo-style zip that runs without this repository, and fetch one with checks.

``pack`` writes ``<name>_v<version>.zip`` (a single top folder ``<name>/``: configs, docs, LICENSE, the weights, a
``large_files.yml`` with each weight's sha256, and the ``common`` package the configs import, so that the bundle
root on ``sys.path`` is all it needs) plus ``<zip>.sha256``. The zip is reproducible: the same files give the same
bytes, so its checksum identifies its contents. ``fetch`` downloads a zip, refuses it unless its sha256 matches,
extracts it with MONAI's path checks, and verifies every weight; ``verify`` checks an extracted bundle's weights.

Examples (from the repository root)::

    python -m tools.package_bundle pack --bundle bundles/postdae_mask_refinement --output_dir dist
    python -m tools.package_bundle fetch --url https://host/postdae_mask_refinement_v0.1.0.zip \
        --sha256 <hex> --bundle_dir ~/bundles
    python -m tools.package_bundle verify --bundle ~/bundles/postdae_mask_refinement

The weights are also checked each time a bundle loads them (``common.bundle.verify_weights``), so a weight that
changed after packaging is refused at run time too.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import fire
import yaml
from monai.apps.utils import download_url, extractall

import common
from common.bundle import LARGE_FILES, file_sha256, verify_weights

__all__ = ["fetch", "main", "pack", "verify"]

logger = logging.getLogger("tools.package_bundle")

REPO_ROOT = Path(__file__).resolve().parents[1]
COMMON_DIR = Path(common.__file__).resolve().parent
_BUNDLE_PARTS = ("configs", "docs", "LICENSE")
_SKIPPED_SUFFIXES = (".pyc",)
_ZIP_DATE = (2020, 1, 1, 0, 0, 0)  # fixed entry dates: the same files give the same zip


def _metadata(bundle: Path) -> dict:
    meta_file = bundle / "configs" / "metadata.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"{bundle} is not a bundle: it has no configs/metadata.json.")
    meta = json.loads(meta_file.read_text())
    version = meta.get("version")
    if not version or version not in meta.get("changelog", {}):
        raise ValueError(f"{meta_file}: 'version' ({version!r}) needs an entry in 'changelog' before packaging.")
    wanted = meta.get("required_packages_version", {}).get("monai-genseg-common")
    if wanted != common.__version__:
        raise ValueError(
            f"{meta_file}: required_packages_version['monai-genseg-common'] is {wanted!r} but the common package "
            f"carried into the zip is {common.__version__}; update the metadata (and its changelog)."
        )
    return meta


def _default_weights(bundle: Path) -> list[Path]:
    """Every file in ``models/`` except interval checkpoints (optimiser states) and temporary files."""
    models = bundle / "models"
    files = sorted(p for p in models.glob("*") if p.is_file()) if models.is_dir() else []
    return [p for p in files if not p.name.startswith(("checkpoint_", ".tmp-", "."))]


def _files_under(folder: Path) -> Iterable[Path]:
    for path in sorted(folder.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in _SKIPPED_SUFFIXES:
            yield path


def _write(archive: zipfile.ZipFile, source: Path | None, name: str, data: bytes | None = None) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    archive.writestr(info, data if data is not None else source.read_bytes())


def pack(
    bundle: str,
    output_dir: str = "dist",
    weights: Sequence[str] | None = None,
    weights_url: str = "",
) -> str:
    """Write ``<output_dir>/<name>_v<version>.zip`` and its ``.sha256``; return the zip's path.

    Args:
        bundle: the bundle folder.
        output_dir: where the zip goes (created; an existing zip of the same version is an error).
        weights: weight files relative to the bundle (default: every file in ``models/`` except interval
            checkpoints). A bundle with no weights is an error: a packaged bundle must run.
        weights_url: where the weights will also be hosted (a base URL); written into ``large_files.yml`` so that
            ``python -m monai.bundle download_large_files`` can fetch them again.
    """
    root = Path(bundle).resolve()
    meta = _metadata(root)
    name, version = root.name, meta["version"]
    if isinstance(weights, str):  # one --weights value on the command line arrives as a string
        weights = [weights]
    files = [(root / w).resolve() for w in weights] if weights else _default_weights(root)
    outside = [str(f) for f in files if not f.is_relative_to(root)]
    if outside:
        raise ValueError(f"--weights must be files inside the bundle {root}, got {outside}.")
    missing = [str(f) for f in files if not f.is_file()]
    if missing or not files:
        raise FileNotFoundError(
            f"{root}: weights {missing or 'models/*'} not found; train the bundle first (its docs/README.md) or "
            "pass --weights with files relative to the bundle."
        )
    target = Path(output_dir).resolve() / f"{name}_v{version}.zip"
    if target.exists():
        raise FileExistsError(f"{target} exists; remove it or raise the bundle's version (and changelog) first.")
    manifest = {
        "large_files": [
            {
                "path": f.relative_to(root).as_posix(),
                **({"url": f"{weights_url.rstrip('/')}/{f.relative_to(root).as_posix()}"} if weights_url else {}),
                "hash_val": file_sha256(f),
                "hash_type": "sha256",
            }
            for f in files
        ]
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".tmp-", suffix=".zip", delete=False) as tmp:
        tmp_path = Path(tmp.name)
    try:
        with zipfile.ZipFile(tmp_path, "w") as archive:
            for part in _BUNDLE_PARTS:
                source = root / part
                for path in [source] if source.is_file() else _files_under(source):
                    _write(archive, path, f"{name}/{path.relative_to(root).as_posix()}")
            for path in files:
                _write(archive, path, f"{name}/{path.relative_to(root).as_posix()}")
            _write(archive, None, f"{name}/{LARGE_FILES}", yaml.safe_dump(manifest, sort_keys=False).encode())
            for path in _files_under(COMMON_DIR):
                _write(archive, path, f"{name}/common/{path.relative_to(COMMON_DIR).as_posix()}")
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)
    digest = file_sha256(target)
    Path(f"{target}.sha256").write_text(f"{digest}  {target.name}\n")
    logger.info("wrote %s (sha256 %s, %d weight files)", target, digest, len(files))
    return str(target)


def verify(bundle: str) -> int:
    """Check every weight listed in the bundle's ``large_files.yml``; return how many were checked.

    Raises:
        FileNotFoundError: no manifest, or a listed weight is missing.
        ValueError: a weight's sha256 differs from the manifest's.
    """
    root = Path(bundle).resolve()
    manifest = root / LARGE_FILES
    if not manifest.is_file():
        raise FileNotFoundError(f"{root} has no {LARGE_FILES}: it was not packaged by tools/package_bundle.py.")
    entries = (yaml.safe_load(manifest.read_text()) or {}).get("large_files", [])
    for entry in entries:
        path = root / str(entry.get("path", ""))
        if not path.is_file():
            raise FileNotFoundError(f"{path} is listed in {manifest} but missing; download the bundle again.")
        verify_weights(path)
    return len(entries)


def fetch(url: str, sha256: str, bundle_dir: str, name: str = "") -> str:
    """Download a bundle zip, refuse it unless its sha256 is ``sha256``, extract it, verify its weights.

    Args:
        url: the zip's address (http(s) or file).
        sha256: the expected sha256 of the zip (from its publisher's ``.sha256`` file).
        bundle_dir: the folder the bundle goes into, as ``<bundle_dir>/<name>``; an existing one is an error.
        name: the bundle's name (default: the zip's file name up to ``_v<version>``).

    Returns the extracted bundle's folder.
    """
    if len(str(sha256)) != 64 or any(c not in "0123456789abcdef" for c in str(sha256).lower()):
        raise ValueError(f"--sha256 must be 64 hexadecimal digits, got {sha256!r}.")
    name = name or os.path.basename(url).rsplit("_v", 1)[0].removesuffix(".zip")
    destination = Path(bundle_dir).resolve()
    if (destination / name).exists():
        raise FileExistsError(f"{destination / name} exists; remove it or choose another --bundle_dir.")
    destination.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=destination, prefix=".tmp-") as tmp:
        archive = Path(tmp) / f"{name}.zip"
        try:
            download_url(url=url, filepath=archive, hash_val=str(sha256).lower(), hash_type="sha256", progress=False)
        except (OSError, RuntimeError, ValueError) as err:  # unreachable URL (URLError), hash mismatch
            actual = f" (its sha256 is {file_sha256(archive)})" if archive.is_file() else ""
            raise ValueError(f"refused {url}{actual}: {err}") from err
        with zipfile.ZipFile(archive) as contents:
            tops = {n.split("/", 1)[0] for n in contents.namelist()}
        if tops != {name}:
            raise ValueError(f"refused {url}: expected one top folder '{name}/' in the zip, found {sorted(tops)}.")
        try:
            extractall(filepath=archive, output_dir=tmp, has_base=True)
        except ValueError as err:
            raise ValueError(f"refused {url}: {err}") from err
        verify(str(Path(tmp) / name))
        os.replace(Path(tmp) / name, destination / name)
    logger.info("bundle %s from %s verified and extracted to %s", name, url, destination / name)
    return str(destination / name)


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point: logs at INFO and turns bad input into a one-line error and exit status 1."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    try:
        fire.Fire({"pack": pack, "fetch": fetch, "verify": verify}, command=argv, name="package_bundle")
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        logger.error("%s", err)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
