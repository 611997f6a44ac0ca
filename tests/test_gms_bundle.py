"""The GMS bundle beyond the generic bundle tests: its autoencoder sources, bad input, variants, cross-domain tool."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow
from PIL import Image

from common.networks import SDAutoencoderKL
from tests.conftest import BUNDLES_DIR, REPO_ROOT, bundle_workflow, error_text, write_pairs
from tests.oracles import tiny_diffusers_vae
from tools import cross_domain_gms

BUNDLE = BUNDLES_DIR / "gms_latent_segmentation"
SPEC = json.loads((REPO_ROOT / "tests" / "bundle_overrides" / "gms_latent_segmentation.json").read_text())
TINY = {**SPEC["train"], **SPEC["pretrain"]["args"], "max_epochs": 1}
AUTOENCODER = {
    "in_channels": 3,
    "out_channels": 3,
    "base_channels": 8,
    "channel_mults": (1, 2),
    "num_res_blocks": 1,
    "norm_groups": 4,
}


def workflow(root: Path, configs: list[str], workflow_type: str = "train", **overrides: object) -> ConfigWorkflow:
    return bundle_workflow(BUNDLE, root, configs, workflow_type, **{**TINY, **overrides})


def autoencoder(root: Path, configs: list[str], **overrides: object) -> torch.nn.Module:
    """The autoencoder the configs' codec loads (on first use, as training and inference do)."""
    return workflow(root, configs, **overrides).parser.get_parsed_content("codec").autoencoder


def run(root: Path, configs: list[str], **overrides: object) -> ConfigWorkflow:
    wf = workflow(root, configs, **overrides)
    wf.run()
    wf.finalize()
    return wf


def grey(size: tuple[int, int] = (40, 48), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, size, dtype=np.uint8)


