"""Benchmark of the label-to-image synthesis bundle on real data, reproducing its docs/README.md.

The real data is read where it lies (``../shared/data/kvasir_seg_polyp`` and ``totalseg_example_ct_mr``) and never
copied; every output goes to ``--work_dir``. One command runs it all (about an hour on 2 CPU cores)::

    python -m tools.benchmark_synthesis all

Everything runs at 64 x 64 with a narrow generator and critics (``CPU_SIZES``; the bundle's defaults are OASIS's
256 x 256 widths), through the bundle's own configs:

1. ``prepare``: Kvasir-SEG pairs (mask -> polyp image) in a seeded 70/10/20 datalist; the TotalSegmentator example
   CT as axial slices (``tools.prepare_ct_slices``: wide HU window, nearest-only labels, 3-slice slabs split).
2. ``train_generator``: ``train.json`` (OASIS generator, OASIS discriminator with LabelMix, wavelet critic with R1,
   EMA) for a fixed number of epochs; the EMA checkpoint of the best validation SSIM is kept.
3. ``train_segmenter``: ``train_segmenter.json``, the segmentation network of the mIoU, on the real pairs.
4. ``evaluate``: ``evaluate.json`` on the test pairs: SSIM/PSNR/RMSE per image, the segmenter's mIoU on generated
   and on real images, the domain Fréchet distance; ``inference.json`` writes contact sheets of 4 samples per map.
5. ``downstream`` (Kvasir): a segmentation network trained on ``n_real`` real training pairs vs on the same pairs
   plus one generated image for each other training mask, the same number of iterations each, test Dice; repeated
   over seeds (which pairs are drawn, and the noise). The generator was trained on all training pairs: this is
   augmentation with a generator trained on more pairs than the segmenter sees, not a few-shot generator.

Writes ``results.json`` and ``results.md`` in ``--work_dir``. Run it alone on the machine: the times are wall times.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import random
import shutil
from pathlib import Path
from typing import Any

import fire
import numpy as np
import torch
from monai.metrics import DiceMetric
from monai.networks import one_hot

from common.data.datalist import load_datalist
from common.io import atomic_write_json, atomic_write_text
from tools.bundle_runs import bundle_workflow, timed_run
from tools.prepare_ct_slices import prepare_ct_slices
from tools.prepare_folder import prepare_folder

__all__ = [
    "all_steps",
    "downstream",
    "evaluate",
    "prepare",
    "train_generator",
    "train_segmenter",
]

logger = logging.getLogger("tools.benchmark_synthesis")

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLE = REPO_ROOT / "bundles" / "ct_label_to_image_synthesis"
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
DATASETS = {"kvasir": SHARED_DATA / "kvasir_seg_polyp", "totalseg": SHARED_DATA / "totalseg_example_ct_mr"}
DEFAULT_WORK_DIR = REPO_ROOT / "results" / "synthesis"

#: CPU-sized networks (the bundle's defaults: 256 x 256, generator 64 x (16..1)), faster learning rates (the
#: defaults: 4e-4 both; with OASIS's initialisation, gain 0.02, the discriminator's logits take a few hundred steps at
#: 4e-4 to leave chance level, a large part of a CPU budget) and a shorter EMA (0.999 averages over ~1000 steps,
#: more than a CPU run has, so the EMA would still hold much of the random initialisation)
CPU_SIZES: dict[str, Any] = {
    "image_size": [64, 64],
    "generator_channels": 16,
    "generator_channel_mults": [8, 8, 4, 2, 1],
    "z_dim": 16,
    "spade_hidden": 32,
    "discriminator_channels": [32, 64, 64, 128],
    "discriminator_head_channels": 32,
    "wavelet_channel_multiplier": 0.5,
    "wavelet_max_channels": 128,
    "segmenter_features": [16, 16, 32, 64, 128, 16],
    "bn_refresh_batches": 10,
    "batch_size": 8,
    "generator_learning_rate": 1e-3,
    "discriminator_learning_rate": 2e-3,
    "ema_decay": 0.99,
}
#: what each data set is: Kvasir RGB pictures with binary masks, CT slices in [0, 1] with TotalSegmentator's classes
DATA_KEYS: dict[str, dict[str, Any]] = {
    "kvasir": {"image_channels": 3, "num_classes": 1, "intensity_range": [0, 255]},
    "totalseg": {"image_channels": 1, "intensity_range": [0.0, 1.0], "batch_size": 4},
}


def _work(work_dir: str, dataset: str) -> Path:
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset '{dataset}'; expected one of {sorted(DATASETS)}")
    return Path(work_dir) / dataset


def _num_classes(work: Path, dataset: str) -> int:
    """Foreground classes: Kvasir's one polyp class; for the CT slices, classes.json's count less background."""
    if dataset == "kvasir":
        return 1
    return int(json.loads((work / "slices" / "classes.json").read_text())["num_classes"]) - 1


def _overrides(work: Path, dataset: str, **extra: Any) -> dict[str, Any]:
    """The bundle's configs on the benchmark's data and CPU sizes, writing under ``work`` (never into the bundle).

    Evaluation and inference use the last EMA generator (``model_final.pt``): validation SSIM hardly changes over a
    CPU run, so the best-SSIM checkpoint would be picked by noise.
    """
    data_dir = work / "slices" if dataset == "totalseg" else work
    return {
        "bundle_root": str(BUNDLE),
        "dataset_dir": str(data_dir),
        "datalist": str(data_dir / "datalist.json"),
        "ckpt_dir": str(work / "models"),
        "output_dir": str(work / "eval"),
        **CPU_SIZES,
        **DATA_KEYS[dataset],
        "num_classes": _num_classes(work, dataset),
        "model_path": str(work / "models" / "model_final.pt"),
        **extra,
    }


def prepare(dataset: str = "kvasir", work_dir: str = str(DEFAULT_WORK_DIR), seed: int = 0) -> dict[str, int]:
    """The datalist of ``dataset`` under ``work_dir``; returns the number of items per section."""
    work, data = _work(work_dir, dataset), DATASETS[dataset]
    work.mkdir(parents=True, exist_ok=True)
    if dataset == "kvasir":
        datalist = prepare_folder(
            output=str(work / "datalist.json"),
            images_dir=str(data / "images"),
            masks_dir=str(data / "masks"),
            val_fraction=0.1,
            test_fraction=0.2,
            seed=seed,
            relative_to=str(work),
            overwrite=True,
        )
    else:
        datalist = prepare_ct_slices(
            str(data),
            str(work / "slices"),
            cases=["ct_example"],
            class_names=str(data / "labels.json"),
            size=CPU_SIZES["image_size"][0],
            slab_size=3,
            val_fraction=0.1,
            test_fraction=0.2,
            seed=seed,
            overwrite=True,
        )
    return {section: len(entries) for section, entries in datalist.items() if isinstance(entries, list)}


def train_generator(
    dataset: str = "kvasir", work_dir: str = str(DEFAULT_WORK_DIR), epochs: int = 25, seconds: float | None = None
) -> dict:
    """``train.json`` for ``epochs`` epochs, validating (SSIM) every 5.

    ``seconds``: a wall-clock budget (``StopAtDeadline``: the run stops before passing it, within an epoch if
    need be).
    """
    work = _work(work_dir, dataset)
    overrides = _overrides(work, dataset, max_epochs=epochs, val_interval=5)
    return timed_run(BUNDLE, ["train.json"], seconds=seconds, **overrides)


def train_segmenter(
    dataset: str = "kvasir", work_dir: str = str(DEFAULT_WORK_DIR), epochs: int = 40, seconds: float | None = None
) -> dict:
    """``train_segmenter.json`` on the real training pairs.

    ``seconds``: a wall-clock budget (``StopAtDeadline``: the run stops before passing it, within an epoch if
    need be).
    """
    work = _work(work_dir, dataset)
    overrides = _overrides(work, dataset, segmenter_epochs=epochs, val_interval=1)
    return timed_run(BUNDLE, ["train.json", "train_segmenter.json"], seconds=seconds, **overrides)


def _read_metrics(path: Path) -> dict[str, float]:
    with open(path) as f:
        return {row[0]: float(row[1]) for row in csv.reader(f) if row}


def evaluate(dataset: str = "kvasir", work_dir: str = str(DEFAULT_WORK_DIR), num_samples: int = 4) -> dict:
    """``evaluate.json`` on the test pairs, then ``inference.json`` (contact sheets) on the first 4 test maps."""
    work = _work(work_dir, dataset)
    overrides = _overrides(work, dataset)
    workflow = bundle_workflow(BUNDLE, ["train.json", "evaluate.json"], **overrides)
    workflow.run()
    workflow.finalize()
    metrics = _read_metrics(work / "eval" / "evaluation" / "metrics.csv")
    sheets = work / "sheets"
    shutil.rmtree(sheets, ignore_errors=True)
    test = json.loads(Path(overrides["datalist"]).read_text())["test"][:4]
    atomic_write_json(work / "sheets_datalist.json", {"test": test})
    inference = bundle_workflow(
        BUNDLE,
        ["inference.json"],
        "infer",
        **{**overrides, "datalist": str(work / "sheets_datalist.json"), "output_dir": str(sheets)},
        num_samples=num_samples,
    )
    inference.run()
    inference.finalize()
    return {"metrics": metrics, "contact_sheets": sorted(str(p) for p in sheets.glob("*_samples.png"))}


def _test_dice(work: Path, overrides: dict[str, Any], segmenter_file: Path) -> dict[str, float]:
    """Per-image foreground Dice of a segmenter checkpoint on the test split."""
    workflow = bundle_workflow(BUNDLE, ["train.json", "train_segmenter.json"], **overrides)
    parser = workflow.parser
    transform = parser.get_parsed_content("validate#preprocessing")
    network = parser.get_parsed_content("segmenter_def")
    state = torch.load(segmenter_file, map_location="cpu", weights_only=True)
    network.load_state_dict(state.get("model", state))
    network.eval()
    classes = overrides["num_classes"] + 1
    dice = DiceMetric(include_background=False)
    items = load_datalist(overrides["datalist"], "test", base_dir=overrides["dataset_dir"], keys=["image", "label"])
    with torch.no_grad():
        for item in items:
            data = transform(item)
            pred = network(data["image"][None]).argmax(1, keepdim=True)
            dice(one_hot(pred, classes), one_hot(data["label"][None].long(), classes))
    values = dice.get_buffer().flatten().numpy()
    return {"dice": float(np.nanmean(values)), "dice_std": float(np.nanstd(values, ddof=1)), "images": len(items)}


def _segmenter_run(work: Path, name: str, training: list[dict], iterations: int, seed: int) -> dict[str, Any]:
    """Train the bundle's segmenter on ``training`` (validation and test as in the datalist) for ``iterations``."""
    datalist = json.loads((work / "datalist.json").read_text())
    run_dir = work / "downstream" / name
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    atomic_write_json(run_dir / "datalist.json", {**datalist, "training": training})
    batch = CPU_SIZES["batch_size"]  # Kvasir's
    epochs = max(1, round(iterations / math.ceil(len(training) / batch)))
    overrides = _overrides(
        work,
        "kvasir",
        datalist=str(run_dir / "datalist.json"),
        segmenter_dir=str(run_dir),
        segmenter_epochs=epochs,
        val_interval=max(1, epochs // 20),
        seed=seed,
    )
    timing = timed_run(BUNDLE, ["train.json", "train_segmenter.json"], **overrides)
    return {**_test_dice(work, overrides, run_dir / "model.pt"), "pairs": len(training), **timing}


def _synthesize(work: Path, masks: list[dict], seed: int) -> list[dict]:
    """One generated image per mask (``inference.json``, noise seed ``seed``): new training pairs."""
    out = work / "downstream" / f"synthetic_seed{seed}"
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(work / "downstream" / f"masks_seed{seed}.json", {"masks": masks})
    overrides = _overrides(
        work,
        "kvasir",
        datalist=str(work / "downstream" / f"masks_seed{seed}.json"),
        datalist_section="masks",
        output_dir=str(out),
        num_samples=1,
        noise_seed=seed,
    )
    workflow = bundle_workflow(BUNDLE, ["inference.json"], "infer", **overrides)
    workflow.run()
    workflow.finalize()
    pairs = []
    for mask in masks:
        image = out / f"{Path(mask['label']).stem}_synth_1.png"
        pairs.append({"image": str(image.relative_to(work)), "label": mask["label"]})
    return pairs


def downstream(
    work_dir: str = str(DEFAULT_WORK_DIR), n_real: int = 20, seeds: tuple[int, ...] = (0, 1, 2), iterations: int = 1000
) -> dict[str, Any]:
    """Segmenters on ``n_real`` real Kvasir pairs vs the same plus generated pairs, and on all real pairs."""
    work = _work(work_dir, "kvasir")
    training = json.loads((work / "datalist.json").read_text())["training"]
    runs: dict[str, Any] = {}
    for seed in seeds:
        shuffled = random.Random(seed).sample(training, len(training))
        real, others = shuffled[:n_real], shuffled[n_real:]
        synthetic = _synthesize(work, [{"label": item["label"]} for item in others], seed)
        runs[f"seed{seed}"] = {
            "real": _segmenter_run(work, f"real{n_real}_seed{seed}", real, iterations, seed),
            "real_plus_synthetic": _segmenter_run(
                work, f"real{n_real}_synth_seed{seed}", real + synthetic, iterations, seed
            ),
        }
    runs["all_real"] = _segmenter_run(work, "all_real", training, iterations, seeds[0])
    gains = [r["real_plus_synthetic"]["dice"] - r["real"]["dice"] for k, r in runs.items() if k.startswith("seed")]
    runs["gain"] = {
        "mean": float(np.mean(gains)),
        "standard_error": float(np.std(gains, ddof=1) / np.sqrt(len(gains))) if len(gains) > 1 else float("nan"),
        "per_seed": gains,
    }
    return runs


def _markdown(results: dict) -> str:
    lines = [
        "| data set | training (s, epochs) | SSIM | PSNR (dB) | RMSE | mIoU synthetic | mIoU real | domain FD |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for dataset, r in results["datasets"].items():
        m, t = r["evaluate"]["metrics"], r["train_generator"]
        lines.append(
            f"| {dataset} | {t['seconds']:.0f}, {t['epochs']} | {m['val_ssim']:.3f} | {m['val_psnr']:.2f} | "
            f"{m['val_rmse']:.3f} | {100 * m['miou_synthetic']:.1f} | {100 * m['miou_real']:.1f} | "
            f"{m['domain_frechet']:.3g} |"
        )
    down = results.get("downstream")
    if down:
        lines += ["", "| training pairs | test Dice % (mean ± std over images) |", "|---|---|"]
        for key, r in down.items():
            if key.startswith("seed"):
                for arm in ("real", "real_plus_synthetic"):
                    s = r[arm]
                    lines.append(f"| {key} {arm} ({s['pairs']}) | {100 * s['dice']:.2f} ± {100 * s['dice_std']:.2f} |")
        s = down["all_real"]
        lines.append(f"| all real ({s['pairs']}) | {100 * s['dice']:.2f} ± {100 * s['dice_std']:.2f} |")
        g = down["gain"]
        lines.append(f"\nGain from synthetic pairs: {100 * g['mean']:+.2f} ± {100 * g['standard_error']:.2f} points.")
    return "\n".join(lines) + "\n"


def all_steps(
    work_dir: str = str(DEFAULT_WORK_DIR),
    kvasir_epochs: int = 20,
    totalseg_epochs: int = 60,
    segmenter_epochs: int = 40,
    downstream_iterations: int = 800,
    datasets: tuple[str, ...] = ("kvasir", "totalseg"),
    n_real: int = 20,
    seeds: tuple[int, ...] = (0, 1, 2),
) -> dict:
    """Every step for each data set, then the downstream test on Kvasir (when it is one of them)."""
    results: dict[str, Any] = {"sizes": CPU_SIZES, "datasets": {}}
    epochs = {"kvasir": kvasir_epochs, "totalseg": totalseg_epochs}
    for dataset in datasets:
        r: dict[str, Any] = {"split": prepare(dataset, work_dir)}
        r["train_generator"] = train_generator(dataset, work_dir, epochs[dataset])
        r["train_segmenter"] = train_segmenter(dataset, work_dir, segmenter_epochs)
        r["evaluate"] = evaluate(dataset, work_dir)
        results["datasets"][dataset] = r
        atomic_write_json(Path(work_dir) / "results.json", results)
    if "kvasir" in datasets:
        results["downstream"] = downstream(work_dir, n_real, seeds, downstream_iterations)
    atomic_write_json(Path(work_dir) / "results.json", results)
    atomic_write_text(Path(work_dir) / "results.md", _markdown(results))
    return results


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    fire.Fire(
        {
            "all": all_steps,
            "prepare": prepare,
            "train_generator": train_generator,
            "train_segmenter": train_segmenter,
            "evaluate": evaluate,
            "downstream": downstream,
        }
    )


if __name__ == "__main__":
    main()
