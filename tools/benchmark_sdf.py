"""Benchmark of the score-based SDF segmentation bundle on real H&E nuclei tiles, reproducing its docs/README.md.

Real data is read where it lies (by default ``../shared/data/monuseg_nuclei_HE``: 60 tiles of 256x256 from 30
patients) and never copied; every output goes to ``--work_dir``. One command runs it all, in order::

    python -m tools.benchmark_sdf all --epochs 40

1. ``prepare``: a datalist with a seeded split by patient (TCGA case id).
2. ``train_score``: the bundle's own train.json (VE SDE) with small widths for ``epochs`` epochs (21 iterations of
   8 random 128x128 patches each on this split).
3. ``train_unet``: a supervised MONAI ``BasicUNet`` on the same patches, inputs and number of iterations.
4. ``evaluate``: on the test tiles, Dice/IoU/HD95 per tile and seconds per tile of the predictor-corrector sampler
   (N=200, M=1: 399 network evaluations) and of the DPM-Solver++ ODE sampler at 5, 10 and 20 evaluations, all with
   the same trained network and the same windows; the BasicUNet; and the AUROC of the uncertainty map (K samples)
   for the wrong pixels.

Writes ``results.json`` and ``results.md`` in ``--work_dir``. Run it alone on the machine: the times are wall times.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fire
import torch
from monai.bundle import ConfigParser, ConfigWorkflow
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedTrainer
from monai.inferers import SlidingWindowInferer
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric, HausdorffDistanceMetric, MeanIoU, compute_roc_auc
from monai.networks.nets import BasicUNet
from monai.transforms import Compose, EnsureTyped, RandFlipd, RandSpatialCropSamplesd, SelectItemsd
from monai.utils import set_determinism

from common.data.datalist import load_datalist
from common.diffusion import SDFSamplingInferer
from common.io import atomic_write_json, atomic_write_text
from common.transforms import SDFSamplesToMaskd
from tools.bundle_runs import StopAtDeadline
from tools.prepare_folder import prepare_folder

__all__ = ["all_steps", "evaluate", "prepare", "train_score", "train_unet"]

logger = logging.getLogger("tools.benchmark_sdf")

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLE = REPO_ROOT / "bundles" / "sdf_score_segmentation"
SHARED_DATA = REPO_ROOT.parent / "shared" / "data" / "monuseg_nuclei_HE"
DEFAULT_WORK_DIR = REPO_ROOT / "results" / "sdf_monuseg"

#: small widths for CPU (the paper's are dim 128, 4 heads of 32 channels: 64 M parameters)
SMALL_NETWORK = {
    "dim": 16,
    "fusion_channels": 8,
    "channel_mults": [1, 2, 4, 4],
    "attention_heads": 2,
    "attention_head_channels": 16,
}
#: 2 tiles x 4 random patches = 8 patches a step (the paper: 32); a higher learning rate than the paper's 1e-4 for the
#: short CPU budget
TRAINING = {"batch_size": 2, "patches_per_image": 4, "learning_rate": 3e-4, "val_interval": 10, "seed": 0}
ODE_STEPS = (5, 10, 20)


def _bundle_parser(work_dir: Path, overrides: dict | None = None) -> ConfigParser:
    """The bundle's train.json with the benchmark's data, outputs and sizes."""
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    parser.update({**_data_overrides(work_dir), **SMALL_NETWORK, **TRAINING, **(overrides or {})})
    return parser


def _data_overrides(work_dir: Path) -> dict[str, str]:
    return {
        "bundle_root": str(BUNDLE),
        "dataset_dir": str(work_dir),
        "datalist": str(work_dir / "datalist.json"),
        "ckpt_dir": str(work_dir / "score_models"),
        "output_dir": str(work_dir / "score_eval"),
    }


def prepare(data_dir: str = str(SHARED_DATA), work_dir: str = str(DEFAULT_WORK_DIR), seed: int = 0) -> dict[str, int]:
    """Datalist of the nuclei tiles, split by patient: 10% validation, 20% test (of 30 patients: 3 and 6)."""
    data = Path(data_dir)
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    datalist = prepare_folder(
        output=str(Path(work_dir) / "datalist.json"),
        images_dir=str(data / "images"),
        masks_dir=str(data / "masks"),
        val_fraction=0.1,
        test_fraction=0.2,
        seed=seed,
        group_regex=r"^(TCGA-\w\w-\w{4})",
        relative_to=str(work_dir),
        overwrite=True,
    )
    return {section: len(entries) for section, entries in datalist.items()}


def train_score(
    work_dir: str = str(DEFAULT_WORK_DIR), epochs: int = 40, resume: bool = False, seconds: float | None = None
) -> dict:
    """Train the bundle's VE score model with small widths for ``epochs`` epochs (``resume``: continue the last run).

    ``seconds``: a wall-clock budget (``StopAtDeadline``: the run stops before passing it, within an epoch if
    need be).
    """
    work = Path(work_dir)
    workflow = ConfigWorkflow(
        config_file=str(BUNDLE / "configs" / "train.json"),
        workflow_type="train",
        logging_file=str(BUNDLE / "configs" / "logging.conf"),
        meta_file=str(BUNDLE / "configs" / "metadata.json"),
        max_epochs=epochs,
        resume=resume,
        **_data_overrides(work),
        **SMALL_NETWORK,
        **TRAINING,
    )
    workflow.initialize()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    if seconds is not None:
        StopAtDeadline(seconds).attach(trainer)
    start = time.perf_counter()
    workflow.run()
    workflow.finalize()
    return {
        "seconds": time.perf_counter() - start,
        "epochs": trainer.state.epoch,
        "iterations": trainer.state.iteration,
    }


def _unet_transforms(parser: ConfigParser) -> tuple[Compose, Compose]:
    """The bundle's loading (grey image in [-1, 1], checked binary mask) with crops of image and mask."""
    load = parser.get_parsed_content("load")
    keys = ["image", "label"]
    crop = RandSpatialCropSamplesd(
        keys=keys, roi_size=parser["patch_size"], num_samples=parser["patches_per_image"], random_size=False
    )
    flips = [RandFlipd(keys=keys, spatial_axis=axis, prob=0.5) for axis in (0, 1)]
    finish = [SelectItemsd(keys=keys), EnsureTyped(keys=keys, track_meta=False)]
    return Compose([*load, crop, *flips, *finish]), Compose([*load, *finish])


