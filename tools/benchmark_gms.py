"""Benchmark of the GMS bundle on real BUSI and Kvasir-SEG images, reproducing its docs/README.md.

The real data is read where it lies (``../shared/data/busi_breast_ultrasound`` and ``kvasir_seg_polyp``) and never
copied; every output goes to ``--work_dir``. One command runs it all (about 75 minutes on 2 CPU cores)::

    python -m tools.benchmark_gms all

For each data set:

1. ``prepare``: a seeded 70/10/20 training/validation/test datalist (BUSI: near-duplicate images grouped, so a
   group never sits on both sides).
2. ``train_autoencoder``: the bundle's ``train_autoencoder.json`` overlay (a small KL-autoencoder, since Stable
   Diffusion's VAE is not available here) on the training images and masks.
3. ``train_gms``: the bundle's ``train.json``, the paper's loss and latent mapping model at the paper's widths, with
   the latent cache; the checkpoint of the best validation Dice is kept.
4. ``train_unet``: MONAI's ``BasicUNet`` (Dice + cross-entropy) on the same images, augmentation and split, for the
   wall-clock time that the autoencoder and GMS took together.
5. ``evaluate``: both on the test images, Dice and IoU per image at 224x224 (the paper's protocol).
6. ``cache_speed`` (BUSI only): seconds per epoch with and without the latent cache, for the paper's loss and for
   the latent term alone.

Writes ``results.json`` and ``results.md`` in ``--work_dir``. Run it alone on the machine: the times are wall times.
"""

from __future__ import annotations

import copy
import csv
import logging
import time
from pathlib import Path
from typing import Any

import fire
import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.bundle import ConfigParser
from monai.data import CacheDataset, DataLoader
from monai.engines import SupervisedTrainer
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric, MeanIoU
from monai.networks.nets import BasicUNet
from monai.transforms import Compose, EnsureTyped
from monai.utils import set_determinism
from PIL import Image

from common.data.datalist import load_datalist
from common.io import atomic_write_json, atomic_write_text
from tools.bundle_runs import StopAtDeadline, timed_run
from tools.prepare_folder import prepare_folder
from tools.prepare_gms import near_duplicate_groups, thumbnail

__all__ = ["all_steps", "cache_speed", "evaluate", "prepare", "train_autoencoder", "train_gms", "train_unet"]

logger = logging.getLogger("tools.benchmark_gms")

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLE = REPO_ROOT / "bundles" / "gms_latent_segmentation"
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
DATASETS = {"busi": SHARED_DATA / "busi_breast_ultrasound", "kvasir": SHARED_DATA / "kvasir_seg_polyp"}
DEFAULT_WORK_DIR = REPO_ROOT / "results" / "gms"

#: a small autoencoder for CPU (Stable Diffusion's: 128 channels, 2 residual blocks, 84 M parameters); the latent is
#: still 4 x 28 x 28 for 224 x 224 images, as the paper's
SMALL_AUTOENCODER = {"autoencoder_channels": 8, "autoencoder_res_blocks": 1, "autoencoder_norm_groups": 4}
AUTOENCODER_TRAINING = {"autoencoder_learning_rate": 1e-3, "autoencoder_batch_size": 4, "autoencoder_val_interval": 1}
#: the paper's mapping model, loss, optimiser and batch; no warm-up for the short budget (the paper: 5 of 1000 epochs,
#: the first at learning rate 0)
GMS_TRAINING = {"warmup_epochs": 0, "val_interval": 1, "seed": 0}
UNET_LEARNING_RATE = 1e-3


def _work(work_dir: str, dataset: str) -> Path:
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset '{dataset}'; expected one of {sorted(DATASETS)}")
    return Path(work_dir) / dataset


def _overrides(work: Path, **extra: Any) -> dict[str, Any]:
    """The bundle's configs on the benchmark's data, writing under ``work`` (never into the bundle)."""
    return {
        "bundle_root": str(BUNDLE),
        "dataset_dir": str(work),
        "datalist": str(work / "datalist.json"),
        "ckpt_dir": str(work / "models"),
        "output_dir": str(work / "eval"),
        **SMALL_AUTOENCODER,
        **extra,
    }


