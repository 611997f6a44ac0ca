"""Segment every image in a folder with a trained segmentation bundle, through the bundle's own ``inference.json``.

Inputs, found recursively in ``--input_dir``: NIfTI, PNG/JPEG (and the other picture formats the collection reads)
files, and DICOM series (a folder holding ``.dcm`` files, or extension-less files that are DICOM; one series per
folder). Each case runs through the bundle's ``preprocessing``, network, ``inferer``, ``postprocessing`` and
``writers``; only the list of items and the writers' ``output_dir`` are replaced. The outputs (masks: PNG for
picture inputs, NIfTI on the input's grid otherwise; overlay PNGs) go to ``--output_dir``, in the input's relative
sub-folder, never next to the inputs.

A DICOM series is read with MONAI's ``LoadImage`` (ITK) and handed to the bundle as a NIfTI in a scratch folder
inside ``--output_dir`` (a single-slice series as a 2D image), so its outputs are NIfTI on the series' grid.

Resuming: ``<output_dir>/segment_folder.json`` records the outputs of every finished case; a rerun skips the cases
whose recorded outputs all exist. No file the record does not attribute to a case is overwritten unless
``--overwrite True`` (which also recomputes every case). Inputs that cannot be read or do not fit the bundle are
reported by name at the end, with exit status 1; the other cases are still segmented.

Example (from the repository root; extra ``--key value`` pairs override ``inference.json``)::

    python -m tools.segment_folder --bundle bundles/gms_latent_segmentation --input_dir scans --output_dir masks
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fire
import nibabel as nib
import numpy as np
from ignite.engine import Engine, Events
from monai.bundle import ConfigWorkflow
from monai.data import ITKReader
from monai.transforms import LoadImage
from tqdm import tqdm

from common.bundle import is_segmentation_bundle
from common.io import SUPPORTED_EXTENSIONS, atomic_write_json, read_json, split_extension

logger = logging.getLogger("segment_folder")

RECORD_NAME = "segment_folder.json"  # in output_dir: which outputs each finished case wrote
SCRATCH_NAME = ".segment_folder_scratch"  # in output_dir: staged DICOM inputs and outputs before they are moved
FILE_EXTENSIONS = tuple(e for e in SUPPORTED_EXTENSIONS if e != ".dcm")  # read as single files; .dcm as series


@dataclass
class Case:
    """One input: ``source`` (a file or a DICOM series folder), its path ``rel`` below the input folder, and the
    file handed to the bundle (``source`` itself, or the staged NIfTI of a DICOM series)."""

    source: Path
    rel: str
    bundle_input: Path | None = None


def is_dicom(path: Path) -> bool:
    """A ``.dcm`` file, or an extension-less file with the DICOM preamble's ``DICM`` marker at byte 128."""
    if path.suffix.lower() == ".dcm":
        return True
    if path.suffix or not path.is_file():
        return False
    with open(path, "rb") as f:
        return f.read(132)[128:] == b"DICM"


