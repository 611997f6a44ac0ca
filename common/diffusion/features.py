"""Pixel features of a trained DDPM: decoder activations of a noised image, upsampled to the image's size.

Baranchuk et al. (ddpm-segmentation) and Alshenoudy et al. noise an image to ``x_t`` at a few timesteps, run the
DDPM's noise predictor once per timestep, and use the outputs of chosen decoder blocks as a per-pixel descriptor.
Blocks are numbered as improved-diffusion's ``output_blocks`` (what the papers and their configs name): with
``num_res_blocks`` residual blocks per level the decoder has ``levels * (num_res_blocks + 1)`` blocks, block ``i``
at decoder level ``i // (num_res_blocks + 1)`` (deepest first); a block's output includes its attention and, for the
last block of a level, its up-sampling. :py:func:`decoder_blocks` maps these numbers to MONAI's
``DiffusionModelUNet`` modules.

Unlike the original (fresh noise on every forward), the noise is drawn from a seeded generator: one noise image per
timestep, shared by every image, as ddpm-segmentation does, so a prediction is reproducible and does not depend on
the other images of its batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import DiffusionModelUNet
from monai.networks.schedulers import Scheduler
from torch import nn
from torch.nn.functional import interpolate

from common.networks.weights import load_network_weights

__all__ = ["DiffusionFeatureExtractor", "decoder_blocks", "fixed_noise"]


def fixed_noise(seed: int, shape: Sequence[int], device: torch.device | str = "cpu") -> torch.Tensor:
    """A noise image ``(1, *shape)`` drawn from ``torch.Generator().manual_seed(seed)``: the same on every call."""
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randn((1, *shape), generator=generator).to(device)


def decoder_blocks(unet: DiffusionModelUNet) -> list[nn.Module]:
    """The module whose output is improved-diffusion's ``output_blocks[i]`` output, for every decoder block ``i``."""
    blocks: list[nn.Module] = []
    for level in unet.up_blocks:
        resnets = list(level.resnets)
        attentions = list(getattr(level, "attentions", None) or [None] * len(resnets))
        for j, (resnet, attention) in enumerate(zip(resnets, attentions, strict=True)):
            last_of_level = j == len(resnets) - 1
            if last_of_level and getattr(level, "upsampler", None) is not None:
                blocks.append(level.upsampler)
            else:
                blocks.append(attention if attention is not None else resnet)
    return blocks


def _block_channels(unet: DiffusionModelUNet) -> list[int]:
    """Output channels of every decoder block (the level's width; an up-sampler keeps it)."""
    return [level.resnets[0].out_channels for level in unet.up_blocks for _ in level.resnets]


class DiffusionFeatureExtractor(nn.Module):
    """``(B, C, H, W)`` images in [-1, 1] -> ``(B, F, H, W)`` features from a frozen DDPM's decoder.

    The features are ordered timestep by timestep, and within a timestep block by block in the order given;
    ``F = len(timesteps) * sum(channels of the blocks)``. Every map is upsampled bilinearly (``align_corners=False``,
    as the original) to the image's size.

    Args:
        network: the trained noise predictor (its weights are frozen; the EMA weights in the bundles).
        scheduler: the DDPM's noise schedule (``add_noise`` makes ``x_t``).
        blocks: decoder block numbers (improved-diffusion's ``output_blocks``; 16-18 are the 64-channel blocks at
            half resolution of the paper's 128 x 128 network).
        timesteps: diffusion timesteps at which to extract features (200 of 4000 in the paper's tutorial).
        seed: seed of the noise images.
        feature_dtype: dtype of the returned features (float16 halves the memory of stored features).
        checkpoint: file with the DDPM's weights, loaded strictly at the first forward (so a bundle can be inspected
            before its DDPM is trained); its ``"ema"`` weights when it has them, else ``"model"``. Empty: ``network``
            is used as it is.
        checkpoint_key: config key of ``checkpoint``, named in errors.

    Raises:
        ValueError: a block number outside the decoder, a timestep outside the schedule, or empty lists; the message
            names the config key (``feature_blocks``, ``feature_timesteps``).
    """

    def __init__(
        self,
        network: DiffusionModelUNet,
        scheduler: Scheduler,
        blocks: Sequence[int] = (16, 17, 18),
        timesteps: Sequence[int] = (200,),
        seed: int = 0,
        feature_dtype: torch.dtype = torch.float32,
        checkpoint: str = "",
        checkpoint_key: str = "ddpm_path",
    ) -> None:
        super().__init__()
        modules = decoder_blocks(network)
        blocks, timesteps = [int(b) for b in blocks], [int(t) for t in timesteps]
        if not blocks or any(not 0 <= b < len(modules) for b in blocks):
            raise ValueError(
                f"feature_blocks {blocks} must be non-empty decoder block numbers in 0..{len(modules) - 1} "
                f"(this network's decoder has {len(modules)} blocks)."
            )
        num_steps = scheduler.num_train_timesteps
        if not timesteps or any(not 0 <= t < num_steps for t in timesteps):
            raise ValueError(f"feature_timesteps {timesteps} must be non-empty timesteps in 0..{num_steps - 1}.")
        self.network = network.requires_grad_(False).eval()
        self.scheduler = scheduler
        self.blocks, self.timesteps, self.seed = blocks, timesteps, int(seed)
        self.feature_dtype = feature_dtype
        self.source, self.checkpoint_key, self._loaded = checkpoint, checkpoint_key, not checkpoint
        self._modules_to_hook = [modules[b] for b in blocks]
        channels = _block_channels(network)
        self.num_features = len(timesteps) * sum(channels[b] for b in blocks)

    def train(self, mode: bool = True) -> DiffusionFeatureExtractor:
        """The DDPM always stays in eval mode (its statistics are frozen)."""
        super().train(mode)
        self.network.eval()
        return self

    def load_weights(self) -> None:
        """Load ``checkpoint`` into the network, once."""
        if not self._loaded:
            load_network_weights(self.network, self.source, ("ema", "model"), self.checkpoint_key)
            self._loaded = True

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.load_weights()
        size = images.shape[2:]
        captured: dict[int, torch.Tensor] = {}

        def keep(module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            captured[id(module)] = output

        handles = [module.register_forward_hook(keep) for module in self._modules_to_hook]
        features = []
        try:
            for index, t in enumerate(self.timesteps):
                noise = fixed_noise(self.seed + index, images.shape[1:], images.device).expand_as(images)
                timesteps = torch.full((images.shape[0],), t, device=images.device, dtype=torch.long)
                noisy = self.scheduler.add_noise(original_samples=images, noise=noise, timesteps=timesteps)
                self.network(noisy, timesteps)
                for module in self._modules_to_hook:
                    block = captured[id(module)]
                    features.append(interpolate(block, size=size, mode="bilinear", align_corners=False))
        finally:
            for handle in handles:
                handle.remove()
        return torch.cat(features, dim=1).to(self.feature_dtype)