def _unet() -> BasicUNet:
    return BasicUNet(spatial_dims=2, in_channels=1, out_channels=1)


def train_unet(work_dir: str = str(DEFAULT_WORK_DIR), epochs: int = 40, seconds: float | None = None) -> dict:
    """Train a supervised BasicUNet (Dice + BCE, Adam 1e-3) on the same patches for ``epochs`` epochs.

    ``seconds``: a wall-clock budget (``StopAtDeadline``: the run stops before passing it, within an epoch if
    need be).
    """
    work = Path(work_dir)
    set_determinism(TRAINING["seed"])
    parser = _bundle_parser(work)
    train_transform, _ = _unet_transforms(parser)
    items = load_datalist(work / "datalist.json", "training", keys=["image", "label"])
    loader = DataLoader(Dataset(items, train_transform), batch_size=TRAINING["batch_size"], shuffle=True)
    network = _unet()
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=epochs,
        train_data_loader=loader,
        network=network,
        optimizer=torch.optim.Adam(network.parameters(), 1e-3),
        loss_function=DiceCELoss(sigmoid=True),
    )
    if seconds is not None:
        StopAtDeadline(seconds).attach(trainer)
    start = time.perf_counter()
    trainer.run()
    seconds = time.perf_counter() - start
    (work / "unet_models").mkdir(exist_ok=True)
    torch.save(network.state_dict(), work / "unet_models" / "model.pt")
    return {"seconds": seconds, "epochs": trainer.state.epoch, "iterations": trainer.state.iteration}


def _checkpoint(ckpt_dir: Path) -> dict:
    """Weights of the best validation checkpoint (model.pt), or of the last one if no validation ran."""
    path = ckpt_dir / "model.pt"
    if not path.is_file():
        path = ckpt_dir / "model_final.pt"
        logger.warning("no validated model.pt in %s: evaluating the last weights, %s", ckpt_dir, path.name)
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("model", state)


def _test_items(work: Path, parser: ConfigParser) -> list[dict]:
    _, test_transform = _unet_transforms(parser)
    items = load_datalist(work / "datalist.json", "test", keys=["image", "label"])
    return [test_transform(item) for item in items]


def _scores(preds: list[torch.Tensor], labels: list[torch.Tensor]) -> dict[str, float]:
    """Mean per-tile Dice, IoU and HD95 (pixels), and Dice pooled over all tiles (the original's way)."""
    dice, iou, hd95 = DiceMetric(), MeanIoU(), HausdorffDistanceMetric(percentile=95)
    for pred, label in zip(preds, labels, strict=True):
        for metric in (dice, iou, hd95):
            metric(pred[None], label[None])
    all_pred = torch.cat([p.flatten() for p in preds])
    all_label = torch.cat([lbl.flatten() for lbl in labels])
    pooled = 2 * (all_pred * all_label).sum() / (all_pred.sum() + all_label.sum())
    return {
        "dice": float(dice.aggregate()),
        "iou": float(iou.aggregate()),
        "hd95": float(hd95.aggregate()),
        "dice_pooled": float(pooled),
    }


def _run_segmenter(
    items: list[dict], segment: Callable[[torch.Tensor], dict[str, torch.Tensor]]
) -> tuple[dict[str, float], list[dict[str, torch.Tensor]]]:
    outputs, start = [], time.perf_counter()
    for item in items:
        outputs.append(segment(item["image"][None]))
    seconds = (time.perf_counter() - start) / len(items)
    scores = _scores([o["pred"] for o in outputs], [item["label"] for item in items])
    return {**scores, "seconds_per_tile": seconds, "nfe": int(outputs[0].get("nfe", 1))}, outputs


