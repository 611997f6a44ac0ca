"""Engine pieces: atomic checkpoints, resuming, gradient clipping, weight EMA, diffusion training steps, latent
segmentation and autoencoder training."""

from .autoencoder_training import (
    DiscriminatorAdversarialLoss,
    GeneratorAdversarialLoss,
    ImageAndMaskBatch,
    KLReconstructionLoss,
    PosteriorSampleInferer,
)
from .checkpoint import AtomicCheckpointSaver, CheckedCheckpointLoader, ResumeFromCheckpoint, latest_checkpoint
from .diffusion_training import DiffusionPrepareBatchd, DiffusionTrainingInferer
from .ema import ExponentialMovingAverage
from .handlers import ClipGradNorm, iteration_loss
from .latent_segmentation import (
    EncodeLatentsd,
    LatentPrepareBatch,
    LatentSegmentationInferer,
    LatentSegmentationLoss,
    MaskLatentCodec,
    MaskReconstructionInferer,
)

__all__ = [
    "AtomicCheckpointSaver",
    "CheckedCheckpointLoader",
    "ClipGradNorm",
    "DiffusionPrepareBatchd",
    "DiffusionTrainingInferer",
    "DiscriminatorAdversarialLoss",
    "EncodeLatentsd",
    "ExponentialMovingAverage",
    "GeneratorAdversarialLoss",
    "ImageAndMaskBatch",
    "KLReconstructionLoss",
    "LatentPrepareBatch",
    "LatentSegmentationInferer",
    "LatentSegmentationLoss",
    "MaskLatentCodec",
    "MaskReconstructionInferer",
    "PosteriorSampleInferer",
    "ResumeFromCheckpoint",
    "iteration_loss",
    "latest_checkpoint",
]
