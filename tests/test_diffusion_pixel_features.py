"""Tests of common.diffusion.pixel_features: the on-disk feature store, pixel batches, the inferer and the vote."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.networks.nets import DiffusionModelUNet
from monai.networks.schedulers import DDPMScheduler

from common.diffusion import (
    DiffusionFeatureExtractor,
    EnsembleVoted,
    FeatureStore,
    PixelBatches,
    PixelClassifierInferer,
)
from common.networks import PixelClassifierEnsemble

SIZE = 8  # image side: 64 pixels an image


def _extractor(timesteps: tuple[int, ...] = (10,)) -> DiffusionFeatureExtractor:
    torch.manual_seed(0)
    unet = DiffusionModelUNet(
        spatial_dims=2,
        in_channels=2,
        out_channels=2,
        channels=(8, 8, 16),
        attention_levels=(False, True, False),
        num_res_blocks=1,
        num_head_channels=8,
        norm_num_groups=4,
    )
    scheduler = DDPMScheduler(num_train_timesteps=100, schedule="cosine")
    return DiffusionFeatureExtractor(unet, scheduler, blocks=(4,), timesteps=timesteps)  # 8 features a timestep


def _sample(index: int) -> dict[str, torch.Tensor]:
    """Image ``index``: seeded noise in [-1, 1] and a label map 0..3 that differs from image to image."""
    generator = torch.Generator().manual_seed(index)
    image = torch.rand(2, SIZE, SIZE, generator=generator) * 2 - 1
    label = torch.randint(0, 4, (1, SIZE, SIZE), generator=generator)
    return {"image": image, "label": label}


def _load(item: Mapping[str, Any]) -> dict[str, Any]:
    return {**item, **_sample(int(item["image"].split("_")[1]))}


def _items(count: int) -> list[dict[str, str]]:
    return [{"image": f"image_{i}", "label": f"label_{i}"} for i in range(count)]


def _store(
    folder: Path, count: int = 4, timesteps: tuple[int, ...] = (10,), calls: list[int] | None = None
) -> FeatureStore:
    """A store of ``count`` images; ``calls`` (if given) receives the batch size of every extractor call."""
    extractor = _extractor(timesteps)
    if calls is not None:
        extractor.register_forward_pre_hook(lambda _module, args: calls.append(args[0].shape[0]))
    return FeatureStore(extractor, _items(count), _load, str(folder / "cache"), batch_size=3)


def _rows(features: np.ndarray, labels: np.ndarray) -> Counter:
    """The multiset of (features, label) rows."""
    return Counter(
        row.tobytes() + bytes([label]) for row, label in zip(features.astype(np.float32), labels, strict=True)
    )


def _stored_rows(store: FeatureStore) -> Counter:
    rows: Counter = Counter()
    for i in range(len(store)):
        rows += _rows(*store.load(i))
    return rows


# --------------------------------------------------------------------------------------------------------------------
# FeatureStore


def test_store_writes_float16_pixel_rows_and_labels(tmp_path) -> None:
    calls: list[int] = []
    store = _store(tmp_path, count=4, calls=calls)
    store.build()
    assert calls == [3, 1], "images are extracted batch_size at a time"
    assert len(store) == 4 and store.num_pixels() == 4 * SIZE * SIZE
    samples = [_sample(i) for i in range(4)]
    reference = _extractor()(torch.stack([s["image"] for s in samples])).half()  # (4, F, H, W)
    for i, (sample, expected) in enumerate(zip(samples, reference, strict=True)):
        features, labels = store.load(i)
        assert features.shape == (SIZE * SIZE, 8) and features.dtype == np.float16
        assert labels.shape == (SIZE * SIZE,) and labels.dtype == np.uint8
        assert np.array_equal(labels, sample["label"].reshape(-1).numpy())
        stored = torch.from_numpy(features)  # as extracted in another batch: equal to float16 rounding
        torch.testing.assert_close(stored[3 * SIZE + 5], expected[:, 3, 5], atol=1e-3, rtol=1e-3)  # pixel (3, 5)
        torch.testing.assert_close(stored, expected.flatten(1).T, atol=1e-3, rtol=1e-3)
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert manifest["count"] == 4 and manifest["num_features"] == 8 and manifest["timesteps"] == [10]


def test_store_reuses_a_cache_with_the_same_manifest(tmp_path) -> None:
    _store(tmp_path).build()
    before = _stored_rows(_store(tmp_path))
    calls: list[int] = []
    again = _store(tmp_path, calls=calls)
    again.build()
    again.build()
    assert calls == [], "the cached features are reused, not extracted again"
    assert _stored_rows(again) == before


def test_store_rebuilds_when_the_settings_change(tmp_path) -> None:
    _store(tmp_path).build()
    calls: list[int] = []
    store = _store(tmp_path, timesteps=(10, 40), calls=calls)
    store.build()
    assert calls == [3, 1]
    assert store.load(0)[0].shape == (SIZE * SIZE, 16)
    assert json.loads((tmp_path / "cache" / "manifest.json").read_text())["timesteps"] == [10, 40]
    other_images = _store(tmp_path, count=3, calls=calls)
    other_images.build()
    assert calls == [3, 1, 3], "another list of images is extracted again"
    assert not (tmp_path / "cache" / "features_00003.npy").exists(), "the old cache is removed, not overwritten"


def test_store_refuses_a_folder_that_is_not_a_cache(tmp_path) -> None:
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "precious.txt").write_text("not ours")
    with pytest.raises(FileExistsError, match="feature_cache_dir"):
        _store(tmp_path).build()
    assert (tmp_path / "cache" / "precious.txt").read_text() == "not ours"


def test_store_rejects_no_images_and_a_mismatched_label(tmp_path) -> None:
    with pytest.raises(ValueError, match="no labelled images"):
        FeatureStore(_extractor(), [], _load, str(tmp_path / "cache"))

    def small_label(item: Mapping[str, Any]) -> dict[str, Any]:
        return {**_load(item), "label": torch.zeros(1, 4, 4)}

    store = FeatureStore(_extractor(), _items(1), small_label, str(tmp_path / "cache"))
    with pytest.raises(ValueError, match=r"label_0: label shape \(1, 4, 4\) does not match .*\(8, 8\)"):
        store.build()
    assert not (tmp_path / "cache").exists(), "a failed extraction leaves no cache behind"


# --------------------------------------------------------------------------------------------------------------------
# PixelBatches


@pytest.mark.parametrize("images_per_chunk", [1, 3])
def test_pixel_batches_visit_every_pixel_once_a_pass(tmp_path, images_per_chunk: int) -> None:
    store = _store(tmp_path)
    batches = PixelBatches(store, batch_size=10, images_per_chunk=images_per_chunk, seed=1)
    stored = _stored_rows(store)
    for _ in range(2):
        result = list(batches)
        assert len(result) == len(batches) == 26, "256 pixels: 25 batches of 10 and one of 6"
        assert [len(b["label"]) for b in result].count(10) == 25
        for batch in result:
            n = len(batch["label"])
            assert batch["image"].shape == (n, 8) and batch["image"].dtype == torch.float32
            assert batch["label"].shape == (n,) and batch["label"].dtype == torch.int64
        features = torch.cat([b["image"] for b in result]).numpy()
        labels = torch.cat([b["label"] for b in result]).numpy().astype(np.uint8)
        assert _rows(features, labels) == stored


def test_pixel_batches_drop_a_one_pixel_tail(tmp_path) -> None:
    store = _store(tmp_path)
    batches = PixelBatches(store, batch_size=5, images_per_chunk=2)  # 256 = 51 * 5 + 1
    result = list(batches)
    assert len(result) == len(batches) == 51 and all(len(b["label"]) == 5 for b in result)
    features = torch.cat([b["image"] for b in result]).numpy()
    labels = torch.cat([b["label"] for b in result]).numpy().astype(np.uint8)
    seen, stored = _rows(features, labels), _stored_rows(store)
    assert sum(seen.values()) == 255 and not seen - stored and sum((stored - seen).values()) == 1


def test_pixel_batches_shuffle_per_pass_and_are_seeded(tmp_path) -> None:
    store = _store(tmp_path)
    first = PixelBatches(store, batch_size=16, images_per_chunk=2, seed=3)
    pass_one, pass_two = list(first), list(first)
    assert not torch.equal(pass_one[0]["image"], pass_two[0]["image"]), "every pass has a new order"
    same = PixelBatches(store, batch_size=16, images_per_chunk=2, seed=3)
    for a, b in zip(pass_one + pass_two, list(same) + list(same), strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    other = list(PixelBatches(store, batch_size=16, images_per_chunk=2, seed=4))
    assert not torch.equal(pass_one[0]["image"], other[0]["image"])


def test_pixel_batches_without_shuffle_keep_the_stored_order(tmp_path) -> None:
    store = _store(tmp_path, count=2)
    result = list(PixelBatches(store, batch_size=64, shuffle=False))
    assert len(result) == 2
    for i, batch in enumerate(result):
        features, labels = store.load(i)
        assert np.array_equal(batch["image"].numpy(), features.astype(np.float32))
        assert np.array_equal(batch["label"].numpy(), labels.astype(np.int64))


def test_pixel_batches_reject_a_batch_of_one(tmp_path) -> None:
    with pytest.raises(ValueError, match="pixel_batch_size must be >= 2"):
        PixelBatches(_store(tmp_path), batch_size=1)


# --------------------------------------------------------------------------------------------------------------------
# inferer and vote


def test_inferer_returns_member_probabilities() -> None:
    extractor = _extractor(timesteps=(10, 40))
    torch.manual_seed(0)
    network = PixelClassifierEnsemble(extractor.num_features, num_classes=3, ensemble_size=2).eval()
    images = torch.rand(2, 2, SIZE, SIZE) * 2 - 1
    probs = PixelClassifierInferer(extractor)(images, network)
    assert probs.shape == (2, 2, 3, SIZE, SIZE)
    torch.testing.assert_close(probs.sum(dim=2), torch.ones(2, 2, SIZE, SIZE))
    torch.testing.assert_close(probs, torch.softmax(network(extractor(images)), dim=2))


def _one_hot_members(choices: list[list[int]], classes: int = 3) -> torch.Tensor:
    """Probabilities ``(K, C, 1, P)`` of members that each put 0.6 on their chosen class at every pixel."""
    members = torch.full((len(choices[0]), classes, 1, len(choices)), 0.4 / (classes - 1))
    for pixel, votes in enumerate(choices):
        for k, c in enumerate(votes):
            members[k, c, 0, pixel] = 0.6
    return members


def test_vote_is_the_majority_with_its_disagreement() -> None:
    probs = _one_hot_members([[2, 2, 2], [1, 0, 1], [0, 2, 2]])  # pixels: all agree, 2 of 3 for 1, 2 of 3 for 2
    out = EnsembleVoted()({"pred": probs})
    assert out["pred"].shape == (1, 1, 3) and out["pred"].tolist() == [[[2, 1, 2]]]
    torch.testing.assert_close(out["uncertainty"], torch.tensor([[[0.0, 1 / 3, 1 / 3]]]))


def test_vote_tie_goes_to_the_higher_mean_probability() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.3, 0.7], [0.45, 0.55], [0.55, 0.45]])  # (K=4, C=2): 2 votes each
    out = EnsembleVoted()({"pred": probs[..., None, None]})
    assert out["pred"].item() == 0, "mean probability of class 0 is 0.55"
    assert out["uncertainty"].item() == pytest.approx(0.5)
    flipped = EnsembleVoted()({"pred": probs.flip(1)[..., None, None]})
    assert flipped["pred"].item() == 1


def test_vote_majority_beats_confidence() -> None:
    probs = torch.tensor([[0.01, 0.99], [0.51, 0.49], [0.51, 0.49]])  # class 1 has the higher mean, class 0 2 votes
    assert EnsembleVoted(uncertainty_key=None)({"pred": probs[..., None, None]})["pred"].item() == 0


def test_vote_keeps_metadata_and_checks_the_shape() -> None:
    probs = MetaTensor(_one_hot_members([[1, 1]]), meta={"filename_or_obj": "slice.png"})
    out = EnsembleVoted(uncertainty_key=None)({"pred": probs})
    assert isinstance(out["pred"], MetaTensor) and out["pred"].meta["filename_or_obj"] == "slice.png"
    assert "uncertainty" not in out
    with pytest.raises(ValueError, match=r"'pred' must hold ensemble probabilities \(K, C, H, W\)"):
        EnsembleVoted()({"pred": torch.zeros(2, 3, 4)})
