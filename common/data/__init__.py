"""Data helpers of the collection: seeded synthetic samples of every domain and MONAI datalist tools."""

from __future__ import annotations

from common.data.brats import (
    BRATS_MODALITIES,
    BRATS_REGIONS,
    BRATS_REMAP,
    brats_case_files,
    brats_case_shape,
    brats_slice,
    normalize_slice,
    read_brats_case,
    remap_brats_labels,
)
from common.data.datalist import (
    SPLITS,
    SUPPORTED_EXTENSIONS,
    list_files,
    load_datalist,
    pair_folder,
    split_extension,
    split_items,
    validate_fractions,
    write_datalist,
)
from common.data.synthetic import (
    BRATS_LABELS,
    CT_ORGANS,
    SYNTHETIC_KINDS,
    SyntheticKind,
    brain_slice,
    brain_volume,
    chest_xray,
    ct_slice,
    lung_mask,
    nuclei_tile,
    polyp_frame,
    write_synthetic_dataset,
)
from common.data.variants import VariantSampler, expand_variants
from common.data.volume_slices import assemble_volume, write_volume_slices

__all__ = [
    "BRATS_LABELS",
    "BRATS_MODALITIES",
    "BRATS_REGIONS",
    "BRATS_REMAP",
    "CT_ORGANS",
    "SPLITS",
    "SUPPORTED_EXTENSIONS",
    "SYNTHETIC_KINDS",
    "SyntheticKind",
    "VariantSampler",
    "assemble_volume",
    "brain_slice",
    "brain_volume",
    "brats_case_files",
    "brats_case_shape",
    "brats_slice",
    "chest_xray",
    "ct_slice",
    "expand_variants",
    "list_files",
    "load_datalist",
    "lung_mask",
    "normalize_slice",
    "nuclei_tile",
    "pair_folder",
    "polyp_frame",
    "read_brats_case",
    "remap_brats_labels",
    "split_extension",
    "split_items",
    "validate_fractions",
    "write_datalist",
    "write_synthetic_dataset",
    "write_volume_slices",
]
