"""MONAI Label serves the segmentation bundles: a real ``monailabel start_server`` on 127.0.0.1, offline.

Every bundle whose metadata ``task`` mentions segmentation (``common.bundle.is_segmentation_bundle``) gets
the inference test by existing. Each is trained tiny (a copy, ``tests/bundle_overrides``) and its copy's
``inference.json`` is given the same tiny sizes (MONAI Label cannot pass overrides), one server serves them all on a
free port with a temporary studies folder holding one synthetic sample image per bundle, and each bundle must return
a non-trivial mask with the image's spatial shape. Then one short training request runs from the server.

The server runs in the MONAI Label environment (``python -m tools.integration_envs create monailabel``); without it
these tests skip, unless ``GENSEG_REQUIRE_INTEGRATION=1`` makes them fail.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import shutil
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from common.data.synthetic import write_synthetic_dataset
from tests.conftest import BUNDLES_DIR, overrides_of, train_tiny
from tools.monailabel_server import (
    MonaiLabelServer,
    check_bundle,
    monailabel_env,
    running_server,
    segmentation_bundles,
)

pytestmark = pytest.mark.slow

BUNDLES = segmentation_bundles()
TRAIN_BUNDLE = "postdae_mask_refinement"
# Extra training overrides per bundle, on top of tests/bundle_overrides. The tiny runs already give a non-trivial mask
# on the sample (foreground fraction, 2 CPU cores: SDF 0.52, GMS 0.33, BraTS 0.12 with labels 1 and 3, Post-DAE 0.73);
# BraTS needs one classifier epoch only (about 30 s instead of 70-110 s with two). A bundle whose tiny model returns
# an empty or full mask gets more training here.
EXTRA_TRAINING: dict[str, dict] = {"brats_mri_ddpm_fewshot_segmentation": {"max_epochs": 1}}
REQUEST_TIMEOUT = 120.0


def require_env() -> Path:
    """The MONAI Label environment, or skip (fail with ``GENSEG_REQUIRE_INTEGRATION=1``) saying how to create it."""
    try:
        return monailabel_env()
    except FileNotFoundError as error:
        if os.environ.get("GENSEG_REQUIRE_INTEGRATION") == "1":
            pytest.fail(f"GENSEG_REQUIRE_INTEGRATION=1 but {error}")
        pytest.skip(str(error))


def tiny_configs(bundle: Path) -> None:
    """Write the tiny sizes the copy was trained with into its ``inference.json`` and ``train.json`` (top-level keys
    each already has): MONAI Label runs a bundle's configs as they are, without overrides."""
    tiny = overrides_of(bundle.name)["train"]
    for name in ("inference.json", "train.json"):
        path = bundle / "configs" / name
        config = json.loads(path.read_text())
        config.update({k: v for k, v in tiny.items() if k in config})
        path.write_text(json.dumps(config, indent=4))


def sample_images(bundle: Path, studies: Path, num: int = 1) -> list[str]:
    """Put ``num`` synthetic samples of the bundle's domain into ``studies``; return their image ids.

    The sample is the bundle's own ``synthetic_kind`` at its training size; a mask-only kind (Post-DAE's lung masks)
    puts the mask in as the image. Each sample's label goes to ``studies/<bundle>_truth`` for the training test.
    """
    config = json.loads((bundle / "configs" / "inference.json").read_text())
    kind, size = config["synthetic_kind"], overrides_of(bundle.name)["train"].get("synthetic_size")
    data = write_synthetic_dataset(kind, studies.parent / f"synthetic_{bundle.name}", num=num, size=size)
    entries = [e for section in ("training", "validation", "test") for e in data.get(section, [])][:num]
    ids = []
    for i, entry in enumerate(entries):
        source = studies.parent / f"synthetic_{bundle.name}" / entry.get("image", entry["label"])
        suffix = ".nii.gz" if source.name.endswith(".nii.gz") else source.suffix
        image_id = f"{bundle.name}_{i}"
        shutil.copy(source, studies / f"{image_id}{suffix}")
        truth = studies.parent / f"{bundle.name}_truth"
        truth.mkdir(exist_ok=True)
        shutil.copy(studies.parent / f"synthetic_{bundle.name}" / entry["label"], truth / f"{image_id}{suffix}")
        ids.append(image_id)
    return ids


def read_image(data: bytes, suffix: str) -> np.ndarray:
    """A PNG or NIfTI file's array, spatial axes first (PNG as rows, columns)."""
    if suffix == ".png":
        return np.asarray(Image.open(io.BytesIO(data)))
    raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    return np.asarray(nib.Nifti1Image.from_bytes(raw).dataobj)


def request(method: str, url: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    """An HTTP request to the local server; the status and body (also of an error answer)."""
    assert url.startswith("http://127.0.0.1:"), url
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def multipart(field: str, path: Path) -> tuple[bytes, dict]:
    """A ``multipart/form-data`` body holding one file."""
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{path.name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    body = head + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MonaiLabelServer, dict, dict, Path]]:
    """One server for all segmentation bundles, trained tiny; yields (server, {bundle: image ids}, errors, folder).

    A bundle whose training fails is left out of the server and its error reported by its own test.
    """
    require_env()
    root = tmp_path_factory.mktemp("monailabel")
    studies = root / "studies"
    studies.mkdir()
    trained, images, errors = [], {}, {}
    for name in BUNDLES:
        bundle = root / "bundles" / name
        shutil.copytree(
            BUNDLES_DIR / name, bundle, ignore=shutil.ignore_patterns("eval", "*.pt", "*.ts", "__pycache__")
        )
        (bundle / "models").mkdir(exist_ok=True)
        try:
            start = time.perf_counter()
            train_tiny(bundle, **EXTRA_TRAINING.get(name, {}))
            print(f"{name}: trained in {time.perf_counter() - start:.1f} s")
            tiny_configs(bundle)
            images[name] = sample_images(bundle, studies, num=2 if name == TRAIN_BUNDLE else 1)
            trained.append(bundle)
        except Exception as error:  # reported by the bundle's own test
            errors[name] = error
    if not trained:
        pytest.fail(f"no bundle trained: {errors}")
    for name, array in BAD_STUDIES.items():
        nib.save(nib.Nifti1Image(array, np.eye(4)), str(studies / f"{name}.nii.gz"))
    start = time.perf_counter()
    with running_server(trained, studies, root / "app") as server:
        print(f"server ready in {time.perf_counter() - start:.1f} s")
        yield server, images, errors, root


