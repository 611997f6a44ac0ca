"""The catalogue of bad inputs, across the entry points: bundle configs, checkpoints, the command line, the Deploy
operator's segmenter and the tools.

Each case ends in one error whose message names the file or config key at fault and says what was expected, and
leaves no output behind. The cases are tables, so a new bad input is one line; the bundle-specific and tool-specific
cases that need a trained model live beside their bundle's and tool's tests (``test_*_bad_input.py``,
``test_segment_folder.py``, ``test_package_bundle.py``, ``test_monailabel.py``, ``test_deploy_app.py``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from PIL import Image

from tests.conftest import BUNDLES_DIR, REPO_ROOT, bundle_workflow, cli_args, error_text, overrides_of

SDF, GMS, BRATS = "sdf_score_segmentation", "gms_latent_segmentation", "brats_mri_ddpm_fewshot_segmentation"
POSTDAE, SYNTHESIS = "postdae_mask_refinement", "ct_label_to_image_synthesis"


# --------------------------------------------------------------------------------------------------------------------
# files


def nii(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> str:
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))
    return path.name


def png(path: Path, array: np.ndarray) -> str:
    Image.fromarray(array).save(path)
    return path.name


def grey(size: tuple[int, int] = (48, 48)) -> np.ndarray:
    return (np.random.default_rng(0).random(size) * 255).astype(np.float32)


def disk_mask(size: tuple[int, int] = (48, 48), value: int = 1) -> np.ndarray:
    yy, xx = np.mgrid[: size[0], : size[1]]
    return ((yy - size[0] / 2) ** 2 + (xx - size[1] / 2) ** 2 < (min(size) / 4) ** 2).astype(np.uint8) * value


def with_value(array: np.ndarray, value: float, count: int = 1) -> np.ndarray:
    out = array.astype(np.float32).copy()
    out.flat[:count] = value
    return out


def organ_labels(size: tuple[int, int] = (48, 48)) -> np.ndarray:
    labels = np.zeros(size, np.uint8)
    labels[8:20, 8:20], labels[25:40, 10:30] = 1, 3
    return labels


def brats_slice(size: tuple[int, int] = (32, 32)) -> np.ndarray:
    """A 4-contrast MR slice, contrasts last (the bundle's ``image_channel_dim`` -1)."""
    return np.stack([grey(size)] * 4, axis=-1)


# --------------------------------------------------------------------------------------------------------------------
# data cases: one datalist entry built from files, read through a bundle config


@dataclass
class DataCase:
    bundle: str
    config: str
    files: Callable[[Path], dict[str, str]]  # writes the files into a folder; returns the datalist entry
    expected: tuple[str, ...]  # all in the error text; "{data}" is replaced by the data folder
    overrides: dict = field(default_factory=dict)


def _truncated_png(folder: Path) -> dict[str, str]:
    png(folder / "full.png", grey().astype(np.uint8))
    (folder / "cut.png").write_bytes((folder / "full.png").read_bytes()[:60])
    return {"image": "cut.png", "label": nii(folder / "m.nii.gz", disk_mask())}


def _text_as_png(folder: Path) -> dict[str, str]:
    (folder / "notes.png").write_text("this is not an image")
    return {"image": "notes.png", "label": nii(folder / "m.nii.gz", disk_mask())}


def _empty_file(folder: Path) -> dict[str, str]:
    (folder / "empty.nii.gz").write_bytes(b"")
    return {"image": "empty.nii.gz", "label": nii(folder / "m.nii.gz", disk_mask())}


DATA_CASES: dict[str, DataCase] = {
    # non-finite intensities
    "sdf-train-nan-image": DataCase(
        SDF,
        "train.json",
        lambda d: {
            "image": nii(d / "nan.nii.gz", with_value(grey(), np.nan)),
            "label": nii(d / "m.nii.gz", disk_mask()),
        },
        ("{data}/nan.nii.gz", "1 NaN or infinite value", "expected finite intensities"),
    ),
    "sdf-inference-inf-image": DataCase(
        SDF,
        "inference.json",
        lambda d: {"image": nii(d / "inf.nii.gz", with_value(grey(), np.inf, 3))},
        ("{data}/inf.nii.gz", "3 NaN or infinite value"),
    ),
    "gms-train-nan-image": DataCase(
        GMS,
        "train.json",
        lambda d: {
            "image": nii(d / "nan.nii.gz", with_value(grey(), np.nan)),
            "label": nii(d / "m.nii.gz", disk_mask()),
        },
        ("{data}/nan.nii.gz", "NaN or infinite"),
    ),
    "gms-inference-neg-inf-image": DataCase(
        GMS,
        "inference.json",
        lambda d: {"image": nii(d / "ninf.nii.gz", with_value(grey(), -np.inf))},
        ("{data}/ninf.nii.gz", "NaN or infinite"),
    ),
    "brats-inference-nan-contrast": DataCase(
        BRATS,
        "inference.json",
        lambda d: {"image": nii(d / "mr.nii.gz", with_value(brats_slice(), np.nan, 5))},
        ("{data}/mr.nii.gz", "NaN or infinite"),
    ),
    "synthesis-train-nan-ct": DataCase(
        SYNTHESIS,
        "train.json",
        lambda d: {
            "image": nii(d / "ct.nii.gz", with_value(grey() * 4 - 1000, np.nan)),
            "label": nii(d / "l.nii.gz", organ_labels()),
        },
        ("{data}/ct.nii.gz", "NaN or infinite"),
    ),
    # unreadable, truncated, wrong format
    "sdf-train-truncated-png": DataCase(
        SDF, "train.json", _truncated_png, ("{data}/cut.png", "key 'image'", "truncated")
    ),
    "gms-inference-text-named-png": DataCase(
        GMS, "inference.json", _text_as_png, ("{data}/notes.png", "expected a readable, complete image")
    ),
    "postdae-inference-empty-file": DataCase(
        POSTDAE, "inference.json", _empty_file, ("{data}/empty.nii.gz", "expected a readable, complete image")
    ),
    "sdf-train-missing-label-file": DataCase(
        SDF,
        "train.json",
        lambda d: {"image": nii(d / "i.nii.gz", grey()), "label": "gone.nii.gz"},
        ("gone.nii.gz", "do not exist", "datalist"),
    ),
    # masks and label maps
    "sdf-train-three-valued-mask": DataCase(
        SDF,
        "train.json",
        lambda d: {
            "image": nii(d / "i.nii.gz", grey()),
            "label": nii(d / "m.nii.gz", disk_mask() + disk_mask((48, 48)) * 1 + (grey() > 250)),
        },
        ("{data}/m.nii.gz", "expected a binary mask"),
    ),
    "postdae-train-empty-mask": DataCase(
        POSTDAE,
        "train.json",
        lambda d: {"label": png(d / "empty.png", np.zeros((48, 48), np.uint8))},
        ("{data}/empty.png", "the mask is empty"),
    ),
    "postdae-inference-nan-mask": DataCase(
        POSTDAE,
        "inference.json",
        lambda d: {"image": nii(d / "p.nii.gz", with_value(disk_mask(), np.nan))},
        ("{data}/p.nii.gz", "NaN or infinite values; expected a binary mask"),
    ),
    "postdae-inference-probability-map": DataCase(
        POSTDAE,
        "inference.json",
        lambda d: {"image": nii(d / "prob.nii.gz", grey() / 255)},
        ("{data}/prob.nii.gz", "expected a binary mask with values {0, 1} or {0, 255}"),
    ),
    "gms-train-label-beyond-classes": DataCase(
        GMS,
        "train.json",
        lambda d: {"image": nii(d / "i.nii.gz", grey()), "label": nii(d / "m.nii.gz", organ_labels())},
        ("{data}/m.nii.gz", "found values 0, 1, 3"),
    ),
    "synthesis-inference-negative-label": DataCase(
        SYNTHESIS,
        "inference.json",
        lambda d: {"label": nii(d / "l.nii.gz", organ_labels().astype(np.int16) - 1)},
        ("{data}/l.nii.gz", "-1"),
    ),
    "synthesis-inference-fractional-label": DataCase(
        SYNTHESIS,
        "inference.json",
        lambda d: {"label": nii(d / "l.nii.gz", organ_labels() * 0.5)},
        ("{data}/l.nii.gz", "0.5"),
    ),
    # channels and dimensions
    "gms-train-grey-alpha-image": DataCase(
        GMS,
        "train.json",
        lambda d: {
            "image": png(d / "la.png", np.stack([grey().astype(np.uint8)] * 2, axis=-1)),
            "label": png(d / "m.png", disk_mask(value=255)),
        },
        ("{data}/la.png", "2 channel(s); expected 3", "'image_channels'"),
    ),
    "brats-inference-three-contrasts": DataCase(
        BRATS,
        "inference.json",
        lambda d: {"image": nii(d / "mr3.nii.gz", brats_slice()[..., :3])},
        ("{data}/mr3.nii.gz", "3 channel(s); expected 4"),
    ),
    "gms-inference-volume-for-2d": DataCase(
        GMS,
        "inference.json",
        lambda d: {"image": nii(d / "vol.nii.gz", np.stack([grey()] * 5, axis=-1))},
        ("{data}/vol.nii.gz", "3 spatial dimensions, expected 2"),
    ),
    "sdf-train-volume-for-2d": DataCase(
        SDF,
        "train.json",
        lambda d: {
            "image": nii(d / "vol.nii.gz", np.stack([grey()] * 5, axis=-1)),
            "label": nii(d / "m.nii.gz", disk_mask()),
        },
        ("{data}/vol.nii.gz", "3 spatial dimensions, expected 2"),
    ),
    # tiny images
    "gms-inference-tiny-image": DataCase(
        GMS,
        "inference.json",
        lambda d: {"image": nii(d / "tiny.nii.gz", grey((3, 3)))},
        ("{data}/tiny.nii.gz", "smaller than [16, 16]", "'min_image_size'"),
    ),
    "sdf-inference-image-smaller-than-patch": DataCase(
        SDF,
        "inference.json",
        lambda d: {"image": nii(d / "small.nii.gz", grey((20, 40)))},
        ("{data}/small.nii.gz", "smaller than [32, 32]", "'patch_size'"),
    ),
    # image and label that do not belong together
    "sdf-train-shape-mismatch": DataCase(
        SDF,
        "train.json",
        lambda d: {"image": nii(d / "i.nii.gz", grey()), "label": nii(d / "m40.nii.gz", disk_mask((40, 40)))},
        ("{data}/m40.nii.gz", "[40, 40]", "{data}/i.nii.gz", "same size"),
    ),
    "gms-train-affine-mismatch": DataCase(
        GMS,
        "train.json",
        lambda d: {
            "image": nii(d / "i.nii.gz", grey()),
            "label": nii(d / "m.nii.gz", disk_mask(), np.diag([0.5, 0.5, 1.0, 1.0])),
        },
        ("{data}/m.nii.gz", "affine", "{data}/i.nii.gz", "same grid"),
    ),
    "brats-train-shape-mismatch": DataCase(
        BRATS,
        "train.json",
        lambda d: {
            "image": nii(d / "mr.nii.gz", brats_slice()),
            "label": nii(d / "seg.nii.gz", np.zeros((30, 32), np.uint8)),
        },
        ("{data}/seg.nii.gz", "same size"),
    ),
    "synthesis-train-affine-mismatch": DataCase(
        SYNTHESIS,
        "train.json",
        lambda d: {
            "image": nii(d / "ct.nii.gz", grey()),
            "label": nii(
                d / "l.nii.gz", organ_labels(), np.array([[1, 0, 0, 5], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
            ),
        },
        ("{data}/l.nii.gz", "affine", "same grid"),
    ),
}


def read_first_item(parser: ConfigParser, bundle: str, config: str) -> object:
    """Read the datalist's first entry as the config does: its training dataset, or inference's ``dataset``.

    The BraTS training dataset streams DDPM features; its slices go through ``preprocessing`` first.
    """
    if config != "train.json":
        return parser.get_parsed_content("dataset")[0]
    if bundle == BRATS:
        return parser.get_parsed_content("preprocessing")(parser.get_parsed_content("data")["training"][0])
    return parser.get_parsed_content("train#dataset")[0]


def _workflow(tmp_path: Path, bundle: str, config: str, **overrides: object):
    workflow_type = "train" if config.startswith("train") else "inference"
    sizes = {**overrides_of(bundle)["train"], **overrides}
    return bundle_workflow(BUNDLES_DIR / bundle, tmp_path / "bundle", config, workflow_type, **sizes)


def _datalist(folder: Path, entry: dict[str, str]) -> dict[str, str]:
    """A datalist with ``entry`` in every section."""
    path = folder / "datalist.json"
    path.write_text(json.dumps({"training": [entry], "validation": [entry], "test": [entry]}))
    return {"dataset_dir": str(folder), "datalist": str(path)}


@pytest.mark.parametrize("case_id", sorted(DATA_CASES))
def test_bad_data_is_named(case_id: str, tmp_path: Path) -> None:
    case = DATA_CASES[case_id]
    data = tmp_path / "data"
    data.mkdir()
    overrides = {**_datalist(data, case.files(data)), **case.overrides}
    with pytest.raises(Exception) as error:
        read_first_item(_workflow(tmp_path, case.bundle, case.config, **overrides).parser, case.bundle, case.config)
    text = error_text(error.value)
    for expected in case.expected:
        assert expected.replace("{data}", str(data)) in text, f"{case_id}: {expected!r} not in:\n{text}"
    written = [p for p in (tmp_path / "bundle").rglob("*") if p.is_file() and "synthetic" not in p.parts[-2]]
    assert not [p for p in written if p.suffix in (".pt", ".png") or p.name.endswith(".nii.gz")], written


# --------------------------------------------------------------------------------------------------------------------
# checkpoints


def _network_state(bundle: str, config: str = "inference.json", key: str = "network") -> dict:
    parser = ConfigParser()
    parser.read_config(str(BUNDLES_DIR / bundle / "configs" / config))
    parser.update({"bundle_root": str(BUNDLES_DIR / bundle), **overrides_of(bundle)["train"]})
    return parser.get_parsed_content(key).state_dict()


def _truncated(path: Path, bundle: str) -> None:
    torch.save(_network_state(bundle), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _pickled_object(path: Path, bundle: str) -> None:
    torch.save({"model": argparse.Namespace(lr=1)}, path)  # weights_only=True refuses arbitrary objects


def _other_bundles_weights(path: Path, bundle: str) -> None:
    torch.save(_network_state(POSTDAE if bundle != POSTDAE else SDF), path)


CHECKPOINT_CASES: dict[str, tuple[str, Callable[[Path, str], None], tuple[str, ...]]] = {
    "sdf-truncated": (SDF, _truncated, ("not a readable PyTorch checkpoint", "truncated")),
    "sdf-empty": (SDF, lambda p, b: p.write_bytes(b""), ("not a readable PyTorch checkpoint",)),
    "postdae-text": (POSTDAE, lambda p, b: p.write_text("weights"), ("not a readable PyTorch checkpoint",)),
    "postdae-pickled-object": (POSTDAE, _pickled_object, ("not a readable PyTorch checkpoint", "weights only")),
    "postdae-other-bundle": (POSTDAE, _other_bundles_weights, ("does not fit the configured network",)),
    "synthesis-truncated": (SYNTHESIS, _truncated, ("not a readable PyTorch checkpoint",)),
    "sdf-other-bundle": (SDF, _other_bundles_weights, ("does not fit the configured network",)),
}


@pytest.mark.parametrize("case_id", sorted(CHECKPOINT_CASES))
def test_bad_checkpoint_is_named_before_any_output(case_id: str, tmp_path: Path) -> None:
    bundle, write, expected = CHECKPOINT_CASES[case_id]
    models = tmp_path / "bundle" / "models"
    models.mkdir(parents=True)
    checkpoint = models / "model.pt"
    write(checkpoint, bundle)
    workflow = _workflow(tmp_path, bundle, "inference.json", synthetic_num=2)
    with pytest.raises(Exception) as error:
        workflow.run()
    text = error_text(error.value)
    assert str(checkpoint) in text, text
    for part in expected:
        assert part in text, f"{case_id}: {part!r} not in:\n{text}"
    outputs = tmp_path / "bundle" / "eval" / "inference"
    assert not outputs.exists() or not any(outputs.iterdir()), "a failed run wrote outputs"


@pytest.mark.parametrize(
    ("bundle", "config", "weight_key", "file_key"),
    [(GMS, "train.json", "autoencoder_path", "autoencoder_path"), (BRATS, "train.json", "ddpm_path", "ddpm_path")],
)
def test_bad_pretrained_weights_are_named(bundle: str, config: str, weight_key: str, file_key: str, tmp_path: Path):
    """The frozen networks a training starts from: GMS's autoencoder, the DDPM of the few-shot segmenter."""
    bad = tmp_path / "pretrained.pt"
    bad.write_bytes(b"PK\x03\x04 cut short")
    workflow = _workflow(tmp_path, bundle, config, **{weight_key: str(bad)})
    with pytest.raises(Exception) as error:
        workflow.run()
    text = error_text(error.value)
    assert str(bad) in text and file_key in text, text
    assert not list((tmp_path / "bundle").rglob("model*.pt"))


# --------------------------------------------------------------------------------------------------------------------
# the model-zoo command line: exit status, message, nothing written


def run_cli(bundle_root: Path, config: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle_root / "configs" / config)]
    cmd += ["--bundle_root", str(bundle_root), *args]
    return subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)


@pytest.fixture
def postdae_copy(tmp_path: Path) -> Path:
    bundle = tmp_path / POSTDAE
    shutil.copytree(BUNDLES_DIR / POSTDAE / "configs", bundle / "configs")
    return bundle


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--max_epoch", "1"), "--max_epoch: no such key"),
        (("--image_size", "[0, 64]"), "--image_size [0, 64]: expected a list of positive numbers"),
        (("--batch_size", "many"), "--batch_size 'many': expected an integer"),
        (("--dataset_dir", "/no/such/folder"), "dataset_dir '/no/such/folder' does not exist"),
    ],
)
def test_command_line_refusals_exit_non_zero_and_write_nothing(
    postdae_copy: Path, args: tuple[str, ...], expected: str
) -> None:
    result = run_cli(postdae_copy, "train.json", *cli_args(overrides_of(POSTDAE)["train"]), *args)
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr[-3000:]
    assert not (postdae_copy / "models").exists() or not any((postdae_copy / "models").iterdir())


