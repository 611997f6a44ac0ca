"""Benchmark of the BraTS DDPM few-shot bundle: its three methods with few labels, on real BUSI images, and its memory.

No brain-tumour data set can be had on the development machine, and the method is domain-general (few labels plus
diffusion features), so the few-shot comparison runs on BUSI breast ultrasound (``../shared/data``, read where it
lies, never copied); every output goes to ``--work_dir``. One command runs it all (about an hour on 2 CPU cores)::

    python -m tools.benchmark_brats all

Steps:

1. ``prepare``: BUSI's seeded 70/10/20 split with near-duplicates grouped (``tools.benchmark_gms.prepare``), then one
   datalist per shot count ``n``: ``n`` labelled images drawn (seeded) from the training section, the validation and
   test sections as they are, and every image, without its mask, in ``unlabelled`` (the DDPM never sees a label).
2. ``pretrain``: the bundle's ``train_ddpm.json`` with a small DDPM (``SMALL_DDPM``) on all images at 64 x 64.
3. ``fewshot``: for each ``n`` the pixel-classifier ensemble (``train.json``), the fine-tuned noise predictor
   (``denoiser.json``) and the supervised DynUNet baseline (``baseline.json``), each evaluated on the test images
   with ``evaluate.json`` (per-image Dice and HD95 in pixels at 64 x 64, the checkpoint of best validation Dice).
4. ``memory``: peak resident memory (RSS) of a child process that trains the pixel classifier on 50 images at
   256 x 256 with 3 timesteps x 5 decoder blocks (960 features a pixel), against the in-memory float32 array the
   reference implementations would hold.
5. ``synthetic``: the BraTS-shaped pipeline end to end on synthetic volumes in the BraTS 2021 layout:
   ``tools.prepare_brats`` -> DDPM pre-training -> pixel classifier -> WT/TC/ET evaluation.

Writes ``results.json`` and ``results.md`` in ``--work_dir``. Run it alone on the machine: the times are wall times.
"""

from __future__ import annotations

import csv
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import fire
import numpy as np
import torch

from common.data.brats import write_synthetic_brats_case
from common.data.datalist import write_datalist
from common.io import atomic_write_json, atomic_write_text, read_json
from tools import benchmark_gms
from tools.bundle_runs import bundle_workflow, peak_rss_bytes, timed_run
from tools.prepare_brats import prepare_brats

__all__ = ["all_steps", "evaluate", "fewshot", "memory", "prepare", "pretrain", "synthetic"]

logger = logging.getLogger("tools.benchmark_brats")

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLE = REPO_ROOT / "bundles" / "brats_mri_ddpm_fewshot_segmentation"
DEFAULT_WORK_DIR = REPO_ROOT / "results" / "brats"
METHODS = {"pixel": [], "denoiser": ["denoiser.json"], "baseline": ["baseline.json"]}

#: BUSI through the bundle: grey PNG images (channel first on load), binary 0/255 masks, one region (the lesion).
BUSI = {
    "image_channels": 1,
    "image_channel_dim": None,
    "num_classes": 1,
    "class_weights": [0.1, 0.3],
    "regions": [[1]],
    "region_names": ["lesion"],
    "display_channel": 0,
}
#: A DDPM small enough to pre-train on 2 CPU cores: 4 levels (64, 32, 16, 8 px), attention at 16 x 16.
SMALL_DDPM = {
    "ddpm_channels": [32, 64, 64, 128],
    "ddpm_attention_levels": [False, False, True, False],
    "ddpm_res_blocks": 2,
    "ddpm_head_channels": 32,
    "ddpm_norm_groups": 16,
}
#: The memory test's run: 50 labelled images at 256 x 256 (the size ddpm-segmentation's ~210 GB figure refers to).
MEMORY_RUN = {"images": 50, "size": 256}
#: The synthetic BraTS-layout run: volumes, their shape (5 slices each are used) and DDPM epochs.
SYNTHETIC_RUN = {"cases": 12, "shape": (64, 64, 40), "epochs": 20}
#: Features: the blocks at half resolution (as the paper's 16-18 of its 128 px network) at two timesteps.
FEATURES = {"feature_blocks": [5, 6, 7], "feature_timesteps": [50, 200]}
IMAGE_SIZE = [64, 64]
#: The pixel classifiers: the paper tutorial's 8 epochs, ddpm-segmentation's ensemble of 10.
PIXEL_TRAINING = {"max_epochs": 8, "ensemble_size": 10}


