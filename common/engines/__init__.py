"""Engine pieces: atomic checkpoints, resuming, gradient clipping, diffusion training steps."""

from .checkpoint import AtomicCheckpointSaver, CheckedCheckpointLoader, ResumeFromCheckpoint, latest_checkpoint
from .diffusion_training import DiffusionPrepareBatchd, DiffusionTrainingInferer
from .handlers import ClipGradNorm

__all__ = [
    "AtomicCheckpointSaver",
    "CheckedCheckpointLoader",
    "ClipGradNorm",
    "DiffusionPrepareBatchd",
    "DiffusionTrainingInferer",
    "ResumeFromCheckpoint",
    "latest_checkpoint",
]
