"""Tests of common.metrics: BraTS region masks, per-slice Dice and HD95 with nnU-Net v1's NaN rules, handlers."""

from __future__ import annotations

import csv
import math
import warnings

import numpy as np
import pytest
import torch
from monai.data import MetaTensor, list_data_collate
from monai.engines import SupervisedEvaluator
from monai.handlers import MetricsSaver, from_engine
from monai.metrics import compute_hausdorff_distance
from scipy import ndimage
from torch import nn

from common.metrics import (
    LabelsToRegions,
    LabelsToRegionsd,
    RegionDice,
    RegionDiceMetric,
    RegionHausdorff95,
    RegionHausdorff95Metric,
    compute_region_dice,
    compute_region_hausdorff95,
)

BRATS = [[1, 2, 3], [2, 3], [3]]  # WT, TC, ET in the remapped labels
LABELS = np.array([[0, 1, 1, 0], [1, 2, 3, 0], [0, 3, 3, 0]])


def _square(size: int, rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[rows, cols] = True
    return mask


def _pair(pred: np.ndarray, ref: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """One slice, one region: (1, 1, H, W) float tensors."""
    return torch.as_tensor(pred[None, None], dtype=torch.float32), torch.as_tensor(ref[None, None], dtype=torch.float32)


def _medpy_hd95(pred: np.ndarray, ref: np.ndarray) -> float:
    """medpy.metric.binary.hd95 (connectivity 1, spacing 1) written with scipy, as nnU-Net v1 calls it."""

    def surface_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a_border = a ^ ndimage.binary_erosion(a, structure=ndimage.generate_binary_structure(a.ndim, 1))
        b_border = b ^ ndimage.binary_erosion(b, structure=ndimage.generate_binary_structure(b.ndim, 1))
        return ndimage.distance_transform_edt(~b_border)[a_border]

    return float(np.percentile(np.hstack((surface_distances(pred, ref), surface_distances(ref, pred))), 95))


# ----------------------------------------------------------------------------------------------------------------
# LabelsToRegions


def test_regions_of_a_known_label_map():
    out = LabelsToRegions(BRATS)(LABELS[None])
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (3, 3, 4)
    np.testing.assert_array_equal(out[0], LABELS > 0)
    np.testing.assert_array_equal(out[1], (LABELS == 2) | (LABELS == 3))
    np.testing.assert_array_equal(out[2], LABELS == 3)


def test_one_hot_and_scores_are_argmaxed():
    expected = LabelsToRegions(BRATS)(torch.as_tensor(LABELS[None]))
    one_hot = torch.as_tensor(np.eye(4, dtype=np.float32)[LABELS].transpose(2, 0, 1))
    torch.testing.assert_close(LabelsToRegions(BRATS)(one_hot), expected)
    logits = 5 * one_hot + 0.1 * torch.randn(one_hot.shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(LabelsToRegions(BRATS)(logits), expected)


def test_metatensor_keeps_meta_and_volumes_work():
    volume = MetaTensor(torch.as_tensor(np.stack([LABELS, LABELS[::-1]], axis=-1)[None]), meta={"filename_or_obj": "a"})
    out = LabelsToRegions([[3], [1, 2]])(volume)
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "a"
    assert out.shape == (2, 3, 4, 2) and out.dtype == torch.float32
    torch.testing.assert_close(out[0, ..., 1], torch.as_tensor(LABELS[::-1] == 3, dtype=torch.float32))


def test_dictionary_version():
    data = {"pred": torch.as_tensor(LABELS[None]), "label": torch.as_tensor(LABELS[None]), "image": "kept"}
    out = LabelsToRegionsd(["pred", "label"], BRATS)(data)
    assert out["image"] == "kept" and out["pred"].shape == out["label"].shape == (3, 3, 4)
    assert LabelsToRegionsd(["missing"], BRATS, allow_missing_keys=True)(data).keys() == data.keys()


@pytest.mark.parametrize("regions", [[], [[1], []], [1, 2], ["12"]])
def test_bad_regions(regions):
    with pytest.raises(ValueError, match="regions"):
        LabelsToRegions(regions)


def test_label_map_without_channel_is_an_error():
    with pytest.raises(ValueError, match="channel-first"):
        LabelsToRegions(BRATS)(LABELS)


# ----------------------------------------------------------------------------------------------------------------
# per-slice values


def test_dice_and_hd95_of_nested_squares():
    """3x3 inside 5x5: Dice 2*9/(9+25); border distances 8 x 1 (inner->outer), 12 x 1 + 4 x sqrt(2) (outer->inner).
    Pooled (24 values, 4 of them sqrt 2), the 95th percentile lies between two sqrt(2)s."""
    pred, ref = _pair(_square(9, slice(3, 6), slice(3, 6)), _square(9, slice(2, 7), slice(2, 7)))
    torch.testing.assert_close(compute_region_dice(pred, ref), torch.tensor([[18 / 34]]))
    torch.testing.assert_close(compute_region_hausdorff95(pred, ref), torch.tensor([[math.sqrt(2)]]))
    torch.testing.assert_close(compute_region_hausdorff95(ref, pred), torch.tensor([[math.sqrt(2)]]))


@pytest.mark.filterwarnings("ignore:.*always_return_as_numpy")  # MONAI passes its own deprecated argument
def test_hd95_pools_both_directions_like_medpy_not_like_monai():
    """A 5x5 square and the same square plus one stray pixel 8 px from its border: pred->ref has 16 zeros and one 8,
    ref->pred 16 zeros. medpy: 95th percentile of the 33 pooled values = 0 (index 30.4). MONAI: the larger directed
    95th percentile = 0.2 * 8 = 1.6 (index 15.2 of 17)."""
    ref = _square(16, slice(2, 7), slice(2, 7))
    pred = ref.copy()
    pred[4, 14] = True
    assert _medpy_hd95(pred, ref) == 0.0
    p, r = _pair(pred, ref)
    assert compute_region_hausdorff95(p, r).item() == 0.0
    assert compute_hausdorff_distance(p, r, include_background=True, percentile=95).item() == pytest.approx(1.6)


@pytest.mark.parametrize("seed", range(4))
def test_hd95_matches_medpy_on_random_blobs(seed):
    rng = np.random.default_rng(seed)
    pred, ref = (ndimage.gaussian_filter(rng.random((32, 32)), 2) > 0.5 for _ in range(2))
    assert pred.any() and ref.any()
    p, r = _pair(pred, ref)
    assert compute_region_hausdorff95(p, r).item() == pytest.approx(_medpy_hd95(pred, ref), rel=1e-6)


def test_empty_and_full_masks():
    empty, blob, full = np.zeros((6, 6), bool), _square(6, slice(1, 3), slice(1, 4)), np.ones((6, 6), bool)
    pred = torch.as_tensor(np.stack([np.stack([empty, empty, blob, blob])]), dtype=torch.float32)
    ref = torch.as_tensor(np.stack([np.stack([empty, blob, empty, full])]), dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no MONAI "all 0" warnings
        dice, hd95 = compute_region_dice(pred, ref), compute_region_hausdorff95(pred, ref)
    # both empty: NaN; one empty: Dice 0, HD95 NaN; full reference: Dice as usual, HD95 NaN (nnU-Net v1)
    torch.testing.assert_close(dice, torch.tensor([[math.nan, 0.0, 0.0, 2 * 6 / (6 + 36)]]), equal_nan=True)
    assert torch.isnan(hd95).all()


def test_shapes_must_match():
    with pytest.raises(ValueError, match="same shape"):
        compute_region_dice(torch.zeros(1, 3, 4, 4), torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="same shape"):
        compute_region_hausdorff95(torch.zeros(4, 4), torch.zeros(4, 4))


# ----------------------------------------------------------------------------------------------------------------
# cumulative metrics: NaN-ignoring reduction

# slice 0: WT 2*4/(4+4)=1, TC both empty, ET pred only; slice 1: WT 2*2/(2+4), TC 1, ET both empty
PRED = np.zeros((2, 3, 6, 6), bool)
REF = np.zeros((2, 3, 6, 6), bool)
PRED[0, 0, 1:3, 1:3] = REF[0, 0, 1:3, 1:3] = True
PRED[0, 2, 4, 4] = True
PRED[1, 0, 2:4, 2] = True
REF[1, 0, 2:4, 2:4] = True
PRED[1, 1, 0:2, 0:3] = REF[1, 1, 0:2, 0:3] = True
DICE = np.array([[1.0, np.nan, 0.0], [2 / 3, 1.0, np.nan]])


def test_region_dice_metric_accumulates_and_reduces_without_nan():
    metric = RegionDiceMetric(reduction="mean_batch", get_not_nans=True)
    for b in range(2):  # one slice per call, as a batch and as a list of channel-first tensors
        metric(torch.as_tensor(PRED[b : b + 1]), torch.as_tensor(REF[b : b + 1]))
    metric([torch.as_tensor(PRED[1])], [torch.as_tensor(REF[1])])
    details = np.concatenate([DICE, DICE[1:]])
    np.testing.assert_allclose(metric.get_buffer().numpy(), details, rtol=1e-6)
    value, not_nans = metric.aggregate()
    np.testing.assert_allclose(value.numpy(), np.nanmean(details, axis=0), rtol=1e-6)
    np.testing.assert_array_equal(not_nans.numpy(), [3, 2, 1])
    # "mean": each slice's mean over its non-NaN regions, then over slices
    expected = np.mean(np.nanmean(details, axis=1))
    assert metric.aggregate(reduction="mean")[0].item() == pytest.approx(expected)
    metric.reset()
    metric(torch.as_tensor(PRED), torch.as_tensor(REF))
    np.testing.assert_allclose(metric.get_buffer().numpy(), DICE, rtol=1e-6)


def test_region_hd95_metric_reduces_without_nan():
    metric = RegionHausdorff95Metric(reduction="mean_batch")
    metric(torch.as_tensor(PRED), torch.as_tensor(REF))
    values = metric.get_buffer().numpy()
    assert np.isnan(values[[0, 0, 1], [1, 2, 2]]).all()  # an empty mask in each
    assert values[0, 0] == 0.0 and values[1, 1] == 0.0
    assert values[1, 0] == pytest.approx(_medpy_hd95(PRED[1, 0], REF[1, 0]))
    # ET is NaN in every slice: its mean is NaN (MONAI's do_metric_reduction alone would give 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy's "Mean of empty slice"
        expected = np.nanmean(values, axis=0)
    assert np.isnan(expected[2])
    np.testing.assert_allclose(metric.aggregate().numpy(), expected, rtol=1e-6)
    nothing = RegionHausdorff95Metric()
    nothing(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4))
    assert math.isnan(nothing.aggregate().item())
    assert nothing.aggregate(reduction="sum").item() == 0.0


# ----------------------------------------------------------------------------------------------------------------
# handlers in a MONAI evaluator


@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")  # slice 0 is NaN in every region
def test_supervised_evaluator_gives_the_nanmean_and_per_slice_csv(tmp_path):
    """The "network" passes the predicted label maps through; post-processing makes regions of pred and label."""
    rng = np.random.default_rng(0)
    maps = rng.integers(0, 4, size=(4, 2, 1, 8, 8))  # 4 slices, (pred, label) label maps
    maps[0, :] = 0  # both empty everywhere: NaN in every region
    maps[1, 0] = np.where(maps[1, 0] == 3, 1, maps[1, 0])  # prediction without enhancing tumour
    items = [
        {"image": MetaTensor(torch.as_tensor(m[0]), meta={"filename_or_obj": f"s{i}"}), "label": torch.as_tensor(m[1])}
        for i, m in enumerate(maps)
    ]
    batches = [list_data_collate(items[:2]), list_data_collate(items[2:])]
    to_regions = LabelsToRegions(BRATS)
    pred = torch.stack([to_regions(torch.as_tensor(m)) for m in maps[:, 0]])
    ref = torch.stack([to_regions(torch.as_tensor(m)) for m in maps[:, 1]])
    dice, hd95 = compute_region_dice(pred, ref).numpy(), compute_region_hausdorff95(pred, ref).numpy()
    assert np.isnan(dice[0]).all() and dice[1, 2] == 0.0 and np.isnan(hd95[1, 2])

    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=batches,
        network=nn.Identity(),
        postprocessing=LabelsToRegionsd(["pred", "label"], BRATS),
        key_val_metric={"dice": RegionDice(output_transform=from_engine(["pred", "label"]))},
        additional_metrics={
            "dice_regions": RegionDice(reduction="mean_batch", output_transform=from_engine(["pred", "label"])),
            "hd95_regions": RegionHausdorff95(reduction="mean_batch", output_transform=from_engine(["pred", "label"])),
        },
        val_handlers=[
            MetricsSaver(
                str(tmp_path),
                metrics=None,
                metric_details="*",
                batch_transform=lambda batch: [item["image"].meta for item in batch],
                summary_ops="mean",
            )
        ],
    )
    evaluator.run()
    metrics = evaluator.state.metrics
    assert metrics["dice"] == pytest.approx(np.nanmean(np.nanmean(dice, axis=1)))
    np.testing.assert_allclose(metrics["dice_regions"], np.nanmean(dice, axis=0), rtol=1e-6)
    np.testing.assert_allclose(metrics["hd95_regions"], np.nanmean(hd95, axis=0), rtol=1e-6)

    with open(tmp_path / "dice_regions_raw.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["filename", "class0", "class1", "class2", "mean"]
    assert [r[0] for r in rows[1:]] == ["s0", "s1", "s2", "s3"]
    np.testing.assert_allclose(np.array([r[1:4] for r in rows[1:]], dtype=float), dice, rtol=1e-4)
    with open(tmp_path / "hd95_regions_summary.csv") as f:
        summary = {r[0]: float(r[1]) for r in list(csv.reader(f))[1:]}
    np.testing.assert_allclose([summary[f"class{i}"] for i in range(3)], np.nanmean(hd95, axis=0), rtol=1e-3)
