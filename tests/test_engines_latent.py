"""GMS latent segmentation pieces and autoencoder training pieces, checked against an autoencoder with known answers."""

from __future__ import annotations

import pytest
import torch
from monai.data import CacheDataset
from monai.transforms import Compose, RandFlipd
from torch import nn

from common.data import VariantSampler, expand_variants
from common.engines import (
    DiscriminatorAdversarialLoss,
    EncodeLatentsd,
    GeneratorAdversarialLoss,
    ImageAndMaskBatch,
    KLReconstructionLoss,
    LatentPrepareBatch,
    LatentSegmentationInferer,
    LatentSegmentationLoss,
    MaskLatentCodec,
    MaskReconstructionInferer,
    PosteriorSampleInferer,
)
from common.networks import SDAutoencoderKL
from common.transforms import FixedVariantd, SoftMasksToLabeld
from tests.oracles import PoolingAutoencoder


def _label(batch: int = 2, size: int = 16) -> torch.Tensor:
    """Label maps 0/1/2 constant on 4x4 blocks: the pooling autoencoder reconstructs their masks exactly."""
    label = torch.zeros(batch, 1, size, size)
    label[:, :, :8, :8] = 1
    label[:, :, 8:, 12:] = 2
    label[1, :, 4:8, 8:12] = 2
    return label


def _codec(num_classes: int = 2) -> MaskLatentCodec:
    return MaskLatentCodec(PoolingAutoencoder(), num_classes=num_classes)


