"""The MONAI Deploy application (``tools.deploy_app``): a DICOM series through a bundle to a DICOM SEG, end to end.

The bundle is GMS (``gms_latent_segmentation``): the collection's segmenter that maps a grey or RGB image to a mask in
one pass, the kind a clinical pipeline deploys (SDF samples iteratively, BraTS needs four MR contrasts, PostDAE refines
masks rather than segment images; tiny SDF and PostDAE models did not learn the disks in a minute either). A tiny copy
is trained here on bright disks, the same kind of object as the one in the synthetic DICOM series, so the test can ask
that the DICOM SEG overlaps the object.

The SDK, pydicom and highdicom live in the Deploy environment (``python -m tools.integration_envs create deploy``), so
the series is written, the app run and the SEG read by that environment's interpreter, in subprocesses; without it the
end-to-end test is skipped, or fails when ``GENSEG_REQUIRE_INTEGRATION=1``. The bundle checks of
``tools.deploy_app.segmenter`` need only MONAI and run here.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import BUNDLES_DIR, REPO_ROOT, overrides_of, run_bundle_cli, write_pairs
from tools.deploy_app.segmenter import BundleSegmenter, find_bundle, segment_labels
from tools.integration_envs import env_python

BUNDLE = "gms_latent_segmentation"
#: Beyond the tiny test sizes: enough training to segment a bright disk, validating only at the end.
TRAIN_EXTRA = {"max_epochs": 30, "val_interval": 30, "warmup_epochs": 2}
PRETRAIN_EXTRA = {"autoencoder_epochs": 10, "autoencoder_val_interval": 10}
SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
#: The tiny model under-segments (its mask lies inside the object, about half of it): Dice was 0.64, precision 0.96.
MIN_DICE, MIN_PRECISION = 0.5, 0.8
_STACK_BYTES = 32 * 1024 * 1024  # Holoscan asks for a 32 MiB stack (ulimit -s 32768)


def _disk_image(
    rng: np.random.Generator, shape: tuple[int, ...], center: np.ndarray, radii: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A bright ellipse(oid) on a noisy dark background in 8-bit range, and its 0/1 mask; training and DICOM alike."""
    grids = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    mask = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, center, radii, strict=True)) <= 1
    image = np.clip(40 + 10 * rng.standard_normal(shape) + 160 * mask, 0, 255)
    return image, mask.astype(np.uint8)


@pytest.fixture(scope="module")
def deploy_python() -> Path:
    """The Deploy environment's interpreter; the test is skipped without it (failed with GENSEG_REQUIRE_INTEGRATION)."""
    python = env_python("deploy")
    if not (python.parents[1] / ".genseg-env.json").is_file():
        message = (
            f"the MONAI Deploy environment is missing ({python.parents[1]}): create it with "
            "`python -m tools.integration_envs create deploy`"
        )
        if os.environ.get("GENSEG_REQUIRE_INTEGRATION") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return python


def _big_stack() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_STACK)
    resource.setrlimit(resource.RLIMIT_STACK, (_STACK_BYTES if hard == resource.RLIM_INFINITY else hard, hard))


