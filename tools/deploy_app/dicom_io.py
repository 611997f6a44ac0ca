"""Write a small DICOM image series and read a DICOM SEG back, to try and test the app without clinical data.

``write`` turns a ``(slices, rows, columns)`` volume (``.npy``) into an axial MR series with consistent UIDs,
positions and spacing; ``summarize`` reads the app's DICOM SEG with highdicom and writes what a check
needs: a JSON summary and the label volume aligned with the source slices (``.npy``). Deploy environment only::

    python -m tools.deploy_app.dicom_io write volume.npy DICOM_DIR
    python -m tools.deploy_app.dicom_io summarize SEG_DIR DICOM_DIR summary.json labels.npy
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

__all__ = ["summarize", "write_series"]


def write_series(
    folder: Path, volume: np.ndarray, spacing: tuple[float, float, float] = (2.0, 0.8, 0.8), description: str = "T2"
) -> str:
    """Write ``volume`` ``(slices, rows, columns)`` as an axial MR series, one file per slice; return its Series UID.

    ``spacing`` is (slice, row, column) in mm; slices are written in shuffled file order so that readers must sort by
    position, as with real exports.
    """
    if volume.ndim != 3 or volume.min() < 0 or volume.max() > np.iinfo(np.uint16).max:
        raise ValueError(
            f"expected a (slices, rows, columns) volume of uint16 values, got {volume.shape} {volume.dtype}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    now = datetime.now()
    order = np.random.default_rng(1).permutation(volume.shape[0])
    for index in order:
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Synthetic^Phantom", "GENSEG0001", "", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
        ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "", ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "MR", 1, int(index) + 1
        ds.SeriesDescription, ds.Manufacturer = description, "synthetic"
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "SE", "NONE", "", "2D"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0.0, 0.0, float(index) * spacing[0]]
        ds.SliceLocation, ds.SliceThickness = float(index) * spacing[0], spacing[0]
        ds.PixelSpacing = [spacing[1], spacing[2]]
        ds.Rows, ds.Columns = volume.shape[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = np.ascontiguousarray(volume[index], dtype=np.uint16).tobytes()
        ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
    return series


def summarize(seg_folder: Path, dicom_folder: Path) -> tuple[dict, np.ndarray]:
    """The one DICOM SEG in ``seg_folder`` as a JSON-able summary, and its label volume on ``dicom_folder``'s slices.

    The label volume is ``(slices, rows, columns)`` in source order of slice position (0 background, segment numbers).
    """
    files = sorted(seg_folder.glob("*.dcm"))
    if len(files) != 1:
        raise FileNotFoundError(f"expected one DICOM SEG file in {seg_folder}, found {len(files)}")
    raw = dcmread(files[0])
    seg = hd.seg.Segmentation.from_dataset(raw)
    sources = sorted(
        (dcmread(p, stop_before_pixels=True) for p in dicom_folder.glob("*.dcm")),
        key=lambda d: float(d.ImagePositionPatient[2]),
    )
    uids = [str(d.SOPInstanceUID) for d in sources]
    labels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, combine_segments=True, skip_overlap_checks=True
    )
    referenced = {str(item.SeriesInstanceUID) for item in raw.ReferencedSeriesSequence}
    summary = {
        "file": str(files[0]),
        "modality": str(raw.Modality),
        "sop_class_uid": str(raw.SOPClassUID),
        "segmentation_type": str(raw.SegmentationType),
        "frames": int(raw.NumberOfFrames),
        "rows": int(raw.Rows),
        "columns": int(raw.Columns),
        "study_instance_uid": str(raw.StudyInstanceUID),
        "referenced_series": sorted(referenced),
        "source_series": sorted({str(d.SeriesInstanceUID) for d in sources}),
        "series_description": str(raw.get("SeriesDescription", "")),
        "segments": [
            {
                "number": int(s.SegmentNumber),
                "label": str(s.SegmentLabel),
                "algorithm_name": str(s.SegmentationAlgorithmIdentificationSequence[0].AlgorithmName),
                "algorithm_version": str(s.SegmentationAlgorithmIdentificationSequence[0].AlgorithmVersion),
                "algorithm_type": str(s.SegmentAlgorithmType),
            }
            for s in raw.SegmentSequence
        ],
    }
    return summary, np.asarray(labels, dtype=np.uint8)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.deploy_app.dicom_io", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    write = commands.add_parser("write", help="write a volume as an MR series")
    write.add_argument("volume", type=Path, help=".npy (slices, rows, columns) volume, values fit for uint16")
    write.add_argument("folder", type=Path)
    read = commands.add_parser("summarize", help="summarize a DICOM SEG against its source series")
    read.add_argument("seg_folder", type=Path)
    read.add_argument("dicom_folder", type=Path)
    read.add_argument("summary", type=Path)
    read.add_argument("labels", type=Path)
    args = parser.parse_args(argv)
    if args.command == "write":
        write_series(args.folder, np.load(args.volume))
    else:
        summary, labels = summarize(args.seg_folder, args.dicom_folder)
        args.summary.write_text(json.dumps(summary, indent=2))
        np.save(args.labels, labels)


if __name__ == "__main__":
    main()