def square(size: tuple[int, int] = (40, 48), value: int = 255) -> np.ndarray:
    mask = np.zeros(size, np.uint8)
    mask[5:20, 10:30] = value
    return mask


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle folder with a tiny autoencoder and mapping model trained on the synthetic polyp frames."""
    root = tmp_path_factory.mktemp("gms") / "bundle"
    run(root, ["train.json", "train_autoencoder.json"])
    run(root, ["train.json"])
    return root


def test_training_without_an_autoencoder_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(Exception) as error:
        autoencoder(tmp_path / "bundle", ["train.json"])
    text = error_text(error.value)
    assert "autoencoder.pt" in text and "train_autoencoder.json" in text and "autoencoder_path" in text


def test_autoencoder_of_other_widths_names_the_key_and_shapes(trained: Path) -> None:
    with pytest.raises(Exception) as error:
        autoencoder(trained, ["train.json"], autoencoder_channels=16)
    text = error_text(error.value)
    assert "autoencoder.pt" in text and "encoder.conv_in.weight" in text and "wrong shape" in text


def test_a_diffusers_vae_file_is_used_as_given(tmp_path: Path) -> None:
    pytest.importorskip("diffusers")
    vae = tiny_diffusers_vae()
    vae.save_pretrained(tmp_path / "vae", safe_serialization=True)
    path = tmp_path / "vae" / "diffusion_pytorch_model.safetensors"
    wf = workflow(tmp_path / "bundle", ["train.json", "sd_vae.json"], **{"autoencoder_path": str(path)})
    loaded = wf.parser.get_parsed_content("codec").autoencoder
    image = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        expected = vae.encode(image).latent_dist.mean * 0.18215
        torch.testing.assert_close(loaded.encode(image), expected, atol=1e-5, rtol=1e-5)
    assert not any(p.requires_grad for p in loaded.parameters()), "the autoencoder must be frozen"


def test_sd_vae_overlay_without_a_path_names_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SD_VAE_PATH", raising=False)
    with pytest.raises(Exception) as error:
        autoencoder(tmp_path / "bundle", ["train.json", "sd_vae.json"])
    assert "SD_VAE_PATH" in error_text(error.value)


def test_mask_with_other_values_is_named(tmp_path: Path) -> None:
    data = write_pairs(tmp_path / "data", {"a.png": (grey(), square(value=128))})
    with pytest.raises(Exception) as error:
        workflow(tmp_path / "bundle", ["train.json", "train_autoencoder.json"], **data).parser.get_parsed_content(
            "train#dataset"
        )
    text = error_text(error.value)
    assert "a.png" in text and "{0, 255}" in text and "128" in text


def test_label_beyond_num_classes_is_named(tmp_path: Path) -> None:
    label = square(value=3)
    data = write_pairs(tmp_path / "data", {"a.png": (grey(), label)})
    with pytest.raises(Exception) as error:
        workflow(
            tmp_path / "bundle", ["train.json", "train_autoencoder.json"], num_classes=2, **data
        ).parser.get_parsed_content("train#dataset")
    text = error_text(error.value)
    assert "a.png" in text and "'num_classes'" in text and "0 .. 2" in text


def test_images_of_any_size_and_grey_are_resized_and_repeated(tmp_path: Path) -> None:
    pairs = {"small.png": (grey((20, 24)), square((20, 24))), "big.png": (grey((70, 50)), square((70, 50)))}
    data = write_pairs(tmp_path / "data", pairs)
    dataset = workflow(tmp_path / "bundle", ["train.json"], **data).parser.get_parsed_content("validate#dataset")
    for item in dataset:
        assert item["image"].shape == (3, 32, 32) and set(item["label"].unique().tolist()) == {0.0, 1.0}
        assert torch.equal(item["image"][0], item["image"][2]), "grey is repeated to RGB"


def test_inference_writes_masks_at_each_images_own_size(trained: Path, tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(grey((45, 61))).convert("RGB").save(folder / "wide.png")
    Image.fromarray(grey((30, 30), seed=1)).save(folder / "grey.png")
    out = tmp_path / "out"
    run_inference = workflow(trained, ["inference.json"], "inference", dataset_dir=str(folder), output_dir=str(out))
    run_inference.run()
    assert Image.open(out / "wide_seg.png").size == (61, 45)
    assert Image.open(out / "grey_seg.png").size == (30, 30)
    assert set(np.unique(np.asarray(Image.open(out / "wide_seg.png"))).tolist()) <= {0, 255}


def test_training_without_the_latent_cache_encodes_each_batch(trained: Path, tmp_path: Path) -> None:
    root = tmp_path / "bundle"
    shutil.copytree(trained / "models", root / "models")
    shutil.copytree(trained / "eval" / "synthetic_data", root / "eval" / "synthetic_data")
    wf = workflow(root, ["train.json"], latent_cache=False, overwrite=True)  # beside the trained run's checkpoints
    item = wf.parser.get_parsed_content("train#dataset")[0]
    assert {"image", "label"} <= set(item) and "image_latent" not in item
    wf.run()
    assert (root / "models" / "model.pt").is_file()
    cached = workflow(root, ["train.json"]).parser.get_parsed_content("train#dataset")
    assert len(cached) == 2 * len(wf.parser.get_parsed_content("train#dataset")), "2 cached variants per image"
    assert {"image_latent", "image_latent_std", "label_latent"} <= set(cached[0]) and "image" not in cached[0]


def test_adversarial_autoencoder_training_runs_and_resumes(tmp_path: Path) -> None:
    configs = ["train.json", "train_autoencoder.json", "train_autoencoder_adversarial.json"]
    root = tmp_path / "bundle"
    run(root, configs)
    assert (root / "models" / "autoencoder.pt").is_file()
    checkpoint = torch.load(root / "models" / "autoencoder_checkpoint_epoch=1.pt", weights_only=True)
    assert {"autoencoder", "discriminator", "d_optimizer", "trainer"} <= set(checkpoint)
    wf = run(root, configs, resume=True, autoencoder_epochs=2)
    assert wf.parser.get_parsed_content("train#trainer").state.epoch == 2
    loaded = SDAutoencoderKL(**AUTOENCODER)
    loaded.load_state_dict(torch.load(root / "models" / "autoencoder.pt", weights_only=True))


def test_two_classes_train_and_write_label_maps(tmp_path: Path) -> None:
    label = square()
    label[25:35, 5:15] = 2
    label[label == 255] = 1
    pairs = {f"{i}.png": (grey(seed=i), label) for i in range(4)}
    data = write_pairs(tmp_path / "data", pairs)
    root = tmp_path / "bundle"
    run(root, ["train.json", "train_autoencoder.json"], num_classes=2, **data)
    wf = run(root, ["train.json"], num_classes=2, **data)
    assert wf.parser.get_parsed_content("network_def").head_out[-1].out_channels == 8, "4 latent channels a class"
    run(root, ["train.json", "evaluate.json"], num_classes=2, **data)
    written = np.asarray(Image.open(root / "eval" / "evaluation" / "masks" / "0_seg.png"))
    assert written.shape == (40, 48) and set(np.unique(written).tolist()) <= {0, 1, 2}


def test_cross_domain_pair_and_matrix(trained: Path, tmp_path: Path) -> None:
    target = write_pairs(tmp_path / "target", {f"{i}.png": (grey(seed=i), square()) for i in range(3)})
    overrides = {k: TINY[k] for k in ("autoencoder_channels", "autoencoder_res_blocks", "autoencoder_norm_groups")}
    overrides |= {k: TINY[k] for k in ("autoencoder_channel_mults", "image_size", "channels", "channel_mults")}
    overrides["norm_groups"] = TINY["norm_groups"]
    result = cross_domain_gms.pair(
        str(trained / "models"),
        target["dataset_dir"],
        str(tmp_path / "out"),
        sections="training,test",
        overrides=overrides,
    )
    assert result["images"] == 6 and 0 <= result["dice"]["mean"] <= 1
    assert json.loads((tmp_path / "out" / "results.json").read_text())["images"] == 6
    synthetic = trained / "eval" / "synthetic_data" / "polyp_n8_size40_seed0"
    runs = {"A": [str(trained / "models"), str(synthetic)], "B": [str(trained / "models"), target["dataset_dir"]]}
    table = cross_domain_gms.matrix(runs, str(tmp_path / "matrix"), overrides=overrides)
    assert set(table) == {"A->A", "A->B", "B->A", "B->B"}
    assert "| A->B | 3 |" in (tmp_path / "matrix" / "results.md").read_text()
    with pytest.raises(SystemExit):
        cross_domain_gms.main(["pair", "--models_dir", str(tmp_path), "--dataset_dir", ".", "--output_dir", "x"])