def _deploy(
    python: Path, *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``python -m <args>`` in the Deploy environment from the repository root, with ``env`` added."""
    result = subprocess.run(
        [str(python), "-m", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=_big_stack,
        env={**os.environ, **(env or {})},
    )
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _train(bundle: Path, data: dict[str, str]) -> None:
    """Train the autoencoder, then the mapping network, of the tiny GMS copy on ``data``, through the command line."""
    spec = overrides_of(BUNDLE)
    pretrain = {**spec["train"], **spec["pretrain"]["args"], **PRETRAIN_EXTRA, **data}
    run_bundle_cli(bundle, spec["pretrain"]["configs"], pretrain)
    run_bundle_cli(bundle, ["train.json"], {**spec["train"], **TRAIN_EXTRA, **data})


@pytest.fixture(scope="module")
def trained_gms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GMS bundle trained on bright disks, its inference config set to the sizes it was trained with."""
    root = tmp_path_factory.mktemp("deploy")
    bundle = root / BUNDLE
    shutil.copytree(BUNDLES_DIR / BUNDLE, bundle, ignore=shutil.ignore_patterns("eval", "*.pt", "*.ts", "__pycache__"))
    (bundle / "models").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    pairs = {}
    for i in range(16):
        image, mask = _disk_image(rng, (64, 64), rng.uniform(-0.35, 0.35, 2), np.full(2, rng.uniform(0.25, 0.45)))
        pairs[f"disk{i}.png"] = (image.astype(np.uint8), mask * 255)
    _train(bundle, write_pairs(root / "disks", pairs))
    inference = bundle / "configs" / "inference.json"
    config = json.loads(inference.read_text())
    config.update({k: v for k, v in overrides_of(BUNDLE)["train"].items() if k in config})
    inference.write_text(json.dumps(config, indent=4))
    return bundle


@pytest.mark.slow
def test_dicom_series_to_dicom_seg(deploy_python: Path, trained_gms: Path, tmp_path: Path) -> None:
    """Series -> app -> SEG: a valid Segmentation Storage object on the source series, overlapping the object."""
    image, truth = _disk_image(np.random.default_rng(1), (6, 64, 64), np.array([0.0, 0.1, -0.1]), [1.6, 0.4, 0.3])
    np.save(tmp_path / "volume.npy", image.astype(np.uint16))
    dicom, out = tmp_path / "dicom", tmp_path / "out"
    _deploy(deploy_python, "tools.deploy_app.dicom_io", "write", str(tmp_path / "volume.npy"), str(dicom))

    run = _deploy(deploy_python, "tools.deploy_app", "-i", str(dicom), "-o", str(out), "--bundle", str(trained_gms),
                  "--labels", "disk")  # fmt: skip
    _deploy(deploy_python, "tools.deploy_app.dicom_io", "summarize", str(out), str(dicom), str(tmp_path / "seg.json"),
            str(tmp_path / "labels.npy"))  # fmt: skip
    summary = json.loads((tmp_path / "seg.json").read_text())
    meta = json.loads((trained_gms / "configs" / "metadata.json").read_text())
    assert summary["modality"] == "SEG" and summary["sop_class_uid"] == SEGMENTATION_STORAGE, summary
    assert (summary["frames"], summary["rows"], summary["columns"]) == truth.shape, summary
    assert summary["referenced_series"] == summary["source_series"] and len(summary["source_series"]) == 1, summary
    assert summary["segments"] == [
        {
            "number": 1,
            "label": "disk",
            "algorithm_name": meta["name"],
            "algorithm_version": meta["version"],
            "algorithm_type": "AUTOMATIC",
        }
    ]
    found, truth = np.load(tmp_path / "labels.npy") > 0, truth > 0
    overlap = np.sum(found & truth)
    dice, precision = 2 * overlap / (found.sum() + truth.sum()), overlap / max(found.sum(), 1)
    assert dice >= MIN_DICE and precision >= MIN_PRECISION, (
        f"DICOM SEG vs the object: Dice {dice:.3f}, precision {precision:.3f}; app log:\n{run.stderr[-3000:]}"
    )

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not DICOM")
    paths = {
        "HOLOSCAN_INPUT_PATH": str(empty),
        "HOLOSCAN_OUTPUT_PATH": str(out),
        "HOLOSCAN_MODEL_PATH": str(trained_gms),
    }
    failed = _deploy(deploy_python, "tools.deploy_app", check=False, env=paths)
    assert failed.returncode != 0 and "no DICOM image series found" in failed.stderr, failed.stderr[-2000:]


def test_segmenter_rejects_bundles_it_cannot_run(tmp_path: Path) -> None:
    """A bundle without weights, and one that does not segment, fail before any inference with a clear message."""
    with pytest.raises(FileNotFoundError, match="no trained weights"):
        BundleSegmenter(BUNDLES_DIR / BUNDLE)
    with pytest.raises(ValueError, match="not a segmentation bundle"):
        BundleSegmenter(BUNDLES_DIR / "ct_label_to_image_synthesis")
    with pytest.raises(FileNotFoundError, match="no MONAI bundle"):
        BundleSegmenter(tmp_path)


def test_find_bundle_in_a_model_folder(tmp_path: Path) -> None:
    """``HOLOSCAN_MODEL_PATH`` may name the bundle or, as in a MAP, the folder that holds it."""
    shutil.copytree(BUNDLES_DIR / BUNDLE / "configs", tmp_path / BUNDLE / "configs")
    assert find_bundle(tmp_path) == find_bundle(tmp_path / BUNDLE) == tmp_path / BUNDLE
    with pytest.raises(FileNotFoundError, match=r"found \d+"):
        find_bundle(BUNDLES_DIR)


def test_segment_labels_from_metadata() -> None:
    """Labels come from the user, else from a ``segmentation`` output's channel_def, else from the bundle name."""
    spleen = {"name": "spleen", "network_data_format": {"outputs": {"pred": {
        "format": "segmentation", "channel_def": {"0": "background", "1": "spleen"}}}}}  # fmt: skip
    assert segment_labels(spleen, 1) == ["spleen"]
    assert segment_labels(spleen, 1, ["organ"]) == ["organ"]
    gms = json.loads((BUNDLES_DIR / BUNDLE / "configs" / "metadata.json").read_text())
    assert segment_labels(gms, 2) == [f"{gms['name']} class 1", f"{gms['name']} class 2"]
    with pytest.raises(ValueError, match="2 label names"):
        segment_labels(gms, 1, ["a", "b"])
