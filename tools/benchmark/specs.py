"""What the benchmark needs to know about each bundle: its training configs, networks, sizes and data folders."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["BUNDLES", "BUNDLE_DIR", "QUICK_SIZES_DIR", "BundleSpec", "quick_sizes"]

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLE_DIR = REPO_ROOT / "bundles"
#: the bundles' tiny sizes, maintained with the bundle tests (``tests/bundle_overrides/<bundle>.json``)
QUICK_SIZES_DIR = REPO_ROOT / "tests" / "bundle_overrides"


@dataclass(frozen=True)
class BundleSpec:
    """One bundle as the benchmark runs it.

    ``train_configs``/``trainer_id``: the training measured for speed (the DDPM bundle: its DDPM pre-training, the
    expensive step). ``networks``: config ids of the trained networks (levers apply to them). ``pretrain``: configs
    and overrides of what training needs first (GMS: its autoencoder). ``speed``: overrides at the default size (only
    what keeps the measurement short: data count, no validation, a smaller batch where a step takes minutes).
    ``infer``: inference overrides at the default size (quick mode: 2 synthetic images). ``default_nfe`` and
    ``default_samples``: network evaluations per sample and samples per image of the default inference, when those
    were cut for time (the time is then scaled by the work). ``diffusion``: whether NFE is reported.
    ``segmentation``: whether a BasicUNet baseline is trained. ``pixel_features``: whether the pixel-classifier
    training is measured.
    """

    name: str
    train_configs: tuple[str, ...] = ("train.json",)
    trainer_id: str = "train#trainer"
    networks: tuple[str, ...] = ("network",)
    pretrain: tuple[tuple[str, ...], dict[str, Any]] | None = None
    speed: dict[str, Any] = field(default_factory=dict)
    infer: dict[str, Any] = field(default_factory=dict)
    default_nfe: int | None = None
    default_samples: int = 1
    diffusion: bool = False
    segmentation: bool = True
    pixel_features: bool = False


#: validation never runs during a speed measurement
NO_VALIDATION = {"val_interval": 1_000_000}

BUNDLES: dict[str, BundleSpec] = {
    "sdf_score_segmentation": BundleSpec(
        name="sdf_score_segmentation",
        # the paper's widths (64 M parameters) at 128x128: a default step (2 tiles x 16 patches) takes minutes on a
        # CPU; one tile of 2 patches a step keeps the network and patch size
        speed={**NO_VALIDATION, "synthetic_num": 16, "batch_size": 1, "patches_per_image": 2},
        # the default predictor-corrector sampler (200 steps: 399 evaluations, 4 samples, 4 windows of a 256x256
        # tile) would take hours an image: time 2 steps (3 evaluations) of 1 sample, scale to the default work
        infer={"num_steps": 2, "num_samples": 1, "synthetic_num": 2},
        default_nfe=399,
        default_samples=4,
        diffusion=True,
    ),
    "gms_latent_segmentation": BundleSpec(
        name="gms_latent_segmentation",
        pretrain=(("train.json", "train_autoencoder.json"), {"autoencoder_epochs": 1, "synthetic_num": 12}),
        # the latent cache encodes cached_variants augmented copies of every training image at set-up (5 s each at
        # the default size): one copy of 24 images; the training step itself is the default one
        speed={**NO_VALIDATION, "synthetic_num": 24, "cached_variants": 1},
        infer={"synthetic_num": 3},
    ),
    "brats_mri_ddpm_fewshot_segmentation": BundleSpec(
        name="brats_mri_ddpm_fewshot_segmentation",
        train_configs=("train.json", "train_ddpm.json"),
        trainer_id="pretrain#trainer",
        networks=("ddpm_network",),
        # the default DDPM step (32 slices of 128x128, six levels) takes minutes on a CPU: 8 slices a step
        speed={**NO_VALIDATION, "synthetic_num": 64, "ddpm_batch_size": 8},
        infer={"synthetic_num": 3},
        diffusion=True,
        pixel_features=True,
    ),
    "postdae_mask_refinement": BundleSpec(
        name="postdae_mask_refinement",
        speed={**NO_VALIDATION, "synthetic_num": 64},
        infer={"synthetic_num": 3},
    ),
    "ct_label_to_image_synthesis": BundleSpec(
        name="ct_label_to_image_synthesis",
        networks=("generator", "discriminator", "wavelet_critic"),
        # OASIS' widths at 256x256: a default step (batch 4, three networks) takes minutes on a CPU; batch 1
        speed={**NO_VALIDATION, "synthetic_num": 48, "batch_size": 1},
        infer={"synthetic_num": 3},
        segmentation=False,
    ),
}


def quick_sizes(name: str) -> dict[str, Any]:
    """The bundle's tiny sizes (``train`` and ``pretrain`` overrides) from its bundle-test file."""
    return json.loads((QUICK_SIZES_DIR / f"{name}.json").read_text())
