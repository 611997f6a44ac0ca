"""A trained DDPM noise predictor fine-tuned into a segmentation network (Alshenoudy et al. 2023).

The DDPM's output layer is replaced by a zero-initialised ``SiLU -> Conv3x3`` class head (the original drops the
output GroupNorm too); an image is noised to ``x_t`` at one fixed timestep and the network's output read as class
logits. With ``freeze_encoder`` the input convolution, the encoder and the middle block run without gradients, so
only the decoder, the time embedding (through its decoder uses) and the head learn, as in the original.
"""

from __future__ import annotations

import torch
from monai.networks.nets import DiffusionModelUNet
from monai.networks.nets.diffusion_model_unet import get_timestep_embedding
from monai.networks.schedulers import Scheduler
from torch import nn

from common.diffusion.features import fixed_noise
from common.networks.weights import load_network_weights

__all__ = ["DenoiserSegmentationNetwork"]


class DenoiserSegmentationNetwork(nn.Module):
    """``(B, C, H, W)`` images in [-1, 1] -> ``(B, num_classes, H, W)`` logits from a DDPM's decoder.

    Training draws fresh noise for ``x_t`` (an augmentation, as the original); evaluation uses a seeded noise image
    shared by all images, so predictions are reproducible (the original drew fresh noise there too).

    Args:
        network: the DDPM noise predictor; load its trained weights with :py:meth:`load_ddpm` before fine-tuning.
        scheduler: its noise schedule.
        num_classes: output classes, background included.
        timestep: the fixed diffusion timestep of ``x_t``.
        freeze_encoder: run the encoder and middle block without gradients.
        seed: seed of the evaluation noise.
    """

    def __init__(
        self,
        network: DiffusionModelUNet,
        scheduler: Scheduler,
        num_classes: int,
        timestep: int = 200,
        freeze_encoder: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not 0 <= timestep < scheduler.num_train_timesteps:
            raise ValueError(
                f"denoiser_timestep {timestep} must lie in 0..{scheduler.num_train_timesteps - 1} (the DDPM's steps)."
            )
        self.unet, self.scheduler = network, scheduler
        self.timestep, self.freeze_encoder, self.seed = int(timestep), bool(freeze_encoder), int(seed)
        width = network.block_out_channels[0]
        head = nn.Conv2d(width, num_classes, kernel_size=3, padding=1)
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        self._ddpm_out = [network.out]  # kept aside, unregistered, so a DDPM checkpoint loads strictly
        network.out = nn.Sequential(nn.SiLU(), head)
        if self.freeze_encoder:
            for module in (network.conv_in, network.down_blocks, network.middle_block):
                module.requires_grad_(False)

    def load_ddpm(self, path: str, config_key: str = "ddpm_path") -> None:
        """Load a trained DDPM (its EMA weights when the file has them) into everything but the class head."""
        head, self.unet.out = self.unet.out, self._ddpm_out[0]
        try:
            load_network_weights(self.unet, path, ("ema", "model"), config_key)
        finally:
            self.unet.out = head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        unet, batch = self.unet, images.shape[0]
        timesteps = torch.full((batch,), self.timestep, device=images.device, dtype=torch.long)
        if self.training:
            noise = torch.randn_like(images)
        else:
            noise = fixed_noise(self.seed, images.shape[1:], images.device).expand_as(images)
        x = self.scheduler.add_noise(original_samples=images, noise=noise, timesteps=timesteps)
        emb = unet.time_embed(get_timestep_embedding(timesteps, unet.block_out_channels[0]).to(x.dtype))
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_encoder):
            h = unet.conv_in(x)
            skips = [h]
            for block in unet.down_blocks:
                h, residuals = block(hidden_states=h, temb=emb, context=None)
                skips.extend(residuals)
            h = unet.middle_block(hidden_states=h, temb=emb, context=None)
        for block in unet.up_blocks:
            count = len(block.resnets)
            h = block(hidden_states=h, res_hidden_states_list=skips[-count:], temb=emb, context=None)
            skips = skips[:-count]
        return unet.out(h)