def _score_segmenter(network: torch.nn.Module, parser: ConfigParser, **kwargs: Any) -> Callable:
    inferer = SDFSamplingInferer(
        process=parser.get_parsed_content("sde_def"),
        threshold=parser["foreground_threshold"],
        roi_size=parser["patch_size"],
        overlap=0.0,
        sw_batch_size=4,
        seed=0,
        **kwargs,
    )
    summarise = SDFSamplesToMaskd(keys="pred", threshold=parser["foreground_threshold"])

    def segment(image: torch.Tensor) -> dict[str, torch.Tensor]:
        summary = inferer(image, network)
        out = summarise({"pred": summary[0]})
        out["nfe"] = inferer.last_nfe
        return out

    return segment


def _uncertainty_auroc(items: list[dict], outputs: list[dict[str, torch.Tensor]]) -> float:
    """AUROC of the uncertainty map for separating wrong from right pixels, over all test tiles."""
    errors = torch.cat([(o["pred"] != item["label"]).flatten() for o, item in zip(outputs, items, strict=True)])
    uncertainty = torch.cat([o["uncertainty"].flatten() for o in outputs])
    return float(compute_roc_auc(uncertainty.float(), errors.float()))


def evaluate(work_dir: str = str(DEFAULT_WORK_DIR), num_samples: int = 8, pc_steps: int = 200) -> dict:
    """Dice/IoU/HD95 and seconds per tile of each sampler and of the BasicUNet, plus the uncertainty AUROC."""
    work = Path(work_dir)
    parser = _bundle_parser(work)
    items = _test_items(work, parser)
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(_checkpoint(work / "score_models"))
    network.eval()
    results: dict[str, Any] = {"test_tiles": len(items)}
    for steps in ODE_STEPS:
        results[f"ode_{steps}"], _ = _run_segmenter(
            items, _score_segmenter(network, parser, sampler="ode", num_steps=steps)
        )
        logger.info("ode %d: %s", steps, results[f"ode_{steps}"])
    pc = _score_segmenter(network, parser, sampler="pc", num_steps=pc_steps)
    results[f"pc_{pc_steps}"], _ = _run_segmenter(items, pc)
    logger.info("pc: %s", results[f"pc_{pc_steps}"])
    segment = _score_segmenter(network, parser, sampler="ode", num_steps=10, num_samples=num_samples)
    results[f"ode_10_k{num_samples}"], outputs = _run_segmenter(items, segment)
    results[f"ode_10_k{num_samples}"]["uncertainty_auroc"] = _uncertainty_auroc(items, outputs)
    logger.info("ode 10 x %d samples: %s", num_samples, results[f"ode_10_k{num_samples}"])
    unet = _unet()
    unet.load_state_dict(torch.load(work / "unet_models" / "model.pt", map_location="cpu", weights_only=True))
    unet.eval()
    window = SlidingWindowInferer(roi_size=parser["patch_size"], sw_batch_size=4, overlap=0.0)

    def segment_unet(image: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return {"pred": (window(image, unet)[0] > 0).float()}

    results["basic_unet"], _ = _run_segmenter(items, segment_unet)
    logger.info("basic unet: %s", results["basic_unet"])
    return results


def _markdown(results: dict) -> str:
    rows = [
        "| method | NFE | Dice | IoU | HD95 (px) | Dice pooled | s / tile |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results["evaluate"].items():
        if not isinstance(r, dict):
            continue
        rows.append(
            f"| {name} | {r['nfe']} | {r['dice']:.3f} | {r['iou']:.3f} | {r['hd95']:.1f} | {r['dice_pooled']:.3f} "
            f"| {r['seconds_per_tile']:.1f} |"
        )
    auroc = {
        k: r["uncertainty_auroc"]
        for k, r in results["evaluate"].items()
        if isinstance(r, dict) and "uncertainty_auroc" in r
    }
    training = {k: results[k] for k in ("train_score", "train_unet") if k in results}
    return "\n".join([*rows, "", f"uncertainty AUROC for wrong pixels: {auroc}", f"training: {training}", ""])


def all_steps(
    data_dir: str = str(SHARED_DATA),
    work_dir: str = str(DEFAULT_WORK_DIR),
    epochs: int = 40,
    num_samples: int = 8,
    pc_steps: int = 200,
) -> dict:
    """prepare, train_score, train_unet, evaluate; writes results.json and results.md in ``work_dir``."""
    work = Path(work_dir)
    prepare(data_dir, work_dir)
    results: dict[str, Any] = {"epochs": epochs, "network": SMALL_NETWORK, "training": TRAINING}
    results["train_score"] = train_score(work_dir, epochs)
    atomic_write_json(work / "results.json", results)
    results["train_unet"] = train_unet(work_dir, epochs)
    atomic_write_json(work / "results.json", results)
    results["evaluate"] = evaluate(work_dir, num_samples, pc_steps)
    atomic_write_json(work / "results.json", results)
    atomic_write_text(work / "results.md", _markdown(results))
    return results


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    fire.Fire(
        {
            "all": all_steps,
            "prepare": prepare,
            "train_score": train_score,
            "train_unet": train_unet,
            "evaluate": evaluate,
        }
    )


if __name__ == "__main__":
    main()
