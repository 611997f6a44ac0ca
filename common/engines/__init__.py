"""Engine pieces: atomic checkpoints, resuming, gradient clipping, diffusion training steps, latent segmentation
and autoencoder training."""

from .autoencoder_training import (
    DiscriminatorAdversarialLoss,
    GeneratorAdversarialLoss,
    ImageAndMaskBatch,
    KLReconstructionLoss,
    PosteriorSampleInferer,
)
from .checkpoint import AtomicCheckpointSaver, CheckedCheckpointLoader, ResumeFromCheckpoint, latest_checkpoint
from .diffusion_training import DiffusionPrepareBatchd, DiffusionTrainingInferer
from .handlers import ClipGradNorm
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
    "latest_checkpoint",
]