@pytest.mark.parametrize("name", BUNDLES)
def test_infer(served: tuple, name: str) -> None:
    server, images, errors, root = served
    if name in errors:
        raise errors[name]
    image_id = images[name][0]
    image_path = next((root / "studies").glob(f"{image_id}.*"))
    status, body = request("POST", f"{server.url}/infer/{name}?image={image_id}&output=image")
    assert status == 200, f"{name}: HTTP {status}: {body[:2000]!r}\n{server.log_tail()}"
    suffix = ".png" if image_path.suffix == ".png" else ".nii.gz"
    mask = read_image(body, suffix)
    image = read_image(image_path.read_bytes(), suffix)
    spatial = image.shape[:2]
    assert mask.shape[:2] == spatial and mask.ndim <= 3, f"{name}: mask {mask.shape}, image {image.shape}"
    values = np.unique(mask)
    assert values.size > 1, f"{name}: trivial mask (all {values}) for {image_id}"
    foreground = float(np.mean(mask > 0))
    assert 0.0 < foreground < 1.0, f"{name}: foreground fraction {foreground}"


#: Bad studies, written into the studies folder before the server starts: (image id, bundle, expected message).
_NAN = np.full((48, 48), 100.0, np.float32)
_NAN[5, 5] = np.nan
BAD_STUDIES = {"bad_nan": _NAN, "bad_volume": np.zeros((48, 48, 6), np.float32)}
BAD_REQUESTS = [
    ("bad_nan", "gms_latent_segmentation", "NaN or infinite value"),
    ("bad_volume", "sdf_score_segmentation", "3 spatial dimensions, expected 2"),
]


@pytest.mark.parametrize(("image_id", "name", "expected"), BAD_REQUESTS, ids=[r[0] for r in BAD_REQUESTS])
def test_infer_refuses_bad_images_with_the_bundles_message(
    served: tuple, image_id: str, name: str, expected: str
) -> None:
    """MONAI Label runs the bundle's own preprocessing: its checks answer an HTTP error and log the message."""
    server, _, errors, _ = served
    if name in errors:
        raise errors[name]
    status, _ = request("POST", f"{server.url}/infer/{name}?image={image_id}&output=image")
    assert status >= 400, f"{name} accepted {image_id}: HTTP {status}"
    deadline = time.monotonic() + 30  # the server logs the traceback after it has answered
    while expected not in server.log_tail(50000) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert expected in server.log_tail(50000), server.log_tail()
    assert f"{image_id}.nii.gz" in server.log_tail(50000), "the message names the file"


def test_train_from_server(served: tuple) -> None:
    server, images, errors, root = served
    if TRAIN_BUNDLE in errors:
        raise errors[TRAIN_BUNDLE]
    for image_id in images[TRAIN_BUNDLE]:
        label = next((root / f"{TRAIN_BUNDLE}_truth").glob(f"{image_id}.*"))
        body, headers = multipart("label", label)
        status, answer = request("PUT", f"{server.url}/datastore/label?image={image_id}&tag=final", body, headers)
        assert status == 200, f"HTTP {status}: {answer[:2000]!r}"
    checkpoint = root / "bundles" / TRAIN_BUNDLE / "models" / "model.pt"
    before = checkpoint.stat().st_mtime
    settings = {"max_epochs": 1, "val_split": 0.5, "device": "cpu", "multi_gpu": False}
    status, answer = request(
        "POST",
        f"{server.url}/train/{TRAIN_BUNDLE}?run_sync=true",
        json.dumps(settings).encode(),
        {"Content-Type": "application/json"},
    )
    assert status == 200, f"HTTP {status}: {answer[:2000]!r}\n{server.log_tail()}"
    assert "Training Finished" in server.log_tail(20000), server.log_tail()
    assert checkpoint.stat().st_mtime > before, "training from the server wrote no new models/model.pt"


# The tool's refusals: fast, no server and no MONAI Label environment needed.


def test_segmentation_bundles_are_detected_from_metadata() -> None:
    assert "ct_label_to_image_synthesis" not in BUNDLES
    assert {"sdf_score_segmentation", "postdae_mask_refinement"} <= set(BUNDLES)


@pytest.mark.parametrize(
    ("bundle", "message"),
    [
        ("no_such_bundle", "unknown bundle 'no_such_bundle'"),
        ("ct_label_to_image_synthesis", "not a segmentation bundle"),
    ],
)
def test_refuses_unservable_bundles(bundle: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_bundle(bundle)


def test_refuses_a_bundle_without_a_model(tmp_path: Path) -> None:
    bundle = tmp_path / "sdf_score_segmentation"
    shutil.copytree(BUNDLES_DIR / bundle.name / "configs", bundle / "configs")
    with pytest.raises(FileNotFoundError, match=r"no trained model .*models/model\.pt"):
        check_bundle(bundle)


def test_missing_environment_says_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape("python -m tools.integration_envs create monailabel")):
        monailabel_env(tmp_path)