def _busi(work_dir: str) -> Path:
    return Path(work_dir) / "busi"


def _overrides(work: Path, run: str, n: int | None = None, **extra: Any) -> dict[str, Any]:
    """The bundle on the benchmark's BUSI data, writing under ``work/<run>`` (never into the bundle)."""
    out = work / run
    return {
        "bundle_root": str(BUNDLE),
        "dataset_dir": str(work),
        "datalist": str(work / (f"datalist_n{n}.json" if n else "datalist_unlabelled.json")),
        "ckpt_dir": str(out / "models"),
        "ddpm_path": str(work / "ddpm" / "models" / "ddpm.pt"),
        "output_dir": str(out / "eval"),
        "image_size": IMAGE_SIZE,
        "seed": 0,
        **BUSI,
        **SMALL_DDPM,
        **FEATURES,
        **extra,
    }


def prepare(work_dir: str = str(DEFAULT_WORK_DIR), shots: tuple[int, ...] = (10, 20), seed: int = 42) -> dict:
    """BUSI's grouped split and one datalist per shot count (``datalist_n{n}.json``), plus the unlabelled one."""
    split = benchmark_gms.prepare("busi", work_dir)
    work = _busi(work_dir)
    datalist = read_json(work / "datalist.json", "datalist")
    images = [{"image": item["image"]} for section in ("training", "validation", "test") for item in datalist[section]]
    order = np.random.default_rng(seed).permutation(len(datalist["training"]))
    write_datalist({"unlabelled": images}, work / "datalist_unlabelled.json", overwrite=True)
    for n in shots:
        if n > len(order):
            raise ValueError(f"--shots {n} is more than the {len(order)} training images.")
        fewshot_list = {
            "unlabelled": images,
            "training": [datalist["training"][i] for i in order[:n]],
            "validation": datalist["validation"],
            "test": datalist["test"],
        }
        write_datalist(fewshot_list, work / f"datalist_n{n}.json", overwrite=True)
    return {**split, "unlabelled": len(images), "shots": list(shots)}


def pretrain(
    work_dir: str = str(DEFAULT_WORK_DIR), epochs: int = 60, batch_size: int = 16, seconds: float | None = None
) -> dict:
    """The small DDPM on every BUSI image (no labels), with the bundle's train_ddpm.json.

    ``seconds``: a wall-clock budget (``StopAtDeadline``: the run stops before passing it, within an epoch if
    need be).
    """
    work = _busi(work_dir)
    overrides = _overrides(work, "ddpm", ddpm_max_epochs=epochs, ddpm_batch_size=batch_size)
    configs = ["train.json", "train_ddpm.json"]
    return timed_run(BUNDLE, configs, trainer_id="pretrain#trainer", seconds=seconds, **overrides)


