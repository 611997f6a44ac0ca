"""Benchmarks of the Post-DAE bundle on real masks, reproducing the numbers of its docs/README.md.

Real data is read from where it lies (by default ``../shared/data``) and never copied; every output goes to
``--work_dir``. Two commands::

    # DAE trained on real chest X-ray lung masks; Dice/HD95 of corrupted vs refined test masks per corruption kind
    python -m tools.benchmark_postdae cxr --epochs 25
    # the paper's claim: masks of a weak segmenter (small BasicUNet) on BUSI, raw vs refined by a DAE of BUSI masks
    python -m tools.benchmark_postdae segmenter --unet_epochs 20 --dae_epochs 40
    # short runs at 128x128 comparing training recipes (does the DAE learn to use its input at all?)
    python -m tools.benchmark_postdae recipes

Each writes ``results.json`` and ``results.md`` in its work folder.
"""

from __future__ import annotations

import csv
import glob
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import fire
import numpy as np
import torch
from monai.bundle import ConfigWorkflow
from monai.data import DataLoader, Dataset
from monai.inferers import SimpleInferer
from monai.losses import DiceCELoss, DiceLoss
from monai.networks.nets import BasicUNet
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    LoadImage,
    LoadImaged,
    RandFlipd,
    Resize,
    Resized,
    ScaleIntensityd,
)
from monai.utils import set_determinism

from common.data.datalist import load_datalist
from common.io import atomic_write_json, atomic_write_text
from common.networks import PostDAE
from common.transforms import CORRUPTION_KINDS, EnsureBinaryMaskd, RandMaskCorruption, SaveMaskd
from tools.bundle_runs import StopAtDeadline
from tools.prepare_folder import prepare_folder

__all__ = ["cxr", "recipes", "segmenter"]

logger = logging.getLogger("tools.benchmark_postdae")

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLE = REPO_ROOT / "bundles" / "postdae_mask_refinement"
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
REPO_KINDS = ("edge_swap", "tile_deletion", "disc_addition")


def _workflow(
    configs: Sequence[str], work_dir: Path, dataset_dir: Path, datalist: Path, overrides: dict
) -> ConfigWorkflow:
    """The bundle's workflow over ``configs`` with every output under ``work_dir``."""
    return ConfigWorkflow(
        config_file=[str(BUNDLE / "configs" / name) for name in configs],
        workflow_type="train",
        logging_file=str(BUNDLE / "configs" / "logging.conf"),
        meta_file=str(BUNDLE / "configs" / "metadata.json"),
        bundle_root=str(BUNDLE),
        ckpt_dir=str(work_dir / "models"),
        output_dir=str(work_dir / "eval"),
        dataset_dir=str(dataset_dir),
        datalist=str(datalist),
        **overrides,
    )


def _train_dae(
    work_dir: Path, dataset_dir: Path, datalist: Path, overrides: dict, seconds: float | None = None
) -> dict[str, float | int | None]:
    """Train the bundle's DAE (``max_epochs`` in ``overrides``); return the training seconds and the epochs run.

    ``seconds``: a wall-clock budget (``StopAtDeadline``: the run stops before passing it, within an epoch if
    need be). A work
    folder that already holds a finished training (``models/model_final.pt``) is reused (None returned), so an
    evaluation can be repeated without retraining (seconds and epochs are then None); delete the folder to train
    again.
    """
    if (work_dir / "models" / "model_final.pt").is_file():
        logger.info("reusing the DAE trained in %s", work_dir / "models")
        return {"seconds": None, "epochs": None}
    wf = _workflow(("train.json",), work_dir, dataset_dir, datalist, overrides)
    wf.initialize()
    trainer = wf.parser.get_parsed_content("train#trainer")
    if seconds is not None:
        StopAtDeadline(seconds).attach(trainer)
    start = time.perf_counter()
    wf.run()
    wf.finalize()
    seconds = time.perf_counter() - start
    logger.info("DAE trained %d epochs in %.0f s", trainer.state.epoch, seconds)
    return {"seconds": seconds, "epochs": trainer.state.epoch}