def test_codec_class_masks_and_autoencoder_input() -> None:
    codec, label = _codec(), _label()
    masks = codec.class_masks(label)
    assert masks.shape == (2, 2, 16, 16)
    assert torch.equal(masks[:, 0], (label[:, 0] == 1).float()) and torch.equal(masks[:, 1], (label[:, 0] == 2).float())
    images = codec.autoencoder_input(label)
    assert images.shape == (4, 3, 16, 16) and set(images.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(images[1, 0], masks[0, 1] * 2 - 1), "image b * C + c is class c of item b"


def test_codec_round_trip_of_masks_is_exact_for_a_lossless_autoencoder() -> None:
    codec, label = _codec(), _label()
    latent = codec.encode_masks(label)
    assert latent.shape == (2, 2 * 2, 4, 4), "the class latents are stacked along the channels"
    torch.testing.assert_close(codec.decode_masks(latent), codec.class_masks(label))


def test_codec_scales_the_posterior_mean_and_std() -> None:
    codec = _codec(1)
    image = torch.rand(1, 3, 8, 8) * 2 - 1
    mean, std = codec.encode_image(image)
    raw_mean, logvar = codec.autoencoder.encode_posterior(image)
    torch.testing.assert_close(mean, raw_mean * 0.5)
    torch.testing.assert_close(std, torch.exp(0.5 * logvar) * 0.5)


def test_codec_loads_its_autoencoder_on_first_use() -> None:
    calls = []

    def load() -> nn.Module:
        calls.append(1)
        return PoolingAutoencoder()

    codec = MaskLatentCodec(load, num_classes=1, device="cpu")
    assert not calls, "building the codec must not load weights (bundle inspection works before training)"
    assert codec.image_channels == 3 and codec.autoencoder is codec.autoencoder
    assert len(calls) == 1


def test_codec_rejects_no_class() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        MaskLatentCodec(PoolingAutoencoder(), num_classes=0)


def test_encode_latentsd_matches_the_batch_path_and_drops_the_image() -> None:
    codec, label = _codec(), _label()
    image = torch.rand(3, 16, 16) * 2 - 1
    item = EncodeLatentsd(codec)({"image": image, "label": label[0], "name": "x"})
    assert "image" not in item and item["name"] == "x" and item["label"].dtype == torch.uint8
    inputs, (label_latent, masks) = LatentPrepareBatch(codec, noise_prob=0.0)(
        {"image": image[None], "label": label[:1]}
    )
    torch.testing.assert_close(item["image_latent"][None], inputs)
    torch.testing.assert_close(item["label_latent"][None], label_latent)
    cached = {k: v[None] for k, v in item.items() if k != "name"}
    cached_inputs, (cached_latent, cached_masks) = LatentPrepareBatch(codec, noise_prob=0.0)(cached)
    torch.testing.assert_close(cached_inputs, inputs)
    torch.testing.assert_close(cached_latent, label_latent)
    assert torch.equal(cached_masks, masks)


def test_encode_latentsd_names_a_mismatched_pair() -> None:
    with pytest.raises(ValueError, match="EncodeLatentsd: expected an image with 3 channel"):
        EncodeLatentsd(_codec())({"image": torch.zeros(1, 16, 16), "label": torch.zeros(1, 16, 16)})


def test_prepare_batch_adds_posterior_noise_with_its_probability() -> None:
    codec = _codec(1)
    batch = {"image": torch.zeros(4, 3, 64, 64), "label": torch.zeros(4, 1, 64, 64)}
    clean, _ = LatentPrepareBatch(codec, noise_prob=0.0)(batch)
    noisy, _ = LatentPrepareBatch(codec, noise_prob=1.0)(batch)
    std = torch.exp(torch.tensor(0.5 * -2.0)) * 0.5
    standardised = (noisy - clean) / std
    assert abs(float(standardised.mean())) < 0.1 and abs(float(standardised.std()) - 1) < 0.1
    torch.manual_seed(0)
    prepare = LatentPrepareBatch(codec, noise_prob=0.5)
    noisy_batches = [not torch.equal(prepare(batch)[0], clean) for _ in range(200)]
    assert 70 < sum(noisy_batches) < 130, "about half of the batches get noise, the whole batch at once"
    with pytest.raises(ValueError, match="noise_prob"):
        LatentPrepareBatch(codec, noise_prob=1.5)


def test_loss_is_zero_at_the_answer_sums_heads_and_spares_the_autoencoder() -> None:
    codec, label = _codec(), _label()
    with torch.no_grad():
        target = (codec.encode_masks(label), codec.class_masks(label))
    loss = LatentSegmentationLoss(codec)
    perfect = target[0].clone().requires_grad_(True)
    assert float(loss(perfect, target)) < 1e-4
    wrong = (target[0] + 0.3 * torch.randn_like(target[0])).requires_grad_(True)
    single = loss(wrong, target)
    stacked = loss(torch.stack([wrong, wrong, wrong], dim=1), target)
    torch.testing.assert_close(stacked, 3 * single)
    codec.autoencoder.requires_grad_(False)
    stacked.backward()
    assert wrong.grad is not None and wrong.grad.abs().sum() > 0
    assert codec.autoencoder.gain.grad is None
    latent_only = LatentSegmentationLoss(codec, dice_weight=0.0)(wrong, target)
    torch.testing.assert_close(latent_only, nn.functional.mse_loss(wrong, target[0]))


def test_inferer_encodes_maps_and_decodes() -> None:
    codec, label = _codec(), _label()
    image = codec.autoencoder_input(label)[::2]  # class 1 of each item, as an image

    def network(z: torch.Tensor) -> torch.Tensor:  # copies the image latent into both class slots
        return torch.cat([z, torch.zeros_like(z)], dim=1)

    soft = LatentSegmentationInferer(codec)(image, network)
    assert soft.shape == (2, 2, 16, 16)
    torch.testing.assert_close(soft[:, 0], codec.class_masks(label)[:, 0])
    torch.testing.assert_close(soft[:, 1], torch.full_like(soft[:, 1], 0.5))
    with pytest.raises(ValueError, match=r"expects \(B, 3, H, W\)"):
        LatentSegmentationInferer(codec)(torch.zeros(1, 1, 16, 16), network)
    reconstructed = MaskReconstructionInferer(codec)(label, network)
    torch.testing.assert_close(reconstructed, codec.class_masks(label))


def test_soft_masks_to_label_thresholds_and_takes_the_likeliest_class() -> None:
    soft = torch.tensor([[[0.2, 0.7, 0.6]], [[0.9, 0.1, 0.65]]])
    assert SoftMasksToLabeld("pred")({"pred": soft})["pred"].tolist() == [[[2.0, 1.0, 2.0]]]
    binary = SoftMasksToLabeld("pred", threshold=0.5)({"pred": soft[:1]})["pred"]
    assert binary.tolist() == [[[0.0, 1.0, 1.0]]]


def test_fixed_variants_are_reproducible_and_cached() -> None:
    calls = []

    def counted(d: dict) -> dict:
        calls.append(1)
        return d

    flip = Compose([RandFlipd(keys="image", prob=0.5, spatial_axis=1), counted])
    variants = FixedVariantd(flip, identity_key="name", seed=3)
    image = torch.arange(16.0).reshape(1, 4, 4)
    items = expand_variants([{"name": "a", "image": image}, {"name": "b", "image": image}], 6)
    assert [i["variant"] for i in items] == [0, 1, 2, 3, 4, 5] * 2
    outputs = [variants(dict(i))["image"] for i in items]
    assert torch.equal(outputs[0], image), "variant 0 is the item as it is"
    assert all(torch.equal(variants(dict(i))["image"], o) for i, o in zip(items, outputs, strict=True))
    flipped = [not torch.equal(o, image) for o in outputs]
    assert any(flipped) and not all(flipped)
    assert flipped[:6] != flipped[6:], "two items draw differently for the same variants"
    calls.clear()
    dataset = CacheDataset(items, Compose([variants]), num_workers=0, progress=False)
    built = len(calls)
    for index in range(len(dataset)):
        dataset[index]
    assert built > 0 and len(calls) == built, "the cached dataset re-ran the transform"
    with pytest.raises(TypeError, match="randomizable"):
        FixedVariantd(counted)
    with pytest.raises(KeyError, match="variant"):
        variants({"name": "a", "image": image})


def test_variant_sampler_visits_each_item_once_per_epoch_in_fresh_variants() -> None:
    dataset = list(range(10 * 4))
    sampler = VariantSampler(dataset, num_variants=4, seed=1)
    epochs = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        epochs.append(list(sampler))
    for indices in epochs:
        assert sorted(i // 4 for i in indices) == list(range(10))
    assert epochs[0] != epochs[1] and {i % 4 for e in epochs for i in e} == {0, 1, 2, 3}
    sampler.set_epoch(0)
    assert list(sampler) == epochs[0], "the draws are reproducible from seed and epoch"
    shares = [set(VariantSampler(dataset, 4, num_replicas=2, rank=r)) for r in (0, 1)]
    assert not {i // 4 for i in shares[0]} & {i // 4 for i in shares[1]}
    with pytest.raises(ValueError, match="multiple of num_variants"):
        VariantSampler(list(range(10)), num_variants=4)
    with pytest.raises(ValueError, match="num_variants"):
        expand_variants([{}], 0)


def test_image_and_mask_batch_puts_images_and_class_masks_together() -> None:
    codec, label = _codec(), _label()
    image = torch.rand(2, 3, 16, 16)
    x, target = ImageAndMaskBatch(codec)({"image": image, "label": label})
    assert x is target and x.shape == (2 + 4, 3, 16, 16)
    assert torch.equal(x[:2], image) and torch.equal(x[2:], codec.autoencoder_input(label))
    with pytest.raises(ValueError, match="ImageAndMaskBatch"):
        ImageAndMaskBatch(codec)({"image": torch.rand(2, 1, 16, 16), "label": label})


def test_posterior_sample_inferer_and_kl_loss() -> None:
    autoencoder = PoolingAutoencoder(logvar=0.0)
    inferer = PosteriorSampleInferer()
    loss = KLReconstructionLoss(inferer, kl_weight=0.25)
    with pytest.raises(RuntimeError, match="not reconstructed anything"):
        loss(torch.zeros(1), torch.zeros(1))
    x = torch.rand(3, 3, 8, 8)
    recon = inferer(x, autoencoder)
    mean, _ = autoencoder.encode_posterior(x)
    expected_kl = 0.5 * mean.pow(2).flatten(1).sum(1).mean()  # logvar 0: KL = mean^2 / 2
    torch.testing.assert_close(inferer.last_kl, expected_kl)
    assert recon.shape == x.shape and not torch.equal(recon, autoencoder.decode(mean * 0.5)), "z is sampled"
    torch.testing.assert_close(loss(recon, x), nn.functional.l1_loss(recon, x) + 0.25 * expected_kl)


def test_posterior_sample_inferer_trains_a_real_autoencoder() -> None:
    torch.manual_seed(0)
    autoencoder = SDAutoencoderKL(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, norm_groups=4)
    inferer = PosteriorSampleInferer()
    loss = KLReconstructionLoss(inferer)
    optimizer = torch.optim.Adam(autoencoder.parameters(), lr=3e-3)
    x = (torch.rand(1, 1, 16, 16) > 0.5).float().expand(4, 3, -1, -1) * 2 - 1
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        value = loss(inferer(x, autoencoder), x)
        value.backward()
        optimizer.step()
        losses.append(float(value))
    assert losses[-1] < 0.6 * losses[0]


def test_adversarial_losses_use_the_discriminators_logits() -> None:
    features, logits = torch.randn(2, 4, 3, 3), torch.ones(2, 1, 3, 3)
    generator = GeneratorAdversarialLoss(weight=2.0)
    assert float(generator([features, logits])) == pytest.approx(0.0), "real-looking logits cost nothing"
    fake = 1.05**2  # least squares after MONAI's leaky ReLU (slope 0.05): -1 -> -0.05, 1.05 from the target 1
    assert float(generator([features, -logits])) == pytest.approx(2.0 * fake)
    discriminator = DiscriminatorAdversarialLoss(weight=1.0)
    assert float(discriminator([features, logits], [features, -logits])) == pytest.approx(0.5 * (0.0 + 0.05**2))
