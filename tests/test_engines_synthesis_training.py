"""The OASIS training iteration, its batch preparation, the multi-sample inferer and the BatchNorm refresh handler."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Events
from monai.data import MetaTensor
from torch.utils.data import DataLoader

from common.engines import (
    ExponentialMovingAverage,
    LabelMixLoss,
    LabelToImageBatch,
    LabelToImageInferer,
    OASISDiscriminatorLoss,
    RefreshBatchNorm,
    SemanticSynthesisTrainer,
    ShapeConsistencyLoss,
    to_onehot,
)
from common.engines.oasis_losses import oasis_cross_entropy
from common.networks import OASISDiscriminator, OASISGenerator, WaveletDiscriminator

NUM_CLASSES = 3
SIZE = 16


def tiny_generator(z_dim: int = 4) -> OASISGenerator:
    return OASISGenerator(NUM_CLASSES, 1, 4, (2, 2, 1), z_dim=z_dim, spade_hidden=8, image_size=SIZE)


def tiny_discriminator() -> OASISDiscriminator:
    return OASISDiscriminator(NUM_CLASSES, 1, (8, 8), head_channels=8)


def label_maps(batch: int = 2, seed: int = 0) -> torch.Tensor:
    """Label maps (B, 1, H, W): class 1 on the left, 2 on a bottom-right block, 0 elsewhere."""
    label = torch.zeros(batch, 1, SIZE, SIZE)
    label[..., : SIZE // 2] = 1
    label[..., SIZE // 2 :, SIZE // 2 :] = 2
    return label


def images_of(label: torch.Tensor) -> torch.Tensor:
    """A deterministic image per label map: one grey level per class, in [-1, 1]."""
    return label - 1.0


def batches(num: int = 4) -> list[dict[str, torch.Tensor]]:
    label = label_maps()
    return [{"image": images_of(label), "label": label} for _ in range(num)]


def test_to_onehot_indices_onehot_and_errors() -> None:
    onehot = to_onehot(label_maps(), NUM_CLASSES)
    assert onehot.shape == (2, NUM_CLASSES, SIZE, SIZE)
    torch.testing.assert_close(onehot.argmax(1, keepdim=True).float(), label_maps())
    assert torch.equal(to_onehot(onehot, NUM_CLASSES), onehot)
    with pytest.raises(ValueError, match="num_classes"):
        to_onehot(label_maps() + 1, NUM_CLASSES)
    with pytest.raises(ValueError, match="channels"):
        to_onehot(torch.zeros(1, 2, SIZE, SIZE), NUM_CLASSES)
    with pytest.raises(ValueError, match="integer"):
        to_onehot(label_maps() * 0.5, NUM_CLASSES)


def test_label_to_image_batch_keeps_metadata_and_checks_shapes() -> None:
    prepare = LabelToImageBatch(NUM_CLASSES)
    label = MetaTensor(label_maps(), meta={"filename_or_obj": ["a.nii.gz", "b.nii.gz"]})
    onehot, image = prepare({"label": label, "image": images_of(label_maps())})
    assert onehot.shape == (2, NUM_CLASSES, SIZE, SIZE) and onehot.dtype == torch.float32
    assert onehot.meta["filename_or_obj"] == ["a.nii.gz", "b.nii.gz"]
    assert image.shape == (2, 1, SIZE, SIZE)
    assert prepare({"label": label_maps()})[1] is None
    with pytest.raises(ValueError, match="same batch and spatial size"):
        prepare({"label": label_maps(), "image": torch.zeros(2, 1, SIZE, SIZE + 2)})
    with pytest.raises(KeyError, match="label"):
        prepare({"image": torch.zeros(2, 1, SIZE, SIZE)})
    with pytest.raises(ValueError, match="num_classes"):
        LabelToImageBatch(1)


def test_inferer_seeded_samples_do_not_depend_on_batch() -> None:
    generator = tiny_generator().eval()
    inferer = LabelToImageInferer(NUM_CLASSES, z_dim=4, num_samples=3, seed=5)
    with torch.no_grad():
        both = inferer(label_maps(2), generator)
        alone = inferer(label_maps(1), generator)
        again = inferer(label_maps(2), generator)
    assert both.shape == (2, 3, SIZE, SIZE)
    torch.testing.assert_close(both[:1], alone)
    torch.testing.assert_close(both, again)
    assert not torch.allclose(both[:, 0], both[:, 1]), "different noise must give different samples"
    with torch.no_grad():
        unseeded = LabelToImageInferer(NUM_CLASSES, z_dim=4, num_samples=2)
        assert not torch.allclose(unseeded(label_maps(1), generator), unseeded(label_maps(1), generator))
    with pytest.raises(ValueError, match="num_samples"):
        LabelToImageInferer(NUM_CLASSES, z_dim=0, num_samples=2)


def make_trainer(
    wavelet: bool = True, max_epochs: int = 1, data: list | None = None, **kwargs: object
) -> SemanticSynthesisTrainer:
    torch.manual_seed(0)
    generator, discriminator = tiny_generator(), tiny_discriminator()
    critic = WaveletDiscriminator(1, SIZE, channel_multiplier=0.01, max_channels=8) if wavelet else None
    return SemanticSynthesisTrainer(
        device="cpu",
        max_epochs=max_epochs,
        train_data_loader=batches() if data is None else data,
        generator=generator,
        discriminator=discriminator,
        g_optimizer=torch.optim.Adam(generator.parameters(), 1e-3, betas=(0.0, 0.999)),
        d_optimizer=torch.optim.Adam(discriminator.parameters(), 1e-3, betas=(0.0, 0.999)),
        prepare_batch=LabelToImageBatch(NUM_CLASSES),
        labelmix_loss=LabelMixLoss(5.0),
        wavelet_discriminator=critic,
        wavelet_optimizer=torch.optim.Adam(critic.parameters(), 1e-3) if critic is not None else None,
        **kwargs,
    )


def snapshot(network: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in network.parameters()]


def changed(before: list[torch.Tensor], network: torch.nn.Module) -> bool:
    return any(not torch.equal(b, p) for b, p in zip(before, network.parameters(), strict=True))


def test_iteration_updates_every_network_and_logs_each_loss() -> None:
    trainer = make_trainer(r1_every=2, shape_loss=ShapeConsistencyLoss(threshold=-0.5))
    networks = (trainer.generator, trainer.discriminator, trainer.wavelet_discriminator)
    before = [snapshot(n) for n in networks]
    logged: list[set[str]] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: logged.append(set(e.state.output["loss"])))
    trainer.run()
    assert all(changed(b, n) for b, n in zip(before, networks, strict=True))
    base = {"generator", "generator_wavelet", "shape", "discriminator", "labelmix", "wavelet"}
    assert logged == [base, base | {"r1"}, base, base | {"r1"}], "R1 runs every r1_every-th iteration only"
    output = trainer.state.output
    assert output["pred"].shape == (2, 1, SIZE, SIZE) and not output["pred"].requires_grad
    assert all(torch.isfinite(v) and v.dim() == 0 for v in output["loss"].values())


def test_without_wavelet_critic_and_labelmix() -> None:
    trainer = make_trainer(wavelet=False)
    trainer.labelmix_loss = None
    trainer.run()
    assert set(trainer.state.output["loss"]) == {"generator", "discriminator"}


def test_discriminator_learns_to_segment_real_images() -> None:
    """The (N+1)-class discriminator's real-image loss falls clearly below chance (log(N+1)) on a fixed batch."""
    trainer = make_trainer(wavelet=False, max_epochs=60, data=batches(1))
    trainer.run()
    onehot = to_onehot(label_maps(), NUM_CLASSES)
    with torch.no_grad():
        real_loss = oasis_cross_entropy(trainer.discriminator(images_of(label_maps())), onehot, for_real=True)
    chance = torch.log(torch.tensor(NUM_CLASSES + 1.0))
    assert real_loss < 0.75 * chance, f"real-image loss {real_loss:.3f} vs chance {chance:.3f}"