def _evaluate(work_dir: Path, name: str, dataset_dir: Path, datalist: Path, overrides: dict) -> dict[str, float]:
    """Run the bundle's evaluate.json; return its mean metrics (raw_*, refined_*) and per-image NaN counts."""
    eval_dir = work_dir / "eval" / name
    wf = _workflow(
        ("train.json", "evaluate.json"), work_dir, dataset_dir, datalist, {"eval_dir": str(eval_dir), **overrides}
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    results: dict[str, float] = {}
    for metric in ("raw_dice", "refined_dice", "raw_hd95", "refined_hd95"):
        with open(eval_dir / f"{metric}_raw.csv") as f:
            values = np.array([float(row["mean"]) for row in csv.DictReader(f)])
        results[metric] = float(np.nanmean(values))
        results[f"{metric}_undefined"] = int(np.sum(~np.isfinite(values)))
    results["images"] = len(values)
    return results


#: The reference implementation's recipe: Sigmoid between decoder stages, no ReLU after the bottleneck, soft Dice
#: loss, Adam 1e-4 (the bundle's defaults differ, see its docs/README.md).
REFERENCE_RECIPE = {
    "decoder_activation": "sigmoid",
    "bottleneck_activation": False,
    "loss#_target_": "DiceLoss",
    "learning_rate": 1e-4,
}


def _variant(reference: bool) -> dict[str, object]:
    """Overrides of the bundle's defaults: none, or the reference implementation's recipe."""
    return dict(REFERENCE_RECIPE) if reference else {}


def _only(kinds: Sequence[str], prob: float = 1.0) -> dict[str, float]:
    """Corruption overrides applying exactly ``kinds``."""
    return {f"corruption#{k}_prob": (prob if k in kinds else 0.0) for k in CORRUPTION_KINDS}


def _table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def _write_results(work_dir: Path, results: dict, markdown: str) -> None:
    atomic_write_json(work_dir / "results.json", results)
    atomic_write_text(work_dir / "results.md", markdown + "\n")
    logger.info("results in %s:\n%s", work_dir, markdown)


def _prepare(work_dir: Path, **kwargs: Any) -> Path:
    datalist = work_dir / "datalist.json"
    if not datalist.exists():
        prepare_folder(output=str(datalist), **kwargs)
    return datalist


def cxr(
    data_dir: str = str(SHARED_DATA / "cxr_lung_masks"),
    work_dir: str = "results/postdae_cxr",
    epochs: int = 25,
    image_size: int = 256,
    reference: bool = False,
    val_interval: int = 2,
    seed: int = 0,
    overrides: dict | None = None,
    seconds: float | None = None,
    corruptions: str | Sequence[str] = "all",
) -> dict:
    """Train the DAE on real CXR lung masks (split by patient) and report corrupted vs refined test masks per kind.

    The DAE trains with the reference repository's three corruptions always on and the paper's five kinds each with
    probability 0.25; each kind is then evaluated alone (probability 1) on the same test masks. ``reference`` trains
    with the reference implementation's recipe instead of the bundle's defaults. ``overrides``: further config
    overrides for training and evaluation (smaller sizes, another ``network_def``). ``seconds``: a wall-clock
    budget for the training (``StopAtDeadline``: it stops before passing it, within an epoch if need be).
    ``corruptions``: the evaluations to run, "all" or some of "reference three" and the kinds' names.
    """
    work, data = Path(work_dir).resolve(), Path(data_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    datalist = _prepare(
        work, masks_dir=str(data / "masks"), group_file=str(data / "files.txt"), relative_to=str(data), seed=seed
    )
    size = {"image_size": [image_size, image_size], "seed": seed, **_variant(reference), **(overrides or {})}
    schedule = {"max_epochs": epochs, "val_interval": val_interval}
    training_corruption = {**_only(REPO_KINDS), **{f"corruption#{k}_prob": 0.25 for k in CORRUPTION_KINDS[3:]}}
    evaluations = {"reference three": REPO_KINDS, **{k: (k,) for k in CORRUPTION_KINDS}}
    chosen = [corruptions] if isinstance(corruptions, str) else list(corruptions)
    if chosen == ["all"]:
        chosen = list(evaluations)
    unknown = [c for c in chosen if c not in evaluations]
    if unknown:
        raise ValueError(f"--corruptions: unknown {unknown}; choose 'all' or from {list(evaluations)}")
    trained = _train_dae(work, data, datalist, {**size, **schedule, **training_corruption}, seconds)
    rows = []
    for name in chosen:
        kinds = evaluations[name]
        metrics = _evaluate(work, name.replace(" ", "_"), data, datalist, {**size, **_only(kinds)})
        rows.append({"corruption": name, **metrics})
    columns = ["corruption", "images", "raw_dice", "refined_dice", "raw_hd95", "refined_hd95"]
    results = {
        "train_seconds": trained["seconds"],
        "epochs": trained["epochs"],
        "max_epochs": epochs,
        "image_size": image_size,
        "reference_recipe": reference,
        "rows": rows,
    }
    _write_results(work, results, _table(rows, columns))
    return results


def _segmenter_transforms(size: int, train: bool) -> Compose:
    transforms = [
        LoadImaged(keys=["image", "label"], image_only=True),
        EnsureChannelFirstd(keys=["image", "label"]),
        ScaleIntensityd(keys="image"),
        EnsureBinaryMaskd(keys="label"),
        Resized(keys="image", spatial_size=(size, size), mode="bilinear"),
        Resized(keys="label", spatial_size=(size, size), mode="nearest"),
    ]
    if train:
        transforms.append(RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=1))
    return Compose(transforms)


def _train_weak_unet(items: list[dict], size: int, epochs: int, seed: int) -> BasicUNet:
    """A deliberately weak segmenter: a small BasicUNet trained briefly (the paper post-processes any segmenter)."""
    set_determinism(seed=seed)
    net = BasicUNet(spatial_dims=2, in_channels=1, out_channels=1, features=(8, 8, 16, 32, 64, 8))
    loader = DataLoader(Dataset(items, _segmenter_transforms(size, train=True)), batch_size=8, shuffle=True)
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    loss_function = DiceCELoss(sigmoid=True)
    for _ in range(epochs):
        for batch in loader:
            optimizer.zero_grad()
            loss = loss_function(net(batch["image"]), batch["label"])
            loss.backward()
            optimizer.step()
    logger.info("weak BasicUNet trained %d epochs, last loss %.3f", epochs, float(loss))
    return net.eval()


def _predict(net: BasicUNet, items: list[dict], size: int, out_dir: Path) -> list[dict]:
    """Segment ``items``, write each mask at the image's own size as PNG; return (prediction, label) items."""
    preprocessing = _segmenter_transforms(size, train=False)
    load_label = LoadImaged(keys="label", image_only=True, ensure_channel_first=True)
    save = SaveMaskd(keys="pred", output_dir=str(out_dir), postfix="unet", source_key="label")
    pairs = []
    for item in items:
        image = preprocessing(dict(item))["image"]
        label = load_label({"label": item["label"]})["label"]
        with torch.no_grad():
            logits = SimpleInferer()(image[None], net)
        pred = torch.nn.functional.interpolate((torch.sigmoid(logits) > 0.5).float(), size=label.shape[1:])[0]
        saved = save({"pred": label.clone().set_array(pred), "label": label})
        pairs.append({"image": saved["pred_path"], "label": item["label"]})
    return pairs


def segmenter(
    data_dir: str = str(SHARED_DATA / "busi_breast_ultrasound"),
    work_dir: str = "results/postdae_busi",
    unet_epochs: int = 20,
    dae_epochs: int = 40,
    unet_size: int = 128,
    image_size: int = 256,
    reference: bool = False,
    val_interval: int = 2,
    seed: int = 0,
) -> dict:
    """Raw vs Post-DAE-refined masks of a weak segmenter on a seeded test split of an image/mask set."""
    work, data = Path(work_dir).resolve(), Path(data_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    split = _prepare(
        work, images_dir=str(data / "images"), masks_dir=str(data / "masks"), relative_to=str(data), seed=seed
    )
    sections = {s: load_datalist(split, s, base_dir=data) for s in ("training", "validation", "test")}
    start = time.perf_counter()
    net = _train_weak_unet(sections["training"], unet_size, unet_epochs, seed)
    unet_seconds = time.perf_counter() - start
    test_pairs = _predict(net, sections["test"], unet_size, work / "unet_predictions")
    refine_list = work / "refine_datalist.json"
    atomic_write_json(refine_list, {**{s: sections[s] for s in ("training", "validation")}, "test": test_pairs})
    size = {"image_size": [image_size, image_size], "seed": seed, **_variant(reference)}
    schedule = {"max_epochs": dae_epochs, "val_interval": val_interval}
    dae_seconds = _train_dae(work, data, refine_list, {**size, **schedule})["seconds"]
    metrics = _evaluate(work, "unet_refined", data, refine_list, size)
    results = {
        "unet_seconds": unet_seconds,
        "dae_seconds": dae_seconds,
        "dae_epochs": dae_epochs,
        "image_size": image_size,
        "reference_recipe": reference,
        **metrics,
    }
    rows = [
        {
            "masks": "weak BasicUNet",
            "Dice": metrics["raw_dice"],
            "HD95 (px)": metrics["raw_hd95"],
            "empty / HD undefined": metrics["raw_hd95_undefined"],
        },
        {
            "masks": "+ Post-DAE",
            "Dice": metrics["refined_dice"],
            "HD95 (px)": metrics["refined_hd95"],
            "empty / HD undefined": metrics["refined_hd95_undefined"],
        },
    ]
    _write_results(work, results, _table(rows, list(rows[0])))
    return results


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float((2 * (a * b).sum() + 1e-5) / (a.sum() + b.sum() + 1e-5))


def _recipe_run(masks: np.ndarray, recipe: dict, iterations: int, seed: int) -> dict[str, float]:
    """Train one PostDAE recipe on ``masks`` with corruptions scaled to their size; score fixed corrupted inputs."""
    size = masks.shape[-1]
    corruption = RandMaskCorruption(
        edge_swap_kwargs={"num_swaps": 75, "max_distance": 5},
        tile_deletion_kwargs={"patch_size": size // 16, "max_patches": 15},
        disc_addition_kwargs={"radius": 2, "max_discs": 10},
    )
    corruption.set_random_state(seed)
    fixed = np.stack([corruption(m) for m in masks[:16]])  # the scored inputs: up to 16 masks, corrupted once
    n = len(fixed)
    torch.manual_seed(seed)
    net = PostDAE(img_size=(size, size), **recipe["network"])
    optimizer = torch.optim.Adam(net.parameters(), recipe["lr"])
    loss_function = recipe["loss"](sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5)
    rng = np.random.default_rng(seed)
    for _ in range(iterations):
        index = rng.integers(0, len(masks), 8)
        inputs = torch.from_numpy(np.stack([corruption(masks[i]) for i in index]))
        optimizer.zero_grad()
        loss_function(net(inputs), torch.from_numpy(masks[index])).backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 0.5)
        optimizer.step()
    with torch.no_grad():
        pred = (torch.sigmoid(net(torch.from_numpy(fixed))) > 0.5).float().numpy()
    return {
        "raw_dice": float(np.mean([_dice(fixed[i], masks[i]) for i in range(n)])),
        "refined_dice": float(np.mean([_dice(pred[i], masks[i]) for i in range(n)])),
        "pred_vs_pred_dice": float(np.mean([_dice(pred[i], pred[0]) for i in range(1, n)])),
    }


def recipes(
    data_dir: str = str(SHARED_DATA / "cxr_lung_masks"),
    work_dir: str = "results/postdae_recipes",
    iterations: int = 800,
    size: int = 128,
    seed: int = 0,
) -> dict:
    """Which training recipe lets the DAE learn: short runs on CXR masks at ``size``, six recipes.

    ``pred_vs_pred_dice`` is the mean Dice between the outputs for different inputs: close to 1 means the network
    ignores its input (it outputs one fixed shape).
    """
    files = sorted(glob.glob(os.path.join(glob.escape(data_dir), "masks", "*.png")))[:128]
    if not files:
        raise FileNotFoundError(f"no masks/*.png in data_dir '{data_dir}'")
    resize = Resize((size, size), mode="nearest")
    load = LoadImage(image_only=True, ensure_channel_first=True)
    masks = np.stack([np.asarray(resize(load(f))) > 0 for f in files]).astype(np.float32)
    reference, relu = _variant(True), {"decoder_activation": "relu", "bottleneck_activation": True}
    grid = [
        ("reference network, Dice, lr 1e-4", reference, DiceLoss, 1e-4),
        ("reference network, Dice+BCE, lr 1e-3", reference, DiceCELoss, 1e-3),
        ("ReLU decoder, Dice, lr 1e-4", relu, DiceLoss, 1e-4),
        ("ReLU decoder, Dice, lr 1e-3", relu, DiceLoss, 1e-3),
        ("ReLU decoder, Dice+BCE, lr 1e-3 (bundle default)", relu, DiceCELoss, 1e-3),
    ]
    rows = []
    for name, network, loss, lr in grid:
        network = {k: v for k, v in network.items() if k in ("decoder_activation", "bottleneck_activation")}
        metrics = _recipe_run(masks, {"network": network, "loss": loss, "lr": lr}, iterations, seed)
        rows.append({"recipe": name, **metrics})
        logger.info("%s: %s", name, metrics)
    work = Path(work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    results = {"iterations": iterations, "size": size, "rows": rows}
    _write_results(work, results, _table(rows, ["recipe", "raw_dice", "refined_dice", "pred_vs_pred_dice"]))
    return results


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("PYTHONHASHSEED", "0")
    fire.Fire({"cxr": cxr, "segmenter": segmenter, "recipes": recipes})


if __name__ == "__main__":
    main()