def _run(configs: list[str], work: Path, seconds: float | None = None, **extra: Any) -> dict[str, Any]:
    return timed_run(BUNDLE, configs, seconds=seconds, **_overrides(work, **extra))


def prepare(dataset: str = "busi", work_dir: str = str(DEFAULT_WORK_DIR), seed: int = 0) -> dict[str, int]:
    """Seeded datalist of ``dataset``: 10% validation, 20% test; BUSI's near-duplicates grouped (corr. > 0.9)."""
    work, data = _work(work_dir, dataset), DATASETS[dataset]
    work.mkdir(parents=True, exist_ok=True)
    group_file = None
    if dataset == "busi":
        images = sorted((data / "images").glob("*.png"))
        thumbs = np.stack([thumbnail(np.asarray(Image.open(p).convert("L"))) for p in images])
        groups = near_duplicate_groups(thumbs)
        group_file = work / "groups.csv"
        with open(group_file, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["output_name", "patient_id"])
            writer.writerows((p.name, f"group_{g}") for p, g in zip(images, groups, strict=True))
    datalist = prepare_folder(
        output=str(work / "datalist.json"),
        images_dir=str(data / "images"),
        masks_dir=str(data / "masks"),
        val_fraction=0.1,
        test_fraction=0.2,
        seed=seed,
        group_file=str(group_file) if group_file else None,
        relative_to=str(work),
        overwrite=True,
    )
    return {section: len(entries) for section, entries in datalist.items()}


def train_autoencoder(
    dataset: str = "busi", work_dir: str = str(DEFAULT_WORK_DIR), epochs: int = 8, seconds: float | None = None
) -> dict:
    """Train the small autoencoder on the training images and masks; keep the best validation mask Dice.

    ``seconds``: a wall-clock budget (``StopAtDeadline``: the run stops before passing it, within an epoch if
    need be).
    """
    work = _work(work_dir, dataset)
    configs = ["train.json", "train_autoencoder.json"]
    return _run(configs, work, seconds, autoencoder_epochs=epochs, **AUTOENCODER_TRAINING)


def train_gms(
    dataset: str = "busi", work_dir: str = str(DEFAULT_WORK_DIR), epochs: int = 5, seconds: float | None = None
) -> dict:
    """Train the latent mapping model with the paper's loss and the latent cache; keep the best validation Dice.

    ``seconds``: a wall-clock budget (``StopAtDeadline``: the run stops before passing it, within an epoch if
    need be). The
    cosine schedule is sized by ``epochs``: with a budget and many more ``epochs`` than fit, the learning rate stays
    near its initial value.
    """
    return _run(["train.json"], _work(work_dir, dataset), seconds, max_epochs=epochs, **GMS_TRAINING)


def cache_speed(dataset: str = "busi", work_dir: str = str(DEFAULT_WORK_DIR)) -> dict[str, dict[str, float]]:
    """Seconds of one training epoch with and without the latent cache (paper's loss; latent term only).

    The cache's one-off cost (encoding ``cached_variants`` augmented copies of every image) is reported apart.
    Checkpoints go to a scratch folder, so the trained models are not touched.
    """
    work = _work(work_dir, dataset)
    results: dict[str, dict[str, float]] = {}
    for loss, dice_weight in (("paper_loss", 1.0), ("latent_only", 0.0)):
        for cache in (True, False):
            run = _run(
                ["train.json"],
                work,
                ckpt_dir=str(work / "speed_models"),
                output_dir=str(work / "speed_eval"),
                autoencoder_path=str(work / "models" / "autoencoder.pt"),
                max_epochs=1,
                latent_cache=cache,
                dice_weight=dice_weight,
                overwrite=True,  # each timing run replaces the previous one's throw-away checkpoints
                **GMS_TRAINING | {"val_interval": 10},
            )
            results[f"{loss}_{'cache' if cache else 'no_cache'}"] = {
                "epoch_seconds": run["epoch_seconds"][0],
                "setup_seconds": run["setup_seconds"],
            }
        results[f"{loss}_speedup"] = {
            "factor": results[f"{loss}_no_cache"]["epoch_seconds"] / results[f"{loss}_cache"]["epoch_seconds"]
        }
    return results


