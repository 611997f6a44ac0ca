"""Tests of common.metrics_synthesis and common.networks.perceptual: per-image SSIM/PSNR/RMSE on [0, 1], Fréchet
distances, LPIPS, and skipping (with one warning) when pretrained weights are not given."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from ignite.engine import Engine
from monai.data import DataLoader
from monai.engines import SupervisedEvaluator
from monai.handlers import from_engine
from monai.metrics import SSIMMetric
from torch import nn

import common.metrics_synthesis as synthesis
from common.metrics_synthesis import (
    LPIPS,
    PSNR,
    RMSE,
    SSIM,
    DomainFrechetDistance,
    EncoderFeatures,
    FrechetDistance,
    FrechetDistanceMetric,
    FrechetInceptionDistance,
    to_unit_range,
)
from common.networks.perceptual import FIDInceptionV3, LPIPSNetwork, load_fid_inception, load_lpips


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    """Each test is a new run: no skip warning given yet."""
    monkeypatch.setattr(synthesis, "_WARNED", set())


def _images(count: int = 4, size: int = 24, seed: int = 0) -> torch.Tensor:
    """Textured grey images in [0.2, 0.7], so a shift of up to 0.3 stays inside [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    smooth = nn.functional.avg_pool2d(torch.rand(count, 1, size + 4, size + 4, generator=generator), 5, stride=1)
    return 0.2 + 0.5 * (smooth - smooth.amin()) / (smooth.amax() - smooth.amin())


def _run(handlers: dict, batches: list[dict]) -> dict:
    """Attach ``handlers`` to an engine that outputs each batch as it is, run once, return the metrics."""
    engine = Engine(lambda _engine, batch: batch)
    for name, handler in handlers.items():
        handler.attach(engine, name)
    engine.run(batches, max_epochs=1)
    return engine.state.metrics


OUT = from_engine(["pred", "image"])


# --------------------------------------------------------------------------------------------------------------------
# SSIM, PSNR, RMSE


def test_to_unit_range():
    values = torch.tensor([-1.0, 0.0, 1.0, 1.5, -3.0])
    torch.testing.assert_close(to_unit_range(values), torch.tensor([0.0, 0.5, 1.0, 1.0, 0.0]))
    torch.testing.assert_close(to_unit_range(values, clip=False), torch.tensor([0.0, 0.5, 1.0, 1.25, -1.0]))
    torch.testing.assert_close(to_unit_range(values[:3], (0, 1)), torch.tensor([0.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="low < high"):
        to_unit_range(values, (1, 1))


def test_identical_images_give_ssim_1_psnr_inf_rmse_0():
    image = _images()
    handlers = {
        "ssim": SSIM(output_transform=OUT),
        "psnr": PSNR(output_transform=OUT),
        "rmse": RMSE(output_transform=OUT),
    }
    metrics = _run(handlers, [{"pred": image, "image": image.clone()}])
    assert metrics["ssim"] == pytest.approx(1.0, abs=1e-5)
    assert metrics["psnr"] == math.inf and metrics["rmse"] == 0


def test_offsets_per_image_and_input_range():
    real = _images(2)
    offsets = torch.tensor([0.1, 0.2]).view(2, 1, 1, 1)
    expected_rmse, expected_psnr = 0.15, (20.0 + -20 * math.log10(0.2)) / 2  # per image, then averaged
    unit = _run(
        {"psnr": PSNR(output_transform=OUT), "rmse": RMSE(output_transform=OUT)},
        [{"pred": real + offsets, "image": real}],
    )
    assert unit["rmse"] == pytest.approx(expected_rmse, rel=1e-5) and unit["psnr"] == pytest.approx(
        expected_psnr, rel=1e-5
    )
    # the same images in [-1, 1] (a tanh generator): converted explicitly, the same values
    signed = {"pred": 2 * (real + offsets) - 1, "image": 2 * real - 1}
    both = _run({"psnr": PSNR((-1, 1), OUT), "rmse": RMSE((-1, 1), OUT)}, [signed])
    assert both["rmse"] == pytest.approx(expected_rmse, rel=1e-5) and both["psnr"] == pytest.approx(
        expected_psnr, rel=1e-5
    )
    # a decollated batch (lists of channel-first images) gives the same
    items = [{"pred": p, "image": r} for p, r in zip(signed["pred"], signed["image"], strict=True)]
    listed = _run({"rmse": RMSE((-1, 1), OUT)}, [items])
    assert listed["rmse"] == pytest.approx(expected_rmse, rel=1e-5)


def test_ssim_uses_data_range_1():
    real = _images(2)
    pred = (real * 0.8 + 0.05).flip(-1)
    value = _run({"ssim": SSIM(output_transform=OUT)}, [{"pred": pred, "image": real}])["ssim"]
    reference = SSIMMetric(spatial_dims=2, data_range=1.0)(pred, real).mean().item()
    wrong = SSIMMetric(spatial_dims=2, data_range=255.0)(pred, real).mean().item()  # the seed's constants
    assert value == pytest.approx(reference, rel=1e-6) and value < 0.9 < wrong


# --------------------------------------------------------------------------------------------------------------------
# Fréchet distances


def test_frechet_distance_zero_for_identical_features_and_grows_with_shift():
    real = _images(40, size=4, seed=1)  # flattened: 16-d features, 40 samples
    distances = []
    for shift in (0.0, 0.1, 0.2):
        metric = FrechetDistanceMetric(nn.Flatten())
        metric(real + shift, real)
        distances.append(metric.aggregate().item())
    assert distances[0] == pytest.approx(0.0, abs=1e-6)
    assert distances[1] == pytest.approx(16 * 0.1**2, rel=1e-3)  # only the means differ: |d|^2 = 16 s^2
    assert distances[2] == pytest.approx(16 * 0.2**2, rel=1e-3)
    with pytest.raises(ValueError, match="at least 2"):
        single = FrechetDistanceMetric(nn.Flatten())
        single(real[:1], real[:1])
        single.aggregate()


def _segmenter() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 12, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(12, 3, 1),
    )


def test_domain_frechet_distance_with_an_encoder_layer(tmp_path):
    network = _segmenter().train()
    real = _images(24, size=16, seed=2)
    distances = {}
    for shift in (0.0, 0.1, 0.3):
        handler = DomainFrechetDistance(network, layer="2", output_transform=OUT)
        distances[shift] = _run(
            {"fd": handler},
            [{"pred": real[:12] + shift, "image": real[:12]}, {"pred": real[12:] + shift, "image": real[12:]}],
        )["fd"]
    assert distances[0.0] == pytest.approx(0.0, abs=1e-5)
    assert 0 < distances[0.1] < distances[0.3]
    assert network.training  # put back in its mode
    features = EncoderFeatures(network, "3")(real)  # after the ReLU
    assert features.shape == (24, 12)
    with pytest.raises(
        ValueError, match=r"layer 'bottleneck' is not a submodule of Sequential; its submodules are \['0'"
    ):
        EncoderFeatures(network, "bottleneck")
    path = tmp_path / "segmenter.pt"
    torch.save({"model": network.state_dict()}, path)
    other = _segmenter()
    nn.init.zeros_(other[0].weight)
    DomainFrechetDistance(other, layer="3", weights=str(path))
    torch.testing.assert_close(other[0].weight, network[0].weight)


def test_missing_weights_skip_with_one_warning_naming_the_key(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fid = FrechetInceptionDistance("", output_transform=OUT)
        FrechetInceptionDistance(str(tmp_path / "pt_inception.pth"), output_transform=OUT)
        lpips = LPIPS("", str(tmp_path / "none.pth"), output_transform=OUT)
        LPIPS("", "", output_transform=OUT)
        domain = DomainFrechetDistance(_segmenter(), weights="", output_transform=OUT)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(messages) == 3, messages
    assert "config key 'fid_weights' is empty" in messages[0] and "never computed with random weights" in messages[0]
    assert "'lpips_backbone_weights' is empty" in messages[1] and "none.pth', which is not a file" in messages[1]
    assert "'segmenter_weights'" in messages[2]
    assert fid.skipped and lpips.skipped and domain.skipped
    image = _images(2)
    metrics = _run(
        {"fid": fid, "lpips": lpips, "fd": domain, "rmse": RMSE(output_transform=OUT)},
        [{"pred": image, "image": image}],
    )
    assert set(metrics) == {"rmse"}  # skipped metrics are never computed
    with pytest.raises(RuntimeError, match="skipped"):
        FrechetDistanceMetric(None)(image, image)


# --------------------------------------------------------------------------------------------------------------------
# the feature networks and their loaders


def test_fid_inception_loads_pytorch_fid_state_dicts(tmp_path):
    torch.manual_seed(0)
    state = FIDInceptionV3().state_dict()
    assert (
        sum(
            v.numel()
            for k, v in state.items()
            if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
        )
        == 21_785_568
    )  # torchvision's Inception3 without aux and fc
    file = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}  # as old files lack them
    file |= {"fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)}  # the file's classifier, ignored
    torch.save(file, tmp_path / "pt_inception.pth")
    handler = FrechetInceptionDistance(str(tmp_path / "pt_inception.pth"))
    network = handler.metric_fn.feature_network
    assert not handler.skipped and not network.training and not any(p.requires_grad for p in network.parameters())
    torch.testing.assert_close(network.Mixed_7c.branch_pool.conv.weight, state["Mixed_7c.branch_pool.conv.weight"])
    with torch.no_grad():
        assert network(torch.rand(1, 1, 32, 32)).shape == (1, 2048)
    torch.save({k: file[k] for k in list(file)[:30]}, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match=r"broken\.pth is not pytorch-fid's Inception .*missing weight.*Mixed_5b"):
        load_fid_inception(tmp_path / "broken.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match=r"list\.pth is not pytorch-fid's Inception weights .*got list"):
        load_fid_inception(tmp_path / "list.pth")


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_loads_torchvision_backbone_and_lpips_heads(tmp_path, net):
    torch.manual_seed(0)
    reference = LPIPSNetwork(net)
    state = reference.state_dict()
    backbone = {k: v for k, v in state.items() if k.startswith("features.")} | {"classifier.0.weight": torch.zeros(2)}
    heads = {k: v.abs() for k, v in state.items() if k.startswith("lin")}  # LPIPS' heads are non-negative
    torch.save(backbone, tmp_path / "backbone.pth")
    torch.save(heads, tmp_path / "heads.pth")
    handler = LPIPS(str(tmp_path / "backbone.pth"), str(tmp_path / "heads.pth"), net=net, output_transform=OUT)
    assert not handler.skipped
    real = _images(2, size=32)
    same = _run({"lpips": handler}, [{"pred": real, "image": real}])["lpips"]
    different = _run({"lpips": handler}, [{"pred": real.flip(-1), "image": real}])["lpips"]
    assert same == pytest.approx(0.0, abs=1e-7) and different > 0
    if net == "alex":
        with pytest.raises(ValueError, match=r"heads\.pth is not torchvision's alex ImageNet weights"):
            load_lpips(tmp_path / "heads.pth", tmp_path / "heads.pth", net)
        with pytest.raises(ValueError, match=r"backbone\.pth is not torchvision's vgg ImageNet weights"):
            load_lpips(tmp_path / "backbone.pth", tmp_path / "heads.pth", "vgg")


def test_frechet_distance_handler_with_any_feature_network():
    real = _images(8, size=4, seed=3)
    metrics = _run({"fd": FrechetDistance(nn.Flatten(), (0, 1), OUT)}, [{"pred": real, "image": real}])
    assert metrics["fd"] == pytest.approx(0.0, abs=1e-6)


def test_handlers_in_a_monai_evaluator():
    """Label maps in, images out: the evaluator calls the inputs ``image`` and the targets ``label``."""
    real = _images(4, size=16)
    data = [{"image": (r > 0.45).float(), "label": r} for r in real]
    loader = DataLoader(data, batch_size=2)
    generator = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.Tanh())
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=loader,
        network=generator,
        key_val_metric={"ssim": SSIM((-1, 1), output_transform=from_engine(["pred", "label"]))},
        additional_metrics={
            "psnr": PSNR((-1, 1), from_engine(["pred", "label"])),
            "fid": FrechetInceptionDistance("", (-1, 1), from_engine(["pred", "label"])),
            "fd": DomainFrechetDistance(
                _segmenter(), "2", input_range=(-1, 1), output_transform=from_engine(["pred", "label"])
            ),
        },
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        evaluator.run()
    metrics = evaluator.state.metrics
    assert set(metrics) == {"ssim", "psnr", "fd"} and -1 <= metrics["ssim"] <= 1 and metrics["fd"] > 0
    assert evaluator.state.metric_details["ssim"].shape == (4, 1)  # one value per image
