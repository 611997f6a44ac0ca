"""Networks that MONAI core does not have."""

from .latent_mapping import LatentMappingModel
from .oasis import OASISSPADE, OASISDiscriminator, OASISGenerator, OASISResBlock
from .pixel_classifier import ClassWeightedCrossEntropy, EnsembleCrossEntropy, PixelClassifierEnsemble, PixelMLP
from .placement import place_network
from .postdae import PostDAE
from .score_unet import ScoreUNet
from .sd_autoencoder import SDAutoencoderKL
from .sd_checkpoint import load_sd_autoencoder, load_sd_vae_state_dict
from .wavelet_discriminator import HaarTransform, InverseHaarTransform, WaveletDiscriminator
from .weights import load_network_weights

__all__ = [
    "OASISSPADE",
    "ClassWeightedCrossEntropy",
    "EnsembleCrossEntropy",
    "HaarTransform",
    "InverseHaarTransform",
    "LatentMappingModel",
    "OASISDiscriminator",
    "OASISGenerator",
    "OASISResBlock",
    "PixelClassifierEnsemble",
    "PixelMLP",
    "PostDAE",
    "SDAutoencoderKL",
    "ScoreUNet",
    "WaveletDiscriminator",
    "load_network_weights",
    "load_sd_autoencoder",
    "load_sd_vae_state_dict",
    "place_network",
]