def _parser(work: Path, configs: tuple[str, ...] = ("train.json",)) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / c) for c in configs])
    parser.update(_overrides(work))
    return parser


def _transforms(parser: ConfigParser) -> tuple[Compose, Compose]:
    """The bundle's own training (augmented) and test transforms, on images (no latents)."""
    typed = [EnsureTyped(keys=["image", "label"], track_meta=False)]
    load, augment, scale = (parser.get_parsed_content(k) for k in ("load", "augmentation", "scale"))
    return Compose(load + augment + scale + typed), Compose(load + scale + typed)


def _unet() -> BasicUNet:
    return BasicUNet(spatial_dims=2, in_channels=3, out_channels=1)


def _scores(predict: Any, items: list[dict]) -> dict[str, float]:
    """Per-image Dice and IoU (mean and sample std) of binary predictions at the transforms' size (224x224)."""
    dice, iou = DiceMetric(include_background=True), MeanIoU(include_background=True)
    start = time.perf_counter()
    with torch.no_grad():
        for item in items:
            pred = predict(item["image"][None])
            dice(pred, item["label"][None])
            iou(pred, item["label"][None])
    seconds = (time.perf_counter() - start) / len(items)
    per_dice, per_iou = dice.get_buffer().flatten(), iou.get_buffer().flatten()
    return {
        "dice": float(per_dice.nanmean()),
        "dice_std": float(np.nanstd(per_dice.numpy(), ddof=1)),
        "iou": float(per_iou.nanmean()),
        "iou_std": float(np.nanstd(per_iou.numpy(), ddof=1)),
        "seconds_per_image": seconds,
        "images": len(items),
    }


def train_unet(dataset: str = "busi", work_dir: str = str(DEFAULT_WORK_DIR), seconds: float = 600.0) -> dict:
    """Train a BasicUNet for ``seconds`` of wall time (``StopAtDeadline``).

    Validation Dice after every epoch picks the weights kept (``models/unet.pt``), as for GMS.
    """
    work = _work(work_dir, dataset)
    set_determinism(seed=0)
    parser = _parser(work)
    train_transform, test_transform = _transforms(parser)
    datalist = work / "datalist.json"
    train = CacheDataset(load_datalist(datalist, "training", keys=["image", "label"]), train_transform, num_workers=0)
    val_items = [test_transform(i) for i in load_datalist(datalist, "validation", keys=["image", "label"])]
    net = _unet()
    optimizer = torch.optim.Adam(net.parameters(), lr=UNET_LEARNING_RATE)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=10_000,
        train_data_loader=DataLoader(train, batch_size=8, shuffle=True, num_workers=0),
        network=net,
        optimizer=optimizer,
        loss_function=DiceCELoss(sigmoid=True),
    )
    start, best = time.perf_counter(), {"dice": -1.0, "epoch": 0, "state": None}

    def validate(engine: Engine) -> None:
        net.eval()
        score = _scores(lambda x: (net(x) > 0).float(), val_items)["dice"]
        net.train()
        if score > best["dice"]:
            best.update(dice=score, epoch=engine.state.epoch, state=copy.deepcopy(net.state_dict()))

    trainer.add_event_handler(Events.EPOCH_COMPLETED, validate)
    StopAtDeadline(seconds).attach(trainer)
    trainer.run()
    torch.save(best["state"], work / "models" / "unet.pt")
    return {
        "seconds": time.perf_counter() - start,
        "epochs": trainer.state.epoch,
        "iterations": trainer.state.iteration,
        "best_validation_dice": best["dice"],
        "best_epoch": best["epoch"],
    }


