"""Quality on a seeded test split: each bundle through its own benchmark module, beside a BasicUNet given the same
wall-clock training time on the same split (run in a child process by the pipeline).

The per-bundle modules (``tools.benchmark_*``) prepare the split, train and evaluate; here each training gets a
wall-clock budget (their ``seconds`` argument, ``tools.bundle_runs.StopAtDeadline``) with ``UNLIMITED_EPOCHS``
instead of a number of epochs, and quick mode's sizes (``patched``). The baselines:

- SDF: ``benchmark_sdf.train_unet`` (BasicUNet on the same patches); GMS: ``benchmark_gms.train_unet``.
- DDPM few-shot: the bundle's own supervised-baseline pipeline (``baseline.json``: same labelled images,
  augmentation and evaluation) with its network replaced by a BasicUNet and Adam 1e-3 (``BASIC_UNET_OVERLAY``).
- Post-DAE: the bundle's training with a BasicUNet as the refining network: the same corrupted masks in, the same
  clean masks as targets, the same evaluation.
- Synthesis: no baseline (a generator is scored by SSIM/PSNR/RMSE of its images and a segmenter's mIoU on them).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from tools import benchmark_brats, benchmark_gms, benchmark_postdae, benchmark_sdf, benchmark_synthesis
from tools.benchmark.budget import UNLIMITED_EPOCHS, patched
from tools.benchmark.specs import quick_sizes

__all__ = ["BASIC_UNET", "DATA_FOLDERS", "quality"]

logger = logging.getLogger("tools.benchmark.quality")

#: the real data set each bundle is scored on, a folder of ``--data_root``
DATA_FOLDERS = {
    "sdf_score_segmentation": "monuseg_nuclei_HE",
    "gms_latent_segmentation": "busi_breast_ultrasound",
    "brats_mri_ddpm_fewshot_segmentation": "busi_breast_ultrasound",
    "postdae_mask_refinement": "cxr_lung_masks",
    "ct_label_to_image_synthesis": "kvasir_seg_polyp",
}
#: MONAI's BasicUNet with its default widths, as a bundle's ``network_def``
BASIC_UNET = {"_target_": "BasicUNet", "spatial_dims": 2, "in_channels": 1, "out_channels": 1}
#: the DDPM bundle's supervised baseline with a BasicUNet (Adam 1e-3, as the other benchmarks' BasicUNets)
BASIC_UNET_OVERLAY = {
    "network_def": {**BASIC_UNET, "in_channels": "@image_channels", "out_channels": "$@num_classes + 1"},
    "optimizer": {"_target_": "torch.optim.Adam", "params": "$@network.parameters()", "lr": 1e-3},
}
#: shares of the budget where a bundle trains two things in turn
GMS_AUTOENCODER_SHARE = 0.4
BRATS_PRETRAIN_SHARE = 0.7
SYNTHESIS_GENERATOR_SHARE = 0.75
#: labelled images of the few-shot comparison (the bundle README's headline setting; quick: 4)
SHOTS, QUICK_SHOTS = 20, 4
#: samplers of the SDF evaluation: predictor-corrector steps (N=200: 399 evaluations, about 80 s a 256x256 tile on
#: 2 cores) and K samples of the uncertainty run (``benchmark_sdf``'s default 8 would add 30 s a tile)
PC_STEPS, QUICK_PC_STEPS = 200, 3
NUM_SAMPLES, QUICK_NUM_SAMPLES = 2, 2


def _tiny(name: str, *prefixes: str) -> dict[str, Any]:
    sizes = quick_sizes(name)["train"]
    return {k: v for k, v in sizes.items() if k.startswith(prefixes)}


def _sdf(work: Path, data: Path, quick: bool, budget: float) -> dict[str, Any]:
    tiny = _tiny("sdf_score_segmentation", "dim", "fusion", "channel_mults", "attention")
    constants = {}
    if quick:
        constants = {
            "SMALL_NETWORK": tiny,
            "TRAINING": {**benchmark_sdf.TRAINING, "patch_size": [32, 32], "val_interval": 1},
        }
    with patched(benchmark_sdf, **constants):
        split = benchmark_sdf.prepare(str(data), str(work))
        score = benchmark_sdf.train_score(str(work), epochs=UNLIMITED_EPOCHS, seconds=budget)
        unet = benchmark_sdf.train_unet(str(work), epochs=UNLIMITED_EPOCHS, seconds=score["seconds"])
        pc_steps = QUICK_PC_STEPS if quick else PC_STEPS
        evaluated = benchmark_sdf.evaluate(str(work), QUICK_NUM_SAMPLES if quick else NUM_SAMPLES, pc_steps)
    curve = []
    for key, r in evaluated.items():
        if isinstance(r, dict) and key != "basic_unet" and "_k" not in key:
            row = {"sampler": key, "nfe": r["nfe"], "dice": r["dice"], "seconds_per_image": r["seconds_per_tile"]}
            curve.append(row)
    curve.sort(key=lambda row: row["nfe"])
    bundle = evaluated[f"pc_{pc_steps}"]
    return {
        "split": split,
        "metric": "Dice (per tile)",
        "bundle": {"method": f"predictor-corrector, {bundle['nfe']} NFE", **_pick(bundle, "dice", "iou", "hd95")},
        "basic_unet": _pick(evaluated["basic_unet"], "dice", "iou", "hd95"),
        "train_seconds": score["seconds"],
        "basic_unet_train_seconds": unet["seconds"],
        "dice_vs_nfe": curve,
        "details": {"train_score": score, "train_unet": unet, "evaluate": evaluated},
    }


def _pick(scores: dict[str, Any], *keys: str) -> dict[str, float]:
    return {k: float(scores[k]) for k in keys if k in scores}


def _gms(work: Path, data: Path, quick: bool, budget: float) -> dict[str, Any]:
    constants: dict[str, Any] = {"DATASETS": {"busi": data}}
    if quick:
        widths = ("image_size", "channels", "channel_mults", "norm_groups", "cached_variants", "autoencoder_")
        constants["SMALL_AUTOENCODER"] = _tiny("gms_latent_segmentation", *widths)
    with patched(benchmark_gms, **constants):
        split = benchmark_gms.prepare("busi", str(work))
        autoencoder_budget = budget * GMS_AUTOENCODER_SHARE
        autoencoder = benchmark_gms.train_autoencoder(
            "busi", str(work), epochs=UNLIMITED_EPOCHS, seconds=autoencoder_budget
        )
        # GMS's warm-up + cosine schedule is sized by max_epochs (UNLIMITED_EPOCHS here, with no warm-up in
        # benchmark_gms.GMS_TRAINING): in a wall-clock budget its learning rate stays near the initial one
        remaining = budget - autoencoder["seconds"]
        gms = benchmark_gms.train_gms("busi", str(work), epochs=UNLIMITED_EPOCHS, seconds=remaining)
        seconds = autoencoder["seconds"] + gms["seconds"]
        unet = benchmark_gms.train_unet("busi", str(work), seconds=seconds)
        evaluated = benchmark_gms.evaluate("busi", str(work))
    return {
        "split": split,
        "metric": "Dice (per image, 224x224)" if not quick else "Dice (per image)",
        "bundle": {"method": "GMS (autoencoder trained here)", **_pick(evaluated["gms"], "dice", "iou")},
        "basic_unet": _pick(evaluated["unet"], "dice", "iou"),
        "train_seconds": seconds,
        "basic_unet_train_seconds": unet["seconds"],
        "details": {"train_autoencoder": autoencoder, "train_gms": gms, "train_unet": unet, "evaluate": evaluated},
    }


def _brats(work: Path, data: Path, quick: bool, budget: float) -> dict[str, Any]:
    overlay = work / "basic_unet_baseline.json"
    work.mkdir(parents=True, exist_ok=True)
    overlay.write_text(json.dumps(BASIC_UNET_OVERLAY, indent=2))
    unet_configs = [str(benchmark_brats.BUNDLE / "configs" / "baseline.json"), str(overlay)]
    constants: dict[str, Any] = {}
    if quick:
        tiny = _tiny("brats_mri_ddpm_fewshot_segmentation", "ddpm_")
        constants = {
            "SMALL_DDPM": tiny,
            "FEATURES": {"feature_blocks": [2, 3], "feature_timesteps": [50, 200]},
            "IMAGE_SIZE": [32, 32],
            "PIXEL_TRAINING": {"max_epochs": 2, "ensemble_size": 2},
        }
    shots = (QUICK_SHOTS if quick else SHOTS,)
    n = shots[0]
    with patched(benchmark_gms, DATASETS={"busi": data}), patched(benchmark_brats, **constants):
        split = benchmark_brats.prepare(str(work), shots)
        pretrain = benchmark_brats.pretrain(str(work), epochs=UNLIMITED_EPOCHS, seconds=budget * BRATS_PRETRAIN_SHARE)
        with patched(benchmark_brats, METHODS={"pixel": []}):
            remaining = budget - pretrain["seconds"]
            pixel = benchmark_brats.fewshot(str(work), shots, seconds=remaining)[f"n{n}_pixel"]
        seconds = pretrain["seconds"] + pixel["seconds"]
        with patched(benchmark_brats, METHODS={"basic_unet": unet_configs}):
            runs = benchmark_brats.fewshot(str(work), shots, epochs=UNLIMITED_EPOCHS, seconds=seconds)
            unet = runs[f"n{n}_basic_unet"]
        with patched(benchmark_brats, METHODS={"pixel": [], "basic_unet": unet_configs}):
            evaluated = benchmark_brats.evaluate(str(work), shots)
    return {
        "split": split,
        "metric": f"Dice (per image, {n} labelled images)",
        "bundle": {"method": "pixel-MLP ensemble on DDPM features", **_pick(evaluated[f"n{n}_pixel"], "dice", "hd95")},
        "basic_unet": _pick(evaluated[f"n{n}_basic_unet"], "dice", "hd95"),
        "train_seconds": seconds,
        "basic_unet_train_seconds": unet["seconds"],
        "details": {"pretrain": pretrain, "pixel": pixel, "basic_unet": unet, "evaluate": evaluated},
    }


def _postdae(work: Path, data: Path, quick: bool, budget: float) -> dict[str, Any]:
    sizes: dict[str, Any] = {}
    image_size = 256
    if quick:
        tiny = quick_sizes("postdae_mask_refinement")["train"]
        sizes = {k: tiny[k] for k in ("encoder_channels", "decoder_channels", "latent_size", "batch_size")}
        image_size = tiny["image_size"][0]
    common: dict[str, Any] = {
        "data_dir": str(data),
        "epochs": UNLIMITED_EPOCHS,
        "image_size": image_size,
        "val_interval": 1,
        "corruptions": "reference three",
    }
    dae = benchmark_postdae.cxr(work_dir=str(work / "dae"), overrides=sizes, seconds=budget, **common)
    unet_net = {"network_def": BASIC_UNET, "batch_size": sizes.get("batch_size", 8)}
    seconds = dae["train_seconds"]
    unet = benchmark_postdae.cxr(work_dir=str(work / "basic_unet"), overrides=unet_net, seconds=seconds, **common)
    row = {r["corruption"]: r for r in dae["rows"]}["reference three"]
    unet_row = {r["corruption"]: r for r in unet["rows"]}["reference three"]
    return {
        "metric": "Dice of refined test masks (the reference's three corruptions)",
        "bundle": {"method": "Post-DAE", "dice": row["refined_dice"], "hd95": row["refined_hd95"]},
        "basic_unet": {"dice": unet_row["refined_dice"], "hd95": unet_row["refined_hd95"]},
        "input": {"dice": row["raw_dice"], "hd95": row["raw_hd95"]},
        "train_seconds": dae["train_seconds"],
        "basic_unet_train_seconds": unet["train_seconds"],
        "details": {"dae": dae, "basic_unet": unet},
    }


def _synthesis(work: Path, data: Path, quick: bool, budget: float) -> dict[str, Any]:
    constants: dict[str, Any] = {"DATASETS": {"kvasir": data}}
    if quick:
        prefixes = ("image_size", "generator_", "z_dim", "spade_hidden", "discriminator_", "wavelet_", "segmenter_")
        constants["CPU_SIZES"] = {**_tiny("ct_label_to_image_synthesis", *prefixes, "bn_refresh"), "batch_size": 4}
    with patched(benchmark_synthesis, **constants):
        split = benchmark_synthesis.prepare("kvasir", str(work))
        generator = benchmark_synthesis.train_generator(
            "kvasir", str(work), epochs=UNLIMITED_EPOCHS, seconds=budget * SYNTHESIS_GENERATOR_SHARE
        )
        remaining = budget - generator["seconds"]
        segmenter = benchmark_synthesis.train_segmenter("kvasir", str(work), epochs=UNLIMITED_EPOCHS, seconds=remaining)
        evaluated = benchmark_synthesis.evaluate("kvasir", str(work))
    m = evaluated["metrics"]
    return {
        "split": split,
        "metric": "SSIM / PSNR / RMSE of generated vs real test images",
        "bundle": {
            "method": "OASIS generator + wavelet critic (EMA)",
            "ssim": m["val_ssim"],
            "psnr": m["val_psnr"],
            "rmse": m["val_rmse"],
            "miou_synthetic": m["miou_synthetic"],
            "miou_real": m["miou_real"],
        },
        "basic_unet": None,
        "basic_unet_note": "no BasicUNet baseline: a label-to-image generator is scored by its own image metrics",
        "train_seconds": generator["seconds"],
        "details": {"train_generator": generator, "train_segmenter": segmenter, "evaluate": evaluated},
    }


_RUNS = {
    "sdf_score_segmentation": _sdf,
    "gms_latent_segmentation": _gms,
    "brats_mri_ddpm_fewshot_segmentation": _brats,
    "postdae_mask_refinement": _postdae,
    "ct_label_to_image_synthesis": _synthesis,
}


def quality(name: str, work: str, data_root: str, quick: bool, budget_s: float) -> dict[str, Any]:
    """Prepare, train within ``budget_s`` (the bundle, then its BasicUNet for as long) and evaluate ``name``."""
    data = Path(data_root) / DATA_FOLDERS[name]
    return {"data": str(data), "budget_s": budget_s, **_RUNS[name](Path(work), data, quick, budget_s)}
