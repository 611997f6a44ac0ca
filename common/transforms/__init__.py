"""MONAI-style transforms shared by the bundles: array versions and dictionary ("...d") versions."""

from .corruption import (
    CORRUPTION_KINDS,
    RandBlocks,
    RandDilation,
    RandDiscAddition,
    RandEdgeSwap,
    RandErosion,
    RandHoles,
    RandMaskCorruption,
    RandSaltPepper,
    RandTileDeletion,
    make_corruption,
)
from .image import EnsureChannelsd, EnsureFinited, EnsureMinSized, EnsureSameSpatialShaped
from .intensity import CTWindow, CTWindowd
from .loading import CheckedLoadImaged
from .masks import (
    CorruptMaskd,
    EnsureBinaryMask,
    EnsureBinaryMaskd,
    EnsureLabelMap,
    EnsureLabelMapd,
    SoftMasksToLabeld,
    source_name,
)
from .sdf import MaskToSDF, MaskToSDFd, SDFSamplesToMaskd, SDFToMask, SDFToMaskd, mask_to_sdf
from .slices import ExtractSlicesd, select_slice_indices
from .variants import FixedVariantd
from .writers import SaveContactSheetd, SaveMaskd, SaveOverlayd, SaveSamplesd

__all__ = [
    "CORRUPTION_KINDS",
    "CTWindow",
    "CTWindowd",
    "CheckedLoadImaged",
    "CorruptMaskd",
    "EnsureBinaryMask",
    "EnsureBinaryMaskd",
    "EnsureChannelsd",
    "EnsureFinited",
    "EnsureLabelMap",
    "EnsureLabelMapd",
    "EnsureMinSized",
    "EnsureSameSpatialShaped",
    "ExtractSlicesd",
    "FixedVariantd",
    "MaskToSDF",
    "MaskToSDFd",
    "RandBlocks",
    "RandDilation",
    "RandDiscAddition",
    "RandEdgeSwap",
    "RandErosion",
    "RandHoles",
    "RandMaskCorruption",
    "RandSaltPepper",
    "RandTileDeletion",
    "SDFSamplesToMaskd",
    "SDFToMask",
    "SDFToMaskd",
    "SaveContactSheetd",
    "SaveMaskd",
    "SaveOverlayd",
    "SaveSamplesd",
    "SoftMasksToLabeld",
    "make_corruption",
    "mask_to_sdf",
    "select_slice_indices",
    "source_name",
]
