"""Cross-domain evaluation of the GMS bundle (the paper's Table 2): train on one data set, test on another.

A trained bundle's ``models`` folder (``autoencoder.pt`` and ``model.pt``) is evaluated, without retraining, on the
images of another prepared data set, with the bundle's own ``evaluate.json`` (Dice and IoU per image at 224x224).
The paper does not say whether its cross-domain test used the target's test list or the whole target set (GMS issue
#10), so ``sections`` chooses: ``test`` (default) or e.g. ``training,validation,test`` for all of it.

Examples (from the repository root)::

    python -m tools.cross_domain_gms pair --models_dir ~/runs/busi/models --dataset_dir ~/data/bus_prepared \\
        --output_dir ~/runs/busi_to_bus
    python -m tools.cross_domain_gms matrix --runs "{'BUSI': ['~/runs/busi/models', '~/data/busi_prepared'], \\
        'BUS': ['~/runs/bus/models', '~/data/bus_prepared']}" --output_dir ~/runs/cross_domain

``--overrides`` passes config values the models were trained with (e.g. ``"{'autoencoder_channels': 8}"``).
Results are written as ``results.json`` (and ``results.md`` for ``matrix``) in ``--output_dir``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import fire
import numpy as np
from monai.bundle import ConfigWorkflow

from common.data.datalist import load_datalist
from common.data.sources import datalist_path
from common.io import atomic_write_json, atomic_write_text

__all__ = ["main", "matrix", "pair"]

logger = logging.getLogger("tools.cross_domain_gms")

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "gms_latent_segmentation"


def _sections(value: str | Sequence[str]) -> list[str]:
    names = [s.strip() for s in value.split(",")] if isinstance(value, str) else list(value)
    if not names or not all(names):
        raise ValueError(f"sections must name at least one datalist section, got {value!r}")
    return names


def _items(dataset_dir: str, datalist: str, sections: list[str]) -> list[dict]:
    path = datalist_path(dataset_dir, datalist)
    items = [i for s in sections for i in load_datalist(path, s, base_dir=dataset_dir, keys=("image", "label"))]
    if not items:
        raise ValueError(f"sections {sections} of {path} hold no images")
    return items


def _summary(values: np.ndarray) -> dict[str, float]:
    values = values[~np.isnan(values)]
    return {
        "mean": float(values.mean()) if values.size else math.nan,
        "std": float(values.std(ddof=1)) if values.size > 1 else math.nan,
    }


def pair(
    models_dir: str,
    dataset_dir: str,
    output_dir: str,
    datalist: str = "",
    sections: str | Sequence[str] = "test",
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate the models in ``models_dir`` on ``sections`` of the data set in ``dataset_dir``.

    Returns (and writes to ``output_dir/results.json``) the number of images and the mean and standard deviation
    (ddof 1) of Dice and IoU per image; masks and overlays go to ``output_dir/evaluation``.
    """
    models = Path(models_dir).expanduser()
    for name in ("autoencoder.pt", "model.pt"):
        if not (models / name).is_file():
            raise FileNotFoundError(f"models_dir '{models}' has no {name}: train the bundle on the source data first")
    dataset = str(Path(dataset_dir).expanduser())
    items = _items(dataset, datalist, _sections(sections))
    workflow = ConfigWorkflow(
        config_file=[str(BUNDLE / "configs" / "train.json"), str(BUNDLE / "configs" / "evaluate.json")],
        workflow_type="train",
        logging_file=str(BUNDLE / "configs" / "logging.conf"),
        meta_file=str(BUNDLE / "configs" / "metadata.json"),
        bundle_root=str(BUNDLE),
        ckpt_dir=str(models),
        dataset_dir=dataset,
        datalist=datalist,
        output_dir=str(Path(output_dir).expanduser()),
        **{"validate#dataset#data": items},
        **dict(overrides or {}),
    )
    workflow.initialize()
    evaluator = workflow.parser.get_parsed_content("validate#evaluator")
    workflow.run()
    workflow.finalize()
    details = evaluator.state.metric_details
    result = {
        "models_dir": str(models),
        "dataset_dir": dataset,
        "sections": _sections(sections),
        "images": len(items),
        **{name: _summary(np.asarray(details[name]).reshape(-1)) for name in ("dice", "iou")},
    }
    atomic_write_json(Path(output_dir).expanduser() / "results.json", result)
    return result


def matrix(
    runs: Mapping[str, Sequence[str]],
    output_dir: str,
    sections: str | Sequence[str] = "test",
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """Every source -> target pair of ``runs`` (``name: [models_dir, dataset_dir]``), as a Dice / IoU table.

    The diagonal is the in-domain result. Writes ``results.json`` and ``results.md`` in ``output_dir``.
    """
    for name, run in runs.items():
        if len(run) != 2:
            raise ValueError(f"runs['{name}'] must be [models_dir, dataset_dir], got {run!r}")
    output = Path(output_dir).expanduser()
    results: dict[str, dict[str, Any]] = {}
    for source, (models_dir, _) in runs.items():
        for target, (_, dataset_dir) in runs.items():
            logger.info("evaluating %s -> %s", source, target)
            results[f"{source}->{target}"] = pair(
                models_dir, dataset_dir, str(output / f"{source}_to_{target}"), sections=sections, overrides=overrides
            )
    lines = ["| train -> test | images | Dice (%) | IoU (%) |", "|---|---|---|---|"]
    for key, r in results.items():
        lines.append(
            f"| {key} | {r['images']} | {100 * r['dice']['mean']:.2f} ± {100 * r['dice']['std']:.2f} | "
            f"{100 * r['iou']['mean']:.2f} ± {100 * r['iou']['std']:.2f} |"
        )
    atomic_write_json(output / "results.json", results)
    atomic_write_text(output / "results.md", "\n".join(lines) + "\n")
    return results


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point: logs at INFO and turns bad input into a one-line error and exit status 1."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        fire.Fire({"pair": pair, "matrix": matrix}, command=argv, name="cross_domain_gms", serialize=lambda _: None)
    except (FileNotFoundError, ValueError) as err:
        logger.error("%s", err)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