def _trainable(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def evaluate(dataset: str = "busi", work_dir: str = str(DEFAULT_WORK_DIR)) -> dict[str, dict[str, float]]:
    """Dice/IoU per test image at 224x224 of GMS, of the UNet and of the autoencoder's own mask reconstructions."""
    work = _work(work_dir, dataset)
    parser = _parser(work)
    _, test_transform = _transforms(parser)
    items = [test_transform(i) for i in load_datalist(work / "datalist.json", "test", keys=["image", "label"])]
    codec = parser.get_parsed_content("codec")
    network = parser.get_parsed_content("network")
    state = torch.load(work / "models" / "model.pt", map_location="cpu", weights_only=True)
    network.load_state_dict(state.get("model", state))
    network.eval()
    inferer = parser.get_parsed_content("validate#inferer")
    unet = _unet()
    unet.load_state_dict(torch.load(work / "models" / "unet.pt", map_location="cpu", weights_only=True))
    unet.eval()
    masks = [{"image": item["label"], "label": item["label"]} for item in items]
    return {
        "gms": {**_scores(lambda x: (inferer(x, network) > 0.5).float(), items), "trainable": _trainable(network)},
        "unet": {**_scores(lambda x: (unet(x) > 0).float(), items), "trainable": _trainable(unet)},
        "autoencoder_mask_reconstruction": {
            **_scores(lambda x: (codec.decode_masks(codec.encode_masks(x)) > 0.5).float(), masks),
            "parameters": sum(p.numel() for p in codec.autoencoder.parameters()),
        },
    }


def _markdown(results: dict) -> str:
    lines = [
        "| data set | model | trainable params | training wall time (s) | Dice (mean ± std) | IoU (mean ± std) |",
        "|---|---|---|---|---|---|",
    ]
    for dataset, r in results["datasets"].items():
        gms_seconds = r["train_autoencoder"]["seconds"] + r["train_gms"]["seconds"]
        for name, seconds in (("GMS", gms_seconds), ("BasicUNet", r["train_unet"]["seconds"])):
            s = r["evaluate"]["gms" if name == "GMS" else "unet"]
            lines.append(
                f"| {dataset} | {name} | {s['trainable']:,} | {seconds:.0f} | {100 * s['dice']:.2f} ± "
                f"{100 * s['dice_std']:.2f} | {100 * s['iou']:.2f} ± {100 * s['iou_std']:.2f} |"
            )
        ae = r["evaluate"]["autoencoder_mask_reconstruction"]
        lines.append(
            f"| {dataset} | autoencoder mask reconstruction (ceiling) | - | - | {100 * ae['dice']:.2f} | "
            f"{100 * ae['iou']:.2f} |"
        )
    speed = results.get("cache_speed")
    if speed:
        lines += ["", "| loss | s/epoch with cache | s/epoch without | speed-up |", "|---|---|---|---|"]
        for loss in ("paper_loss", "latent_only"):
            lines.append(
                f"| {loss} | {speed[f'{loss}_cache']['epoch_seconds']:.1f} | "
                f"{speed[f'{loss}_no_cache']['epoch_seconds']:.1f} | {speed[f'{loss}_speedup']['factor']:.2f}x |"
            )
    return "\n".join(lines) + "\n"


def all_steps(
    work_dir: str = str(DEFAULT_WORK_DIR),
    datasets: tuple[str, ...] = ("busi", "kvasir"),
    autoencoder_epochs: int = 8,
    gms_epochs: int = 5,
) -> dict:
    """Every step for every data set; the UNet gets the autoencoder's and GMS's wall time together."""
    results: dict[str, Any] = {"datasets": {}}
    for dataset in datasets:
        r: dict[str, Any] = {"split": prepare(dataset, work_dir)}
        r["train_autoencoder"] = train_autoencoder(dataset, work_dir, autoencoder_epochs)
        r["train_gms"] = train_gms(dataset, work_dir, gms_epochs)
        budget = r["train_autoencoder"]["seconds"] + r["train_gms"]["seconds"]
        r["train_unet"] = train_unet(dataset, work_dir, budget)
        r["evaluate"] = evaluate(dataset, work_dir)
        results["datasets"][dataset] = r
        atomic_write_json(Path(work_dir) / "results.json", results)
    results["cache_speed"] = cache_speed(datasets[0], work_dir)
    atomic_write_json(Path(work_dir) / "results.json", results)
    atomic_write_text(Path(work_dir) / "results.md", _markdown(results))
    return results


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    commands = {
        "all": all_steps,
        "prepare": prepare,
        "train_autoencoder": train_autoencoder,
        "train_gms": train_gms,
        "train_unet": train_unet,
        "evaluate": evaluate,
        "cache_speed": cache_speed,
    }
    fire.Fire(commands, name="benchmark_gms", serialize=lambda _: None)


if __name__ == "__main__":
    main()
