"""Engine pieces: atomic checkpoints, resuming, gradient clipping."""

from .checkpoint import AtomicCheckpointSaver, CheckedCheckpointLoader, ResumeFromCheckpoint, latest_checkpoint
from .handlers import ClipGradNorm

__all__ = [
    "AtomicCheckpointSaver",
    "CheckedCheckpointLoader",
    "ClipGradNorm",
    "ResumeFromCheckpoint",
    "latest_checkpoint",
]
