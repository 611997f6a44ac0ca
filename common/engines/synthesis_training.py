"""Training a label-to-image generator the OASIS way: an ignite iteration with a generator step and critic steps.

One iteration of :class:`SemanticSynthesisTrainer` (OASIS's order, G first):

1. generator: ``G(l)`` is scored by the (N+1)-class discriminator ``D`` (class-balanced cross-entropy towards the
   label map), plus, when configured, the wavelet critic's non-saturating loss and a differentiable shape loss;
2. discriminator: ``D`` learns to segment real images into the label's classes and every pixel of ``G(l)`` (made
   again, without gradients) as "fake", plus LabelMix;
3. wavelet critic (optional, the seed's TWWinde/USIS extension): non-saturating real/fake loss, and every
   ``r1_every`` iterations a separate R1 step on real images.

MONAI's ``AdversarialTrainer`` runs one generator loss on the critic's output for the fake image and one critic
loss on (real, fake) outputs; OASIS's LabelMix (a third critic input built from both images and the label), a
second critic and a lazily regularised R1 step do not fit it, hence this trainer. The batch pieces
(:class:`LabelToImageBatch`, :class:`LabelToImageInferer`) also serve MONAI's ``SupervisedEvaluator`` and the
inference config, and :class:`RefreshBatchNorm` re-estimates the EMA generator's BatchNorm statistics before it is
validated or saved.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.engines import Trainer
from monai.engines.utils import default_metric_cmp_fn
from monai.inferers import Inferer
from monai.utils import CommonKeys as Keys
from monai.utils import convert_to_dst_type
from torch import Tensor, nn
from torch.optim import Optimizer

from .ema import refresh_batchnorm_statistics
from .handlers import epoch_seed
from .oasis_losses import (
    LabelMixLoss,
    OASISDiscriminatorLoss,
    OASISGeneratorLoss,
    label_mix,
    nonsaturating_discriminator_loss,
    nonsaturating_generator_loss,
    r1_penalty,
)

__all__ = ["LabelToImageBatch", "LabelToImageInferer", "RefreshBatchNorm", "SemanticSynthesisTrainer", "to_onehot"]


def to_onehot(label: Tensor, num_classes: int, name: str = "label") -> Tensor:
    """A label map as a float one-hot map (B, ``num_classes``, H, W): from class indices (B, 1, H, W), or checked.

    ``num_classes`` counts every class, background included. Values outside 0 .. num_classes - 1 are an error naming
    the config key ``num_classes`` (``one_hot`` would otherwise fail deep inside torch, or on a GPU, not at all).
    """
    if label.dim() != 4:
        raise ValueError(f"{name}: expected a label map (B, 1, H, W) or one-hot (B, N, H, W), got {list(label.shape)}.")
    if label.shape[1] == num_classes and num_classes > 1:
        return label.float()
    if label.shape[1] != 1:
        raise ValueError(
            f"{name}: expected a one-channel label map or a one-hot map of {num_classes} channels (config key "
            f"'num_classes' + background), got {label.shape[1]} channels."
        )
    classes = torch.as_tensor(label).round().long()
    if not torch.equal(classes.to(label.dtype), label):
        raise ValueError(f"{name}: a label map must hold integer classes; found non-integer values.")
    low, high = int(classes.min()), int(classes.max())
    if low < 0 or high >= num_classes:
        raise ValueError(
            f"{name}: label values must be 0 .. {num_classes - 1} ({num_classes - 1} classes, config key "
            f"'num_classes', plus background), found {low} .. {high}."
        )
    onehot = torch.zeros((label.shape[0], num_classes, *label.shape[2:]), device=label.device)
    return onehot.scatter_(1, classes, 1.0)


class LabelToImageBatch:
    """``prepare_batch`` of label-to-image synthesis: ``(one-hot label map, real image)`` on the device.

    The label map (``label_key``, class indices (B, 1, H, W)) becomes the network input; the image (``image_key``) is
    the target. One-hot encoding happens here, on the device, so that datasets cache one channel per label map
    instead of ``num_classes``.

    Args:
        num_classes: classes of the one-hot map, background included.
        label_key: batch key of the label maps.
        image_key: batch key of the real images; absent in inference batches, where the target is None.
    """

    def __init__(self, num_classes: int, label_key: str = "label", image_key: str = "image") -> None:
        if int(num_classes) != num_classes or num_classes < 2:
            raise ValueError(f"num_classes must count background and at least one class (>= 2), got {num_classes}.")
        self.num_classes = int(num_classes)
        self.label_key = label_key
        self.image_key = image_key

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: torch.device | str | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[Tensor, Tensor | None]:
        if self.label_key not in batchdata:
            raise KeyError(
                f"LabelToImageBatch: the batch has no '{self.label_key}' (label map), keys {list(batchdata)}."
            )
        label = torch.as_tensor(batchdata[self.label_key]).to(device=device, non_blocking=non_blocking, **kwargs)
        onehot = to_onehot(label, self.num_classes, name=f"'{self.label_key}'")
        onehot, *_ = convert_to_dst_type(onehot, label, dtype=torch.float32)  # keeps the label files' metadata
        image = batchdata.get(self.image_key)
        if image is None:
            return onehot, None
        image = torch.as_tensor(image).to(device=device, non_blocking=non_blocking, **kwargs).float()
        if image.shape[0] != label.shape[0] or image.shape[2:] != label.shape[2:]:
            raise ValueError(
                f"'{self.image_key}' {list(image.shape)} and '{self.label_key}' {list(label.shape)} must have the "
                "same batch and spatial size (resize labels with nearest neighbour only)."
            )
        return onehot, image


class LabelToImageInferer(Inferer):
    """Generate ``num_samples`` images per label map: (B, ``num_samples`` * C, H, W), sample k in channels k*C...

    The label map may be class indices (B, 1, H, W) or one-hot. Sample k uses the same noise vector ``z_k`` for
    every label map of every batch when ``seed`` is set (reproducible outputs that do not depend on the batch size,
    and "style k" is the same style everywhere), and fresh noise on every call when ``seed`` is None. Noise is drawn
    on the CPU and moved to the device (OASIS issue #29), so a seed gives the same images on CPU and GPU up to
    floating-point differences.

    Args:
        num_classes: classes of the one-hot map, background included.
        z_dim: length of the generator's noise vector (0: a generator without noise, one sample only).
        num_samples: images per label map.
        seed: noise seed; None draws new noise every call.
    """

    def __init__(self, num_classes: int, z_dim: int, num_samples: int = 1, seed: int | None = None) -> None:
        super().__init__()
        if int(num_samples) != num_samples or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples}.")
        if int(z_dim) != z_dim or z_dim < 0:
            raise ValueError(f"z_dim must be an integer >= 0, got {z_dim}.")
        if z_dim == 0 and num_samples > 1:
            raise ValueError("a generator without noise (z_dim 0) gives one image per label map: set num_samples 1.")
        self.num_classes = int(num_classes)
        self.z_dim = int(z_dim)
        self.num_samples = int(num_samples)
        self.seed = seed

    def noise(self, batch: int) -> Tensor:
        """(num_samples, batch, z_dim) noise vectors: ``z_k`` repeated over the batch when seeded."""
        if self.seed is None:
            return torch.randn(self.num_samples, batch, self.z_dim)
        generator = torch.Generator().manual_seed(int(self.seed))
        return torch.randn(self.num_samples, 1, self.z_dim, generator=generator).expand(-1, batch, -1)

    def __call__(self, inputs: Tensor, network: Callable[..., Tensor], *args: Any, **kwargs: Any) -> Tensor:
        onehot = to_onehot(torch.as_tensor(inputs), self.num_classes, name="label map")
        if self.z_dim == 0:
            return network(onehot)
        noise = self.noise(onehot.shape[0]).to(device=onehot.device, dtype=onehot.dtype)
        return torch.cat([network(onehot, z.contiguous()) for z in noise], dim=1)


class RefreshBatchNorm:
    """Ignite handler: re-estimate the (EMA) generator's BatchNorm statistics on training label maps.

    Attach it before the validation and checkpoint handlers (ignite runs handlers of one event in the order they
    were attached): at every ``every``-th epoch end it runs ``num_batches`` batches of ``data_loader`` through
    ``network`` in train mode (``refresh_batchnorm_statistics``), as OASIS does before every evaluation and save.

    Args:
        network: the network to refresh, e.g. ``ExponentialMovingAverage.ema_network``.
        data_loader: training batches.
        prepare_batch: a ``LabelToImageBatch``; its first output (the one-hot label) is the generator input.
        num_batches: batches per refresh (OASIS: 50).
        device: device of the network.
        every: refresh every this many epochs.
    """

    def __init__(
        self,
        network: nn.Module,
        data_loader: Iterable,
        prepare_batch: LabelToImageBatch,
        num_batches: int = 50,
        device: torch.device | str | None = None,
        every: int = 1,
    ) -> None:
        self.network = network
        self.data_loader = data_loader
        self.prepare_batch = prepare_batch
        self.num_batches = int(num_batches)
        self.device = device
        self.every = int(every)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.every), self)

    def __call__(self, engine: Engine | None = None) -> int:
        """Refresh now; returns the number of batches used."""
        return refresh_batchnorm_statistics(
            self.network, self.data_loader, self.num_batches, lambda batch: self.prepare_batch(batch, self.device)[0]
        )


class SemanticSynthesisTrainer(Trainer):
    """OASIS training of a label-to-image generator, with an optional wavelet critic (see the module docstring).

    Each iteration's output holds ``image`` (the one-hot label map), ``label`` (the real image), ``pred`` (the
    generated image, detached) and ``loss``: a dict of the iteration's loss terms (``generator``, ``discriminator``,
    ``labelmix``, ``wavelet``, ``r1`` as configured), for ``StatsHandler`` and ``TensorBoardStatsHandler``.

    Args:
        device: training device.
        max_epochs: epochs to train.
        train_data_loader: batches of dicts with the label maps and real images.
        generator: label map (one-hot) -> image in [-1, 1].
        discriminator: image -> (N+1)-class logits, channel 0 "fake" (``OASISDiscriminator``).
        g_optimizer: optimizer of the generator.
        d_optimizer: optimizer of the discriminator.
        prepare_batch: ``LabelToImageBatch``.
        generator_loss: ``OASISGeneratorLoss``.
        discriminator_loss: ``OASISDiscriminatorLoss``.
        labelmix_loss: ``LabelMixLoss``; None trains without LabelMix.
        wavelet_discriminator: image -> (B, 1) realism logit (``WaveletDiscriminator``); None: no second critic.
        wavelet_optimizer: its optimizer (required with it).
        wavelet_weight: factor on the generator's non-saturating loss from the wavelet critic.
        wavelet_critic_weight: factor on the critic's own loss (TWWinde: 4, its ``reg_every``); with Adam it mainly
            sets the critic loss's scale relative to the R1 steps, which share its optimizer.
        r1_gamma: R1 weight; 0 disables R1.
        r1_every: the R1 step runs every this many iterations (TWWinde: 4, with gamma 10 and no further scaling).
        shape_loss: ``ShapeConsistencyLoss`` (image, one-hot label) added to the generator loss; None: off.
        seed: seed of LabelMix's per-class bits (drawn on the CPU from their own generator, seeded again from
            ``(seed, epoch)`` as each epoch starts, so that a resumed run draws what the uninterrupted run drew).
        epoch_length, non_blocking, iteration_update, postprocessing, key_train_metric, additional_metrics,
        metric_cmp_fn, train_handlers, amp: as MONAI's ``Trainer`` (``amp`` is not supported and must be False).
    """

    def __init__(
        self,
        device: torch.device | str,
        max_epochs: int,
        train_data_loader: Iterable,
        generator: nn.Module,
        discriminator: nn.Module,
        g_optimizer: Optimizer,
        d_optimizer: Optimizer,
        prepare_batch: LabelToImageBatch,
        generator_loss: OASISGeneratorLoss | None = None,
        discriminator_loss: OASISDiscriminatorLoss | None = None,
        labelmix_loss: LabelMixLoss | None = None,
        wavelet_discriminator: nn.Module | None = None,
        wavelet_optimizer: Optimizer | None = None,
        wavelet_weight: float = 1.0,
        wavelet_critic_weight: float = 1.0,
        r1_gamma: float = 10.0,
        r1_every: int = 4,
        shape_loss: nn.Module | None = None,
        seed: int = 0,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        iteration_update: Callable[[Engine, Any], Any] | None = None,
        postprocessing: Callable | None = None,
        key_train_metric: dict | None = None,
        additional_metrics: dict | None = None,
        metric_cmp_fn: Callable = default_metric_cmp_fn,
        train_handlers: Sequence | None = None,
        amp: bool = False,
    ) -> None:
        if amp:
            raise ValueError("SemanticSynthesisTrainer does not support amp: set the config key 'amp' to false.")
        if wavelet_discriminator is not None and wavelet_optimizer is None:
            raise ValueError("wavelet_discriminator needs wavelet_optimizer (the wavelet critic's optimizer).")
        if int(r1_every) != r1_every or r1_every < 1:
            raise ValueError(f"r1_every must be a positive integer, got {r1_every}.")
        if min(r1_gamma, wavelet_weight, wavelet_critic_weight) < 0:
            raise ValueError(
                f"r1_gamma, wavelet_weight and wavelet_critic_weight must be >= 0, got {r1_gamma}, {wavelet_weight} "
                f"and {wavelet_critic_weight}."
            )
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch,
            iteration_update=iteration_update,
            postprocessing=postprocessing,
            key_metric=key_train_metric,
            additional_metrics=additional_metrics,
            metric_cmp_fn=metric_cmp_fn,
            handlers=train_handlers,
            amp=False,
            decollate=False,
        )
        self.generator = generator
        self.discriminator = discriminator
        self.g_optimizer = g_optimizer
        self.d_optimizer = d_optimizer
        self.generator_loss = generator_loss or OASISGeneratorLoss()
        self.discriminator_loss = discriminator_loss or OASISDiscriminatorLoss()
        self.labelmix_loss = labelmix_loss
        self.wavelet_discriminator = wavelet_discriminator
        self.wavelet_optimizer = wavelet_optimizer
        self.wavelet_weight = float(wavelet_weight)
        self.wavelet_critic_weight = float(wavelet_critic_weight)
        self.r1_gamma = float(r1_gamma)
        self.r1_every = int(r1_every)
        self.shape_loss = shape_loss
        self.labelmix_seed = int(seed)
        self.labelmix_generator = torch.Generator().manual_seed(self.labelmix_seed)
        self.add_event_handler(Events.EPOCH_STARTED, self._seed_labelmix)
        # MONAI handlers that act on ``engine.network``/``engine.optimizer`` (e.g. gradient clipping) get the generator
        self.network = generator
        self.optimizer = g_optimizer

    def _seed_labelmix(self, engine: Engine) -> None:
        self.labelmix_generator.manual_seed(epoch_seed(self.labelmix_seed, engine.state.epoch))

    def _generator_step(self, label: Tensor) -> dict[str, Tensor]:
        self.g_optimizer.zero_grad(set_to_none=True)
        fake = self.generator(label)
        losses = {"generator": self.generator_loss(self.discriminator(fake), label)}
        total = losses["generator"]
        if self.wavelet_discriminator is not None:
            losses["generator_wavelet"] = self.wavelet_weight * nonsaturating_generator_loss(
                self.wavelet_discriminator(fake)
            )
            total = total + losses["generator_wavelet"]
        if self.shape_loss is not None:
            losses["shape"] = self.shape_loss(fake, label)
            total = total + losses["shape"]
        total.backward()
        self.g_optimizer.step()
        return losses

    def _discriminator_step(self, label: Tensor, real: Tensor, fake: Tensor) -> dict[str, Tensor]:
        self.d_optimizer.zero_grad(set_to_none=True)
        real_logits, fake_logits = self.discriminator(real), self.discriminator(fake)
        losses = {"discriminator": self.discriminator_loss(real_logits, fake_logits, label)}
        total = losses["discriminator"]
        if self.labelmix_loss is not None:
            mixed, mask = label_mix(real, fake, label, generator=self.labelmix_generator)
            losses["labelmix"] = self.labelmix_loss(self.discriminator(mixed), real_logits, fake_logits, mask)
            total = total + losses["labelmix"]
        total.backward()
        self.d_optimizer.step()
        return losses

    def _wavelet_step(self, real: Tensor, fake: Tensor, iteration: int) -> dict[str, Tensor]:
        critic, optimizer = self.wavelet_discriminator, self.wavelet_optimizer
        assert critic is not None and optimizer is not None  # checked in __init__
        optimizer.zero_grad(set_to_none=True)
        loss = self.wavelet_critic_weight * nonsaturating_discriminator_loss(critic(real), critic(fake))
        loss.backward()
        optimizer.step()
        losses = {"wavelet": loss}
        if self.r1_gamma > 0 and iteration % self.r1_every == 0:
            optimizer.zero_grad(set_to_none=True)
            losses["r1"] = r1_penalty(critic, real, self.r1_gamma)
            losses["r1"].backward()
            optimizer.step()
        return losses

    def _iteration(self, engine: Engine, batchdata: Mapping[str, Any]) -> dict[str, Any]:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        label, real = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)
        if real is None:
            raise ValueError("training batches need real images (key 'image') besides the label maps.")
        networks = [self.generator, self.discriminator, self.wavelet_discriminator]
        for network in networks:
            if network is not None:
                network.train()
        losses = self._generator_step(label)
        with torch.no_grad():  # OASIS makes the discriminator's fake images again, with the updated generator
            fake = self.generator(label)
        losses |= self._discriminator_step(label, real, fake)
        if self.wavelet_discriminator is not None:
            losses |= self._wavelet_step(real, fake, engine.state.iteration)
        return {
            Keys.IMAGE: label,
            Keys.LABEL: real,
            Keys.PRED: fake,
            Keys.LOSS: {name: value.detach() for name, value in losses.items()},
        }
