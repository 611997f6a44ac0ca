"""Forward processes (VE SDE, VP/DDPM), samplers (predictor-corrector, ancestral, DPM-Solver++ ODE), inferers, and
the reuse of a trained DDPM for segmentation (decoder features, pixel classifiers, a fine-tuned noise predictor)."""

from .denoiser_segmentation import DenoiserSegmentationNetwork
from .features import DiffusionFeatureExtractor, decoder_blocks, fixed_noise
from .inferer import SDFSamplingInferer
from .pixel_features import EnsembleVoted, FeatureStore, PixelBatches, PixelClassifierInferer
from .samplers import SAMPLERS, ancestral_sample, dpmpp_2m_sample, pc_sample
from .sde import SDE_NAMES, VESDE, VPSDE, Process, make_sde, truncated_normal

__all__ = [
    "SAMPLERS",
    "SDE_NAMES",
    "VESDE",
    "VPSDE",
    "DenoiserSegmentationNetwork",
    "DiffusionFeatureExtractor",
    "EnsembleVoted",
    "FeatureStore",
    "PixelBatches",
    "PixelClassifierInferer",
    "Process",
    "SDFSamplingInferer",
    "ancestral_sample",
    "decoder_blocks",
    "dpmpp_2m_sample",
    "fixed_noise",
    "make_sde",
    "pc_sample",
    "truncated_normal",
]
