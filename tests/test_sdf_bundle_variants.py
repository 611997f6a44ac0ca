"""The SDF bundle's variants run end to end: the VP process with ancestral sampling, and MONAI's DiffusionModelUNet."""

from __future__ import annotations

import glob
from pathlib import Path

from monai.bundle import ConfigWorkflow

from tests.conftest import bundle_workflow
from tests.test_sdf_bad_input import BUNDLE
from tests.test_sdf_bad_input import TINY as BAD_INPUT_TINY

TINY = {
    **BAD_INPUT_TINY,
    "synthetic_num": 4,
    "synthetic_size": 32,
    "batch_size": 2,
    "max_epochs": 1,
    "val_interval": 1,
    "val_num_steps": 2,
}
MONAI_TINY = {
    "unet_channels": [8, 8],
    "unet_attention_levels": [False, True],
    "unet_res_blocks": 1,
    "unet_norm_groups": 4,
    "unet_head_channels": 8,
}


def run(bundle_root: Path, configs: list[str], kind: str, **overrides: object) -> ConfigWorkflow:
    wf = bundle_workflow(BUNDLE, bundle_root, configs, kind, **overrides)
    wf.run()
    wf.finalize()
    return wf


def test_vp_trains_and_samples_ancestrally(tmp_path: Path) -> None:
    """One config key selects the VP process; inference then runs DDPM ancestral sampling over every trained step."""
    vp = {**TINY, "sde": "vp", "sde_def#num_train_timesteps": 20}
    trained = run(tmp_path, ["train.json"], "train", **vp)
    assert trained.parser.get_parsed_content("sde_def").data_scale == 1.0
    assert (tmp_path / "models" / "model.pt").is_file()
    wf = run(tmp_path, ["inference.json"], "inference", **vp, num_samples=1)
    assert wf.parser.get_parsed_content("inferer").last_nfe == 20, "one evaluation per trained step"
    assert glob.glob(str(tmp_path / "eval" / "inference" / "*_seg.png"))


def test_monai_diffusion_unet_variant_trains_and_infers(tmp_path: Path) -> None:
    overrides = {**TINY, **MONAI_TINY}
    trained = run(tmp_path, ["train.json", "monai_unet.json"], "train", **overrides)
    assert type(trained.parser.get_parsed_content("network_def")).__name__ == "DiffusionModelUNet"
    run(tmp_path, ["inference.json", "monai_unet.json"], "inference", **overrides, num_steps=2, sampler="ode")
    assert glob.glob(str(tmp_path / "eval" / "inference" / "*_uncertainty.png"))
