"""MONAI Deploy application: a DICOM series in, one of the collection's 2D segmentation bundles, a DICOM SEG out.

The graph follows the SDK's bundle-based example apps (``ai_spleen_seg_app``)::

    DICOMDataLoaderOperator -> DICOMSeriesSelectorOperator -> DICOMSeriesToVolumeOperator
        -> BundleSliceSegmentationOperator -> DICOMSegmentationWriterOperator (+ the selected series)

The SDK's ``MonaiBundleInferenceOperator`` feeds the whole 3D volume to the bundle, which suits 3D bundles only; ours
segment 2D images, so ``BundleSliceSegmentationOperator`` runs the bundle's own pipeline on every slice
(:class:`tools.deploy_app.segmenter.BundleSegmenter`). Inputs, bundle and labels are checked before the graph starts,
so a wrong folder or bundle ends with one clear message instead of an operator's stack trace.

Run in the Deploy environment (``python -m tools.integration_envs create deploy``)::

    python -m tools.deploy_app --input DICOM_DIR --output OUT_DIR --bundle BUNDLE_DIR

or with ``HOLOSCAN_INPUT_PATH``, ``HOLOSCAN_OUTPUT_PATH`` and ``HOLOSCAN_MODEL_PATH`` set, as in a MONAI Application
Package.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from monai.deploy.conditions import CountCondition
from monai.deploy.core import (
    Application,
    ExecutionContext,
    Fragment,
    Image,
    InputContext,
    Operator,
    OperatorSpec,
    OutputContext,
    RuntimeEnv,
)
from monai.deploy.operators.dicom_data_loader_operator import DICOMDataLoaderOperator
from monai.deploy.operators.dicom_seg_writer_operator import DICOMSegmentationWriterOperator, SegmentDescription
from monai.deploy.operators.dicom_series_selector_operator import DICOMSeriesSelectorOperator
from monai.deploy.operators.dicom_series_to_volume_operator import DICOMSeriesToVolumeOperator
from monai.deploy.operators.dicom_utils import ModelInfo
from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.sr.codedict import codes

from tools.deploy_app.segmenter import BundleSegmenter

__all__ = ["BundleSliceSegmentationOperator", "DicomSegApp", "find_dicom_series", "main"]

logger = logging.getLogger("tools.deploy_app")


def find_dicom_series(folder: Path) -> set[str]:
    """The SeriesInstanceUIDs of the DICOM images under ``folder`` (searched recursively, as the SDK's loader does)."""
    series = set()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            dataset = dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID", "Rows"])
        except (InvalidDicomError, OSError, ValueError):
            continue
        if "SeriesInstanceUID" in dataset and "Rows" in dataset:
            series.add(str(dataset.SeriesInstanceUID))
    return series


class BundleSliceSegmentationOperator(Operator):
    """Segment a DICOM volume (``Image``, ``(slices, rows, columns)``) slice by slice with a 2D bundle.

    Named input ``image``: the volume from ``DICOMSeriesToVolumeOperator``. Named output ``seg_image``: the
    ``uint8`` label map of the same shape and metadata, as ``DICOMSegmentationWriterOperator`` expects.
    """

    def __init__(self, fragment: Fragment, *args: object, segmenter: BundleSegmenter, **kwargs: object) -> None:
        self.segmenter = segmenter
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("image")
        spec.output("seg_image")

    def compute(self, op_input: InputContext, op_output: OutputContext, context: ExecutionContext) -> None:
        image = op_input.receive("image")
        metadata = image.metadata()
        spacing = (float(metadata.get("row_pixel_spacing") or 1.0), float(metadata.get("col_pixel_spacing") or 1.0))
        labels = self.segmenter.segment_volume(np.asarray(image.asnumpy()), spacing)
        logger.info("segmented %d slices: %d foreground voxels", labels.shape[0], int(np.count_nonzero(labels)))
        op_output.emit(Image(labels, metadata=metadata), "seg_image")


class DicomSegApp(Application):
    """DICOM series -> 2D segmentation bundle on every slice -> DICOM SEG in ``output_folder``."""

    def __init__(self, segmenter: BundleSegmenter, input_folder: Path, output_folder: Path) -> None:
        self.segmenter = segmenter
        self.input_folder = input_folder
        self.output_folder = output_folder
        super().__init__([sys.executable, "tools.deploy_app"])

    def compose(self) -> None:
        seg = self.segmenter
        loader = DICOMDataLoaderOperator(self, CountCondition(self, 1), input_folder=self.input_folder, name="loader")
        selector = DICOMSeriesSelectorOperator(self, name="selector")
        to_volume = DICOMSeriesToVolumeOperator(self, name="to_volume")
        segment = BundleSliceSegmentationOperator(self, segmenter=seg, name="segment")
        descriptions = [
            SegmentDescription(
                segment_label=label,
                segmented_property_category=codes.SCT.Tissue,
                segmented_property_type=codes.SCT.Tissue,
                algorithm_name=seg.algorithm_name,
                algorithm_family=codes.DCM.ArtificialIntelligence,
                algorithm_version=seg.algorithm_version,
            )
            for label in seg.labels
        ]
        writer = DICOMSegmentationWriterOperator(
            self,
            segment_descriptions=descriptions,
            output_folder=self.output_folder,
            model_info=ModelInfo(seg.metadata.get("authors", ""), seg.algorithm_name, seg.algorithm_version),
            custom_tags={"SeriesDescription": f"AI segmentation: {seg.algorithm_name} {seg.algorithm_version}"[:64]},
            omit_empty_frames=False,
            name="writer",
        )
        self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(selector, to_volume, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(to_volume, segment, {("image", "image")})
        self.add_flow(segment, writer, {("seg_image", "seg_image")})
        self.add_flow(selector, writer, {("study_selected_series_list", "study_selected_series_list")})


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    env = RuntimeEnv()
    parser = argparse.ArgumentParser(
        prog="python -m tools.deploy_app", description=__doc__.split("\n\n")[0], allow_abbrev=False
    )
    parser.add_argument("--input", "-i", default=env.input, help="DICOM folder (default: $HOLOSCAN_INPUT_PATH)")
    parser.add_argument("--output", "-o", default=env.output, help="output folder (default: $HOLOSCAN_OUTPUT_PATH)")
    parser.add_argument(
        "--bundle",
        "--model",
        "-m",
        default=env.model,
        help="bundle folder, or a folder holding one bundle (default: $HOLOSCAN_MODEL_PATH)",
    )
    parser.add_argument("--labels", nargs="+", help="segment label of each foreground class (default: from metadata)")
    parser.add_argument("--log-level", "-l", default="INFO", type=str.upper, help="logging level (default: INFO)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Check the inputs and the bundle, then run the application; a wrong input ends with a one-line error."""
    args = _parse(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    input_folder, output_folder = Path(args.input).resolve(), Path(args.output).resolve()
    try:
        if not input_folder.is_dir():
            raise FileNotFoundError(f"input folder {input_folder} does not exist.")
        series = find_dicom_series(input_folder)
        if not series:
            raise FileNotFoundError(f"no DICOM image series found in {input_folder} (searched its files recursively).")
        if len(series) > 1:
            logger.warning(
                "%d series found in %s; the SDK segments the first one it selects.", len(series), input_folder
            )
        segmenter = BundleSegmenter(args.bundle, labels=args.labels)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    output_folder.mkdir(parents=True, exist_ok=True)
    logger.info(
        "bundle %s (%s %s), labels %s",
        segmenter.root,
        segmenter.algorithm_name,
        segmenter.algorithm_version,
        segmenter.labels,
    )
    DicomSegApp(segmenter, input_folder, output_folder).run()