def find_cases(input_dir: Path) -> list[Case]:
    """Every image file and DICOM series folder below ``input_dir`` (hidden entries skipped), sorted by path."""
    cases = []
    for folder, dirs, files in os.walk(input_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        paths = [Path(folder) / f for f in sorted(files) if not f.startswith(".")]
        if any(is_dicom(p) for p in paths):
            cases.append(Case(Path(folder), Path(folder).relative_to(input_dir).as_posix()))
        cases += [
            Case(p, p.relative_to(input_dir).as_posix()) for p in paths if split_extension(p.name)[1] in FILE_EXTENSIONS
        ]
    return sorted(cases, key=lambda c: c.rel)


def check_bundle(bundle: Path, config: Path, overrides: dict[str, Any]) -> dict:
    """The bundle's metadata, after checking that it has the config, its trained weights, and segments images."""
    if not (bundle / "configs" / "metadata.json").is_file():
        raise FileNotFoundError(f"bundle {bundle} is not a MONAI bundle folder: it has no configs/metadata.json")
    if not config.is_file():
        raise FileNotFoundError(f"bundle {bundle} has no inference config {config}")
    weights = Path(str(overrides.get("ckpt_dir", bundle / "models"))) / "model.pt"
    if not weights.is_file():
        raise FileNotFoundError(
            f"bundle {bundle} has no trained network {weights}: train it first (configs/train.json)"
        )
    meta = read_json(bundle / "configs" / "metadata.json", "bundle metadata")
    if not is_segmentation_bundle(bundle):
        raise ValueError(
            f"bundle {bundle} is not a segmentation bundle (metadata task: {meta.get('task')!r}); segment_folder "
            "needs a bundle whose inference writes masks"
        )
    return meta


def check_folders(input_dir: Path, output_dir: Path) -> None:
    """The input folder exists, and the output folder is neither it, inside it, nor around it."""
    if not input_dir.is_dir():
        raise FileNotFoundError(f"input_dir {input_dir} does not exist or is not a folder")
    inp, out = input_dir.resolve(), output_dir.resolve()
    if out == inp or inp in out.parents or out in inp.parents:
        raise ValueError(
            f"output_dir {output_dir} must lie outside input_dir {input_dir} (and not contain it): outputs are never "
            "written next to the inputs"
        )


def stage_dicom(case: Case, folder: Path) -> Path:
    """Write the DICOM series of ``case`` as ``<folder>/<series name>.nii.gz``, a single slice as a 2D image."""
    image = LoadImage(image_only=True, reader=ITKReader())(str(case.source))
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{case.source.resolve().name}.nii.gz"
    nib.save(nib.Nifti1Image(array, np.asarray(image.affine, dtype=np.float64)), path)
    return path


def root_message(error: BaseException) -> str:
    """The message of the innermost cause (MONAI wraps a transform's error in 'applying transform ...')."""
    while error.__cause__ is not None:
        error = error.__cause__
    return f"{type(error).__name__}: {error}"


def expected_input(meta: dict, parser: Any) -> str:
    """What the bundle takes, for error messages: spatial dimensions and, if the config sets them, channels."""
    shape = meta.get("network_data_format", {}).get("inputs", {}).get("image", {}).get("spatial_shape", [0, 0])
    text = f"{len(shape)}D images"
    if "image_channels" in parser:
        text += f" with {parser['image_channels']} channel(s) (config key image_channels"
        text += f", channel axis {parser['image_channel_dim']})" if "image_channel_dim" in parser else ")"
    return text


def check_fits(case: Case, preprocessing: Any, spatial_dims: int, expected: str) -> str | None:
    """Run the bundle's preprocessing on ``case``: None if it fits, else a message naming the input."""
    try:
        image = preprocessing({"image": str(case.bundle_input)})["image"]
    except Exception as err:  # any reader or transform error: report the file, go on with the others
        return f"{case.source}: cannot be read, or does not fit the bundle, which takes {expected}: {root_message(err)}"
    if image.ndim - 1 != spatial_dims:
        return (
            f"{case.source}: is a {image.ndim - 1}D image of shape {list(image.shape[1:])} after the bundle's "
            f"preprocessing; the bundle takes {expected} (for volumes, segment their slices)"
        )
    return None


class Record:
    """``<output_dir>/segment_folder.json``: the bundle and, per case (input path relative to ``input_dir``), the
    outputs it wrote (relative to ``output_dir``); written whole (temporary file and rename) as each case finishes."""

    def __init__(self, output_dir: Path, bundle: Path, overwrite: bool) -> None:
        self.path, self.output_dir = output_dir / RECORD_NAME, output_dir
        data = {} if overwrite or not self.path.is_file() else read_json(self.path, "segment_folder record")
        if data and data.get("bundle") != str(bundle):
            raise ValueError(
                f"output_dir {output_dir} holds the outputs of bundle {data.get('bundle')}, not {bundle}: choose "
                "another output_dir, or pass --overwrite True to recompute every case"
            )
        self.bundle, self.cases = str(bundle), dict(data.get("cases", {}))
        self.overwrite = overwrite

    def done(self, case: Case) -> bool:
        """The case's recorded outputs all exist."""
        outputs = self.cases.get(case.rel)
        return bool(outputs) and all((self.output_dir / o).is_file() for o in outputs)

    def conflict(self, case: Case, outputs: list[str]) -> str | None:
        """An output that exists and is not the case's own (another case's, or a file the user put there)."""
        if self.overwrite:
            return None
        own = set(self.cases.get(case.rel, []))
        return next((o for o in outputs if o not in own and (self.output_dir / o).exists()), None)

    def save(self, case: Case, outputs: list[str]) -> None:
        """Record ``outputs`` as the case's own, before they are moved into place (a rerun may then replace them)."""
        self.cases[case.rel] = outputs
        atomic_write_json(self.path, {"bundle": self.bundle, "cases": self.cases})


def segment_folder(
    bundle: str,
    input_dir: str,
    output_dir: str,
    config: str = "inference.json",
    overwrite: bool = False,
    **overrides: Any,
) -> dict[str, Any]:
    """Segment every image and DICOM series in ``input_dir`` with ``bundle``; outputs go to ``output_dir``.

    Args:
        bundle: the bundle folder (with ``configs/`` and ``models/model.pt``).
        input_dir: folder searched recursively for NIfTI, PNG/JPEG files and DICOM series.
        output_dir: folder for masks and overlays, in the inputs' relative sub-folders; created if missing.
        config: the inference config, a name in ``<bundle>/configs`` or a path.
        overwrite: recompute every case and overwrite existing outputs; by default finished cases are skipped.
        overrides: config keys of ``config`` to override (the tiny sizes a model was trained with, ``device``...).

    Returns:
        counts of written and skipped cases, and ``failed``: ``{input: reason}``.
    """
    bundle_dir, inputs, out = Path(bundle), Path(input_dir), Path(output_dir)
    config_file = Path(config) if os.sep in config else bundle_dir / "configs" / config
    meta = check_bundle(bundle_dir, config_file, overrides)
    check_folders(inputs, out)
    cases = find_cases(inputs)
    if not cases:
        raise FileNotFoundError(
            f"input_dir {inputs} holds no images: expected {', '.join(FILE_EXTENSIONS)} files or DICOM series"
        )
    out.mkdir(parents=True, exist_ok=True)
    record = Record(out, bundle_dir.resolve(), overwrite)
    todo = [c for c in cases if overwrite or not record.done(c)]
    result: dict[str, Any] = {"written": 0, "skipped": len(cases) - len(todo), "failed": {}}
    if result["skipped"]:
        logger.info("%d of %d cases already segmented in %s: skipped", result["skipped"], len(cases), out)
    if not todo:
        return result
    scratch = out / SCRATCH_NAME
    shutil.rmtree(scratch, ignore_errors=True)
    staged = scratch / "outputs"
    try:
        _run(bundle_dir, config_file, meta, todo, record, staged, scratch, result, overrides)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return result


def _run(
    bundle: Path,
    config_file: Path,
    meta: dict,
    todo: list[Case],
    record: Record,
    staged: Path,
    scratch: Path,
    result: dict[str, Any],
    overrides: dict[str, Any],
) -> None:
    """Check every case against the bundle's preprocessing, then run its evaluator on those that fit."""
    workflow = ConfigWorkflow(
        config_file=str(config_file),
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type="inference",
        **{**overrides, "bundle_root": str(bundle), "output_dir": str(staged), "dataloader#batch_size": 1},
    )
    workflow.initialize()
    parser = workflow.parser
    spatial_dims = len(meta["network_data_format"]["inputs"]["image"]["spatial_shape"])
    expected, preprocessing = expected_input(meta, parser), parser.get_parsed_content("preprocessing")
    ready = []
    for index, case in enumerate(tqdm(todo, desc="checking inputs", unit="case", file=sys.stderr)):
        try:
            folder = scratch / "dicom" / str(index)
            case.bundle_input = stage_dicom(case, folder) if case.source.is_dir() else case.source
            failure = check_fits(case, preprocessing, spatial_dims, expected)
        except Exception as err:  # an unreadable DICOM series: report it, go on with the others
            failure = f"{case.source}: cannot be read as a DICOM series: {root_message(err)}"
        if failure:
            result["failed"][case.rel] = failure
        else:
            ready.append(case)
    if not ready:
        return
    parser["dataset#data"] = [{"image": str(c.bundle_input)} for c in ready]
    evaluator = parser.get_parsed_content("evaluator")

    def publish(engine: Engine) -> None:
        """Move the case's staged outputs into its sub-folder of output_dir, recorded first, never over others."""
        case = ready[engine.state.iteration - 1]
        dest = Path(case.rel).parent
        files = sorted(staged.iterdir())
        outputs = [(dest / f.name).as_posix() for f in files]
        clash = record.conflict(case, outputs)
        if clash:
            result["failed"][case.rel] = (
                f"{case.source}: its output {record.output_dir / clash} exists and is not its own (another input "
                "with the same name in this folder, or a file of yours); pass --overwrite True to replace it"
            )
        else:
            record.save(case, outputs)
            (record.output_dir / dest).mkdir(parents=True, exist_ok=True)
            for f, o in zip(files, outputs, strict=True):
                os.replace(f, record.output_dir / o)
            result["written"] += 1
        for f in staged.iterdir():
            f.unlink()
        progress.update(1)

    progress = tqdm(total=len(ready), desc="segmenting", unit="case", file=sys.stderr)
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, publish)
    try:
        workflow.run()
        workflow.finalize()
    except Exception as err:  # the bundle failed on a case that fitted its preprocessing: name it, keep the others
        case = ready[min(max(evaluator.state.iteration, 1), len(ready)) - 1]
        result["failed"][case.rel] = (
            f"{case.source}: the bundle's inference failed, and the run stopped at this case (the cases before it "
            f"are written; rerun to go on after fixing it): {root_message(err)}"
        )
    finally:
        progress.close()


def main() -> None:
    """Command-line entry point: a one-line error and exit status 1 for bad arguments or any failed input."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = fire.Fire(segment_folder, name="segment_folder", serialize=lambda _: None)
    except (FileNotFoundError, ValueError) as err:
        logger.error("%s", err)
        raise SystemExit(1) from None
    logger.info("%d cases written, %d skipped (already done)", result["written"], result["skipped"])
    for reason in result["failed"].values():
        logger.error("%s", reason)
    if result["failed"]:
        logger.error("%d cases failed; fix them and rerun: finished cases are skipped", len(result["failed"]))
        raise SystemExit(1)


if __name__ == "__main__":
    main()