def _method_settings(method: str, epochs: int, budgeted: bool = False) -> dict[str, Any]:
    """Training overrides of ``method``: the pixel MLPs validate after each of their few epochs; the image-based
    methods about 15 times over ``epochs``, or, when a wall-clock budget decides the length (``budgeted``), after
    every epoch: how many epochs fit is not known in advance, and the budget's stop counts validation in the epoch
    time, so the last epoch that fits is always validated and ``model.pt`` (best validation Dice) always written."""
    if method == "pixel":
        return {**PIXEL_TRAINING, "val_interval": 1}
    val_interval = 1 if budgeted else max(1, epochs // 15)
    return {"max_epochs": epochs, "val_interval": val_interval, "batch_size": 8}


def fewshot(
    work_dir: str = str(DEFAULT_WORK_DIR),
    shots: tuple[int, ...] = (10, 20),
    epochs: int = 150,
    seconds: float | None = None,
) -> dict:
    """Train the three methods on each shot count; the image-based ones for ``epochs`` epochs, the MLPs for 8.

    ``seconds``: a wall-clock budget for each training (``StopAtDeadline``: it stops before passing it, within an
    epoch if need be); each training gets the whole budget.
    """
    work = _busi(work_dir)
    results: dict[str, Any] = {}
    for n in shots:
        for method, overlay in METHODS.items():
            settings = _method_settings(method, epochs, budgeted=seconds is not None)
            run = f"n{n}_{method}"
            logger.info("training %s", run)
            overrides = _overrides(work, run, n, **settings)
            results[run] = timed_run(BUNDLE, ["train.json", *overlay], seconds=seconds, **overrides)
    return results


def _metrics(eval_dir: Path) -> dict[str, float]:
    """metrics.csv and the per-image spread of the Dice written by the bundle's evaluate.json."""
    rows = dict(line.split(",") for line in (eval_dir / "metrics.csv").read_text().strip().splitlines())
    with open(eval_dir / "dice_raw.csv") as f:
        per_image = [float(row["mean"]) for row in csv.DictReader(f) if row["mean"] != "nan"]
    return {
        "dice": float(rows["dice"]),
        "dice_std": float(np.std(per_image, ddof=1)) if len(per_image) > 1 else float("nan"),
        "hd95": float(rows["hd95"]),
        "images": len(per_image),
    }


def evaluate(work_dir: str = str(DEFAULT_WORK_DIR), shots: tuple[int, ...] = (10, 20)) -> dict:
    """Each trained model on the test images with the bundle's evaluate.json."""
    work = _busi(work_dir)
    results: dict[str, Any] = {}
    for n in shots:
        for method, overlay in METHODS.items():
            run = f"n{n}_{method}"
            overrides = _overrides(work, run, n, **_method_settings(method, 1))
            start = time.perf_counter()
            workflow = bundle_workflow(BUNDLE, ["train.json", *overlay, "evaluate.json"], **overrides)
            workflow.run()
            workflow.finalize()
            results[run] = {
                **_metrics(work / run / "eval" / "evaluation"),
                "seconds": time.perf_counter() - start,
                "trainable": sum(
                    p.numel() for p in workflow.parser.get_parsed_content("network").parameters() if p.requires_grad
                ),
            }
    return results


# --------------------------------------------------------------------------------------------------------------------
# memory


#: The feature setting of the memory test: 5 blocks of 64 channels at 3 timesteps, as the paper's network's 16-20.
MEMORY_DDPM = {
    "ddpm_channels": [64, 64, 64],
    "ddpm_attention_levels": [False, False, False],
    "ddpm_res_blocks": 1,
    "ddpm_head_channels": 32,
    "ddpm_norm_groups": 32,
    "feature_blocks": [1, 2, 3, 4, 5],
    "feature_timesteps": [50, 200, 400],
}


def memory_child(
    work_dir: str = str(DEFAULT_WORK_DIR), images: int = 50, size: int = 256, network: dict | None = None
) -> dict:
    """(Run in a child process by ``memory``.) Train the pixel classifier on ``images`` labelled images.

    ``network``: the DDPM and feature settings (``MEMORY_DDPM`` by default). ``peak_rss_gb``: this process's own peak
    resident memory (``tools.bundle_runs.peak_rss_bytes``; not ``os.wait4``'s, which includes the parent's peak).
    """
    work = _busi(work_dir)
    datalist = read_json(work / "datalist.json", "datalist")
    pool = datalist["training"] + datalist["validation"] + datalist["test"]
    if images > len(pool):
        raise ValueError(f"--images {images} is more than the {len(pool)} BUSI images.")
    out = work / "memory"
    write_datalist(
        {"training": pool[:images], "validation": pool[images : images + 2]}, out / "datalist.json", overwrite=True
    )
    overrides = {
        **_overrides(work, "memory", **(network or MEMORY_DDPM)),
        "datalist": str(out / "datalist.json"),
        "ddpm_path": str(out / "random_ddpm.pt"),
        "image_size": [size, size],
        "max_epochs": 1,
        "pixel_batch_size": 256,
    }
    workflow = bundle_workflow(BUNDLE, ["train.json"], **overrides)
    extractor = workflow.parser.get_parsed_content("feature_extractor")
    torch.save({"model": extractor.network.state_dict()}, out / "random_ddpm.pt")  # memory does not depend on weights
    start = time.perf_counter()
    workflow.run()
    workflow.finalize()
    store = workflow.parser.get_parsed_content("train#feature_store")
    pixels, features = store.num_pixels(), extractor.num_features
    return {
        "images": images,
        "size": size,
        "features_per_pixel": features,
        "pixels": pixels,
        "seconds": time.perf_counter() - start,
        "in_memory_float32_gb": pixels * features * 4 / 1e9,
        "on_disk_float16_gb": pixels * features * 2 / 1e9,
        "peak_rss_gb": peak_rss_bytes() / 1e9,
    }


def memory(
    work_dir: str = str(DEFAULT_WORK_DIR), images: int = 50, size: int = 256, network: dict | None = None
) -> dict:
    """``memory_child`` in a fresh process, so that its peak RSS is the pixel-classifier training's alone."""
    result_file = _busi(work_dir) / "memory" / "child.json"
    result_file.parent.mkdir(parents=True, exist_ok=True)
    code = (
        "import json; from tools.benchmark_brats import memory_child; "
        f"json.dump(memory_child({work_dir!r}, {images}, {size}, {network or MEMORY_DDPM!r}), "
        f"open({str(result_file)!r}, 'w'))"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)
    return read_json(result_file, "memory result")


# --------------------------------------------------------------------------------------------------------------------
# synthetic BraTS pipeline


def synthetic(
    work_dir: str = str(DEFAULT_WORK_DIR), cases: int = 12, shape: tuple[int, int, int] = (64, 64, 40), epochs: int = 20
) -> dict:
    """The BraTS-shaped pipeline end to end on synthetic BraTS-layout volumes (no real data needed)."""
    work = Path(work_dir) / "synthetic_brats"
    raw = work / "raw"
    for i in range(cases):
        write_synthetic_brats_case(raw, f"BraTS2021_{i:05d}", shape, seed=i)
    data = work / "slices"
    start = time.perf_counter()
    prepare_brats(
        str(raw),
        str(data),
        slices=(10, 15, 20, 25, 30),
        size=64,
        pool_size=36,
        shots=(10,),
        seeds=(42,),
        max_validation=8,
        overwrite=True,
    )
    prepare_seconds = time.perf_counter() - start
    overrides = {
        "bundle_root": str(BUNDLE),
        "dataset_dir": str(data),
        "datalist": str(data / "datalist.json"),
        "ckpt_dir": str(work / "models"),
        "output_dir": str(work / "eval"),
        "image_size": IMAGE_SIZE,
        **SMALL_DDPM,
        **FEATURES,
        "seed": 0,
    }
    ddpm = timed_run(
        BUNDLE,
        ["train.json", "train_ddpm.json"],
        trainer_id="pretrain#trainer",
        ddpm_max_epochs=epochs,
        ddpm_batch_size=8,
        **overrides,
    )
    pixel = timed_run(BUNDLE, ["train.json"], **PIXEL_TRAINING, **overrides)
    workflow = bundle_workflow(BUNDLE, ["train.json", "evaluate.json"], **PIXEL_TRAINING, **overrides)
    workflow.run()
    workflow.finalize()
    eval_dir = work / "eval" / "evaluation"
    with open(eval_dir / "dice_summary.csv") as f:
        means = [float(row["mean"]) for row in csv.DictReader(f) if row["class"] != "mean"]
    regions = dict(zip(("WT", "TC", "ET"), means, strict=True))
    return {
        "cases": cases,
        "shape": list(shape),
        "splits": {k: len(v) for k, v in read_json(data / "datalist.json", "datalist").items()},
        "prepare_seconds": prepare_seconds,
        "ddpm_seconds": ddpm["seconds"],
        "pixel_seconds": pixel["seconds"],
        "dice": regions,
        "hd95": float(dict(line.split(",") for line in (eval_dir / "metrics.csv").read_text().split())["hd95"]),
    }


# --------------------------------------------------------------------------------------------------------------------
# report


def _markdown(results: dict) -> str:
    lines = [
        "| labelled images | method | trainable params | training wall time (s) | Dice % (mean ± std) | HD95 (px) |",
        "|---|---|---|---|---|---|",
    ]
    names = {"pixel": "pixel-MLP ensemble (10)", "denoiser": "fine-tuned noise predictor", "baseline": "DynUNet"}
    for run, r in results.get("evaluate", {}).items():
        n, method = run.split("_", 1)
        seconds = results["fewshot"][run]["seconds"]
        lines.append(
            f"| {n[1:]} | {names[method]} | {r['trainable']:,} | {seconds:.0f} | {100 * r['dice']:.2f} ± "
            f"{100 * r['dice_std']:.2f} | {r['hd95']:.2f} |"
        )
    if "pretrain" in results:
        p = results["pretrain"]
        lines += ["", f"DDPM pre-training: {p['epochs']} epochs, {p['iterations']} steps, {p['seconds']:.0f} s."]
    if "memory" in results:
        m = results["memory"]
        lines += [
            "",
            f"Memory: {m['images']} images at {m['size']}x{m['size']}, {m['features_per_pixel']} features a pixel "
            f"({m['pixels']:,} pixels): peak RSS {m['peak_rss_gb']:.2f} GB; an in-memory float32 feature array "
            f"would be {m['in_memory_float32_gb']:.1f} GB (on disk here: {m['on_disk_float16_gb']:.1f} GB float16); "
            f"{m['seconds']:.0f} s.",
        ]
    if "synthetic" in results:
        s = results["synthetic"]
        dice = ", ".join(f"{k} {100 * v:.1f}" for k, v in s["dice"].items())
        lines += [
            "",
            f"Synthetic BraTS-layout pipeline ({s['cases']} volumes {s['shape']}, splits {s['splits']}): prepare "
            f"{s['prepare_seconds']:.0f} s, DDPM {s['ddpm_seconds']:.0f} s, pixel classifier {s['pixel_seconds']:.0f} "
            f"s; Dice % {dice}; HD95 {s['hd95']:.2f} px.",
        ]
    return "\n".join(lines) + "\n"


def all_steps(
    work_dir: str = str(DEFAULT_WORK_DIR),
    shots: tuple[int, ...] = (10, 20),
    pretrain_epochs: int = 60,
    epochs: int = 150,
) -> dict:
    """Every step; results.json is rewritten after each, so a long run can be followed."""
    results: dict[str, Any] = {"split": prepare(work_dir, shots)}
    path = Path(work_dir) / "results.json"
    steps = (
        ("memory", lambda: memory(work_dir, **MEMORY_RUN)),
        ("pretrain", lambda: pretrain(work_dir, pretrain_epochs)),
        ("fewshot", lambda: fewshot(work_dir, shots, epochs)),
        ("evaluate", lambda: evaluate(work_dir, shots)),
        ("synthetic", lambda: synthetic(work_dir, **SYNTHETIC_RUN)),
    )
    for name, step in steps:
        results[name] = step()
        atomic_write_json(path, results)
    atomic_write_text(Path(work_dir) / "results.md", _markdown(results))
    return results


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    commands = {
        "all": all_steps,
        "prepare": prepare,
        "pretrain": pretrain,
        "fewshot": fewshot,
        "evaluate": evaluate,
        "memory": memory,
        "synthetic": synthetic,
    }
    fire.Fire(commands, name="benchmark_brats", serialize=lambda _: None)


if __name__ == "__main__":
    main()
