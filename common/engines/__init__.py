"""Engine pieces: atomic checkpoints, resuming, gradient clipping."""

from .checkpoint import AtomicCheckpointSaver, ResumeFromCheckpoint, latest_checkpoint
from .handlers import ClipGradNorm

__all__ = ["AtomicCheckpointSaver", "ClipGradNorm", "ResumeFromCheckpoint", "latest_checkpoint"]
