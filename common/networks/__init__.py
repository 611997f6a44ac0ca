"""Networks that MONAI core does not have."""

from .latent_mapping import LatentMappingModel
from .postdae import PostDAE
from .score_unet import ScoreUNet
from .sd_autoencoder import SDAutoencoderKL
from .sd_checkpoint import load_sd_autoencoder, load_sd_vae_state_dict

__all__ = [
    "LatentMappingModel",
    "PostDAE",
    "SDAutoencoderKL",
    "ScoreUNet",
    "load_sd_autoencoder",
    "load_sd_vae_state_dict",
]