def test_argument_errors() -> None:
    with pytest.raises(ValueError, match="amp"):
        make_trainer(amp=True)
    with pytest.raises(ValueError, match="r1_every"):
        make_trainer(r1_every=0)
    generator, discriminator = tiny_generator(), tiny_discriminator()
    with pytest.raises(ValueError, match="wavelet_optimizer"):
        SemanticSynthesisTrainer(
            "cpu",
            1,
            batches(),
            generator,
            discriminator,
            torch.optim.Adam(generator.parameters()),
            torch.optim.Adam(discriminator.parameters()),
            LabelToImageBatch(NUM_CLASSES),
            discriminator_loss=OASISDiscriminatorLoss(),
            wavelet_discriminator=WaveletDiscriminator(1, SIZE, channel_multiplier=0.01, max_channels=8),
        )


def test_batches_without_images_are_an_error() -> None:
    trainer = make_trainer(wavelet=False, data=[{"label": label_maps()}])
    with pytest.raises(ValueError, match="real images"):
        trainer.run()


def test_refresh_handler_reestimates_ema_statistics() -> None:
    trainer = make_trainer(wavelet=False)
    ema = ExponentialMovingAverage(trainer.generator, decay=0.9)
    ema.attach(trainer)
    loader = DataLoader([{"label": label_maps(1)[0], "image": images_of(label_maps(1))[0]}] * 4, batch_size=2)
    refresh = RefreshBatchNorm(ema.ema_network, loader, LabelToImageBatch(NUM_CLASSES), num_batches=50)
    trainer.run()
    first_norm = ema.ema_network.body[0].norm_0.first_norm
    first_norm.running_mean.fill_(123.0)
    assert refresh() == 2, "the loader holds two batches"
    assert first_norm.running_mean.abs().max() < 100
    assert first_norm.num_batches_tracked == 2
    assert not ema.ema_network.training, "the refresh restores eval mode"