# --------------------------------------------------------------------------------------------------------------------
# the MONAI Deploy operator's segmenter (no Deploy SDK needed)


@pytest.fixture(scope="module")
def deploy_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Post-DAE bundle with freshly initialised weights: enough for the checks that run before inference."""
    bundle = tmp_path_factory.mktemp("deploy") / POSTDAE
    shutil.copytree(BUNDLES_DIR / POSTDAE / "configs", bundle / "configs")
    (bundle / "models").mkdir()
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser.update({"bundle_root": str(bundle)})
    torch.save(parser.get_parsed_content("network").state_dict(), bundle / "models" / "model.pt")
    return bundle


@pytest.mark.parametrize(
    ("volume", "expected"),
    [
        (np.zeros((64, 64), np.float32), "expected a (slices, rows, columns) volume"),
        (np.zeros((2, 3, 64, 64), np.float32), "expected a (slices, rows, columns) volume"),
        (with_value(np.stack([disk_mask((64, 64))] * 2), np.nan), "NaN or infinite"),
        (np.stack([grey((64, 64))] * 2) / 255, "expected a binary mask"),
    ],
    ids=["2d", "4d", "nan", "grey-image-for-a-mask-bundle"],
)
def test_deploy_segmenter_refuses_bad_volumes(deploy_bundle: Path, volume: np.ndarray, expected: str) -> None:
    from tools.deploy_app.segmenter import BundleSegmenter

    with pytest.raises(Exception) as error:
        BundleSegmenter(deploy_bundle).segment_volume(volume)
    assert expected in error_text(error.value)


def test_deploy_segmenter_names_truncated_weights(deploy_bundle: Path, tmp_path: Path) -> None:
    from tools.deploy_app.segmenter import BundleSegmenter

    broken = tmp_path / POSTDAE
    shutil.copytree(deploy_bundle, broken)
    weights = broken / "models" / "model.pt"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint") as error:
        BundleSegmenter(broken).segment_volume(np.stack([disk_mask((64, 64))] * 2).astype(np.float32))
    assert str(weights) in str(error.value)
