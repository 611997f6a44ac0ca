"""Engine pieces: atomic checkpoints, resuming, gradient clipping, weight EMA, diffusion training steps, latent
segmentation, autoencoder training and OASIS label-to-image synthesis (its losses and trainer)."""

from .autoencoder_training import (
    DiscriminatorAdversarialLoss,
    GeneratorAdversarialLoss,
    ImageAndMaskBatch,
    KLReconstructionLoss,
    PosteriorSampleInferer,
)
from .batches import PlainTensorBatch
from .checkpoint import AtomicCheckpointSaver, CheckedCheckpointLoader, ResumeFromCheckpoint, latest_checkpoint
from .diffusion_training import DiffusionPrepareBatchd, DiffusionTrainingInferer
from .ema import ExponentialMovingAverage, refresh_batchnorm_statistics
from .handlers import ClipGradNorm, ProtectOutputDir, SeedEachEpoch, epoch_seed, iteration_loss
from .latent_segmentation import (
    EncodeLatentsd,
    LatentPrepareBatch,
    LatentSegmentationInferer,
    LatentSegmentationLoss,
    MaskLatentCodec,
    MaskReconstructionInferer,
)
from .oasis_losses import (
    LabelMixLoss,
    OASISDiscriminatorLoss,
    OASISGeneratorLoss,
    ShapeConsistencyLoss,
    class_balanced_weights,
    label_mix,
    n_plus_one_targets,
    nonsaturating_discriminator_loss,
    nonsaturating_generator_loss,
    oasis_cross_entropy,
    r1_penalty,
)
from .synthesis_training import (
    LabelToImageBatch,
    LabelToImageInferer,
    RefreshBatchNorm,
    SemanticSynthesisTrainer,
    to_onehot,
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
    "LabelMixLoss",
    "LabelToImageBatch",
    "LabelToImageInferer",
    "LatentPrepareBatch",
    "LatentSegmentationInferer",
    "LatentSegmentationLoss",
    "MaskLatentCodec",
    "MaskReconstructionInferer",
    "OASISDiscriminatorLoss",
    "OASISGeneratorLoss",
    "PlainTensorBatch",
    "PosteriorSampleInferer",
    "ProtectOutputDir",
    "RefreshBatchNorm",
    "ResumeFromCheckpoint",
    "SeedEachEpoch",
    "SemanticSynthesisTrainer",
    "ShapeConsistencyLoss",
    "class_balanced_weights",
    "epoch_seed",
    "iteration_loss",
    "label_mix",
    "latest_checkpoint",
    "n_plus_one_targets",
    "nonsaturating_discriminator_loss",
    "nonsaturating_generator_loss",
    "oasis_cross_entropy",
    "r1_penalty",
    "refresh_batchnorm_statistics",
    "to_onehot",
]
