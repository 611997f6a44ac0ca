"""Serve the collection's segmentation bundles to 3D Slicer / OHIF through a MONAI Label server, offline.

MONAI Label 0.8.5 runs in its own environment (``python -m tools.integration_envs create monailabel``: it needs
numpy < 2 and pydicom 2). This tool copies its ``monaibundle`` sample app out of that environment, links (or copies)
the chosen bundles into ``<app>/model/<name>`` and starts ``monailabel start_server`` with the settings that work
without network access: ``zoo_source github`` (the default, ``monaihosting``, downloads the model-zoo index at start-up
even for a local bundle), ``sam2 false`` (SAM2 needs weights) and the bundle list as ``models``.

The server binds to 127.0.0.1 unless ``--host`` says otherwise: MONAI Label has no authentication by default and
serves the studies folder, so exposing it (``--host 0.0.0.0``) is a deliberate choice.

Examples (from the repository root)::

    python -m tools.monailabel_server start --studies ~/studies sdf_score_segmentation gms_latent_segmentation
    python -m tools.monailabel_server start --studies ~/studies --port 8001 --host 0.0.0.0 postdae_mask_refinement
    python -m tools.monailabel_server bundles          # the bundles that can be served
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import fire

from common.bundle import is_segmentation_bundle
from tools.integration_envs import REPO_ROOT, envs_root

__all__ = [
    "BUNDLES_DIR",
    "DEFAULT_HOST",
    "OFFLINE_CONF",
    "MonaiLabelServer",
    "check_bundle",
    "free_port",
    "main",
    "monailabel_env",
    "prepare_app",
    "running_server",
    "segmentation_bundles",
    "server_command",
    "start",
    "wait_until_ready",
]

BUNDLES_DIR = REPO_ROOT / "bundles"
DEFAULT_HOST = "127.0.0.1"
ENV_NAME = "monailabel"
#: ``--conf`` settings for a server without network access (see the module docstring).
OFFLINE_CONF: dict[str, str] = {"zoo_source": "github", "sam2": "false"}
_STAMP = ".genseg-env.json"


def monailabel_env(root: str | os.PathLike | None = None) -> Path:
    """The MONAI Label environment folder; ``FileNotFoundError`` saying how to create it when it is missing."""
    folder = envs_root(root) / ENV_NAME
    if not (folder / _STAMP).is_file() or not (folder / "bin" / "monailabel").is_file():
        raise FileNotFoundError(
            f"the MONAI Label environment is missing or unfinished in {folder}: create it with "
            f"'python -m tools.integration_envs create {ENV_NAME}' (from {REPO_ROOT}; about 4 minutes)."
        )
    return folder


def _sample_app(env: Path) -> Path:
    """The ``monaibundle`` sample app shipped inside the MONAI Label wheel (its data dir is the environment)."""
    app = env / "monailabel" / "sample-apps" / "monaibundle"
    if not (app / "main.py").is_file():
        raise FileNotFoundError(f"no monaibundle sample app in {app}: reinstall with --force")
    return app


def segmentation_bundles(bundles_dir: str | os.PathLike = BUNDLES_DIR) -> list[str]:
    """The bundles in ``bundles_dir`` that MONAI Label can serve (see :func:`is_segmentation_bundle`)."""
    folders = sorted(p.parent.parent for p in Path(bundles_dir).glob("*/configs/metadata.json"))
    return [f.name for f in folders if is_segmentation_bundle(f)]


def _resolve_bundle(bundle: str | os.PathLike) -> Path:
    """A bundle given by name (a folder of ``bundles/``) or by path."""
    path = Path(bundle)
    if not path.is_dir() and (BUNDLES_DIR / str(bundle)).is_dir():
        path = BUNDLES_DIR / str(bundle)
    if not (path / "configs" / "metadata.json").is_file():
        known = ", ".join(segmentation_bundles())
        raise ValueError(
            f"unknown bundle {str(bundle)!r}: not a bundle folder (no configs/metadata.json); known: {known}"
        )
    return path.resolve()


def check_bundle(bundle: str | os.PathLike) -> Path:
    """The folder of a bundle that MONAI Label can serve; ``ValueError``/``FileNotFoundError`` saying what is wrong."""
    path = _resolve_bundle(bundle)
    if not is_segmentation_bundle(path):
        raise ValueError(
            f"bundle '{path.name}' is not a segmentation bundle (its metadata task does not mention segmentation); "
            f"MONAI Label serves image-to-label models only. Servable: {', '.join(segmentation_bundles())}"
        )
    if not (path / "configs" / "inference.json").is_file():
        raise FileNotFoundError(f"bundle '{path.name}' has no configs/inference.json in {path}")
    model = path / "models" / "model.pt"
    if not model.is_file():
        raise FileNotFoundError(
            f"bundle '{path.name}' has no trained model {model}: train it first "
            f"(python -m monai.bundle run training --config_file {path}/configs/train.json --bundle_root {path})."
        )
    return path


def prepare_app(
    app_dir: str | os.PathLike, bundles: Sequence[str | os.PathLike], copy: bool = False, env_root: str | None = None
) -> Path:
    """Create the MONAI Label app folder ``app_dir`` serving ``bundles`` (names or paths); return ``app_dir``.

    The ``monaibundle`` sample app is copied from the environment (kept if already there) and each bundle is linked
    (``copy=False``; training from the viewer then writes into the bundle's ``models/``) or copied to
    ``<app_dir>/model/<name>``. Other entries of ``model/`` are left alone; the server serves only ``bundles``.
    """
    folders = [check_bundle(b) for b in bundles]
    if not folders:
        raise ValueError(f"no bundle to serve; servable: {', '.join(segmentation_bundles())}")
    names = [f.name for f in folders]
    if len(set(names)) != len(names):
        raise ValueError(f"two bundles with the same name: {names}")
    app = Path(app_dir).resolve()
    if not (app / "main.py").is_file():
        shutil.copytree(_sample_app(monailabel_env(env_root)), app, dirs_exist_ok=True)
    model_dir = app / "model"
    model_dir.mkdir(exist_ok=True)
    for folder in folders:
        target = model_dir / folder.name
        if target.is_dir() and not target.is_symlink():
            if copy:  # an earlier copy, perhaps retrained from the viewer: keep it
                continue
            raise FileExistsError(
                f"{target} is a copy of bundle '{folder.name}' (perhaps retrained from the viewer); "
                "pass --copy to keep serving it, or move it away to link the bundle instead."
            )
        if target.is_symlink() or target.exists():
            target.unlink()
        if copy:
            shutil.copytree(folder, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.symlink_to(folder, target_is_directory=True)
    return app


def server_command(
    app_dir: str | os.PathLike,
    studies: str | os.PathLike,
    models: Sequence[str],
    host: str = DEFAULT_HOST,
    port: int = 8000,
    env_root: str | None = None,
    conf: dict[str, str] | None = None,
) -> list[str]:
    """The ``monailabel start_server`` command line serving ``models`` (bundle names in ``<app_dir>/model``)."""
    env = monailabel_env(env_root)
    settings = {**OFFLINE_CONF, "models": ",".join(models), **(conf or {})}
    # ``python -m monailabel.main`` is what the ``monailabel`` script runs; that script passes ``$*`` unquoted, so
    # it breaks paths with spaces, and runs whichever ``python`` is first on PATH.
    command = [str(env / "bin" / "python"), "-m", "monailabel.main", "start_server"]
    command += ["--app", str(app_dir), "--studies", str(studies)]
    command += ["--host", host, "--port", str(port)]
    for key, value in settings.items():
        command += ["--conf", key, str(value)]
    return command


def server_environment(env_root: str | None = None) -> dict[str, str]:
    """The process environment of the server: the MONAI Label environment first on ``PATH`` (its ``monailabel``
    script runs ``python`` from ``PATH``), this repository on ``PYTHONPATH`` (bundles import ``common``) and the
    zoo source that never goes online."""
    env_bin = monailabel_env(env_root) / "bin"
    environ = dict(os.environ)
    environ.pop("VIRTUAL_ENV", None)
    environ["PATH"] = os.pathsep.join([str(env_bin), environ.get("PATH", "")])
    environ["MONAILABEL_PYEXE"] = str(env_bin / "python")
    environ["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO_ROOT), environ.get("PYTHONPATH", "")] if p)
    environ.setdefault("BUNDLE_DOWNLOAD_SRC", "github")
    return environ


def start(
    *bundles: str,
    studies: str,
    app: str | None = None,
    host: str = DEFAULT_HOST,
    port: int = 8000,
    copy: bool = False,
    env_root: str | None = None,
) -> int:
    """Start a MONAI Label server for ``bundles`` (default: every servable bundle) on ``studies``; runs until Ctrl-C.

    Args:
        bundles: bundle names (folders of ``bundles/``) or bundle folders, each with a trained ``models/model.pt``.
        studies: folder of images (NIfTI, PNG, ...) the viewer annotates; labels go to ``<studies>/labels``.
        app: app folder to create or reuse (default ``<studies>/.monailabel_app``).
        host: address to bind; 127.0.0.1 keeps the server local, 0.0.0.0 exposes it to the network (no auth).
        port: port to listen on.
        copy: copy the bundles into the app instead of linking them.
        env_root: where the integration environments live (default ``.venvs``).
    """
    names = list(bundles) or segmentation_bundles()
    studies_dir = Path(studies).expanduser().resolve()
    studies_dir.mkdir(parents=True, exist_ok=True)
    app_dir = prepare_app(Path(app) if app else studies_dir / ".monailabel_app", names, copy=copy, env_root=env_root)
    command = server_command(app_dir, studies_dir, [check_bundle(b).name for b in names], host, port, env_root)
    print(" ".join(command), flush=True)
    # subprocess.call kills the server when this process is interrupted; make SIGTERM an exception here too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    return subprocess.call(command, env=server_environment(env_root), cwd=app_dir)


def free_port(host: str = DEFAULT_HOST) -> int:
    """A TCP port free on ``host`` now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class MonaiLabelServer:
    """A server started by :func:`running_server`: its URL, process, app folder and log file."""

    url: str
    process: subprocess.Popen
    app_dir: Path
    log_path: Path

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server log."""
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.is_file() else ""


def wait_until_ready(server: MonaiLabelServer, timeout: float = 120.0) -> dict:
    """Poll ``<url>/info/`` until it answers (returns the JSON); ``RuntimeError`` with the log if the server exits
    or ``TimeoutError`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"MONAI Label exited with code {server.process.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"{server.url}/info/", timeout=5) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"MONAI Label did not answer {server.url}/info/ in {timeout:.0f} s:\n{server.log_tail()}"
            )
        time.sleep(0.5)


def _stop(process: subprocess.Popen, grace: float = 15.0) -> None:
    """Stop the server and everything it started (its own process group): SIGTERM, then SIGKILL after ``grace``."""
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def running_server(
    bundles: Sequence[str | os.PathLike],
    studies: str | os.PathLike,
    app_dir: str | os.PathLike,
    host: str = DEFAULT_HOST,
    port: int | None = None,
    startup_timeout: float = 180.0,
    copy: bool = False,
    env_root: str | None = None,
    conf: dict[str, str] | None = None,
) -> Iterator[MonaiLabelServer]:
    """Start a MONAI Label server for ``bundles`` (on a free port by default), wait until ``/info/`` answers, yield
    it, and always stop it (with every process it started) on exit, also on errors."""
    names = [check_bundle(b).name for b in bundles]
    app = prepare_app(app_dir, bundles, copy=copy, env_root=env_root)
    port = port or free_port(host)
    command = server_command(app, studies, names, host, port, env_root, conf)
    log_path = app / "server.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command,
            cwd=app,
            env=server_environment(env_root),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = MonaiLabelServer(f"http://{host}:{port}", process, app, log_path)
    try:
        wait_until_ready(server, startup_timeout)
        yield server
    finally:
        _stop(process)


def main() -> None:
    fire.Fire({"start": start, "bundles": segmentation_bundles})


if __name__ == "__main__":
    sys.exit(main())
