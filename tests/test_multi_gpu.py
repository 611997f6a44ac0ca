"""Every bundle's ``multi_gpu_train.json`` under ``torchrun --nproc_per_node 2`` (gloo on CPU), as users launch it.

Checked: both processes train; their data loaders draw disjoint shards of the training set each epoch; only rank 0
has the checkpoint saver and the loggers; the checkpoint it writes has plain (unwrapped) keys and runs in
single-process inference. A bundle's torchrun set-up comes from the ``multi_gpu`` entry of its tiny sizes
(``tests/bundle_overrides/<name>.json``), defaulting to ``train.json`` + ``multi_gpu_train.json``.
"""

from __future__ import annotations

import glob
import json
import re
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from common.networks.weights import load_network_weights
from tests.conftest import bundle_names, overrides_of, pretrain_tiny, run_bundle_cli
from tests.test_bundles import run

RANK0_ONLY = ("AtomicCheckpointSaver", "StatsHandler", "TensorBoardStatsHandler")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m"]


def multi_gpu_spec(name: str) -> dict:
    spec = overrides_of(name)
    defaults = {
        "configs": ["train.json", "multi_gpu_train.json"],
        "pretrain": "pretrain" in spec,
        "checkpoint": "models/model.pt",
        "network": "network_def",
        "inference": True,
        "args": {},
    }
    return {**defaults, **spec.get("multi_gpu", {})}


def probed_run_overlay(bundle: Path, output_prefix: Path) -> str:
    """An overlay whose ``run`` attaches ``tests.ddp_probe`` to the bundle's trainer, then runs as before."""
    run_list = json.loads((bundle / "configs" / "multi_gpu_train.json").read_text())["run"]
    trainer = re.fullmatch(r"\$@(.+)\.run\(\)", run_list[-1]).group(1)
    overlay = {
        "run": [
            {
                "_target_": "tests.ddp_probe.record_epochs",
                "trainer": f"@{trainer}",
                "output_prefix": str(output_prefix),
                "models_dir": str(bundle / "models"),
            },
            *run_list,
        ]
    }
    path = bundle / "configs" / "test_ddp_probe.json"
    path.write_text(json.dumps(overlay))
    return path.name


@pytest.mark.parametrize("bundle_copy", bundle_names(), indirect=True)
def test_torchrun_two_processes_train_disjoint_shards(bundle_copy: Path, tmp_path: Path) -> None:
    tiny, spec = overrides_of(bundle_copy.name)["train"], multi_gpu_spec(bundle_copy.name)
    if spec["pretrain"]:
        pretrain_tiny(bundle_copy)
    probe = probed_run_overlay(bundle_copy, tmp_path / "rank")
    run_bundle_cli(bundle_copy, [*spec["configs"], probe], {**tiny, **spec["args"]}, launcher=TORCHRUN)

    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in records] == [2, 2]
    assert len(records[0]["epochs"]) == len(records[1]["epochs"]) >= 1
    for epoch, (first, second) in enumerate(zip(records[0]["epochs"], records[1]["epochs"], strict=True)):
        assert len(first) == len(second) > 0, f"epoch {epoch}: the shards differ in size"
        padded = len(first) + len(second) - len(set(first) | set(second))
        assert padded < 2, f"epoch {epoch}: the two processes share {padded} samples (only padding may repeat)"
    for name in RANK0_ONLY:
        assert name in records[0]["handlers"], f"rank 0 lacks {name}"
        assert name not in records[1]["handlers"], f"rank 1 must not run {name} (it writes files or logs)"
    seen_at_exit = [set(json.loads((tmp_path / f"rank{r}_exit.json").read_text())) for r in (0, 1)]
    assert seen_at_exit[0], "rank 0 wrote no checkpoint"
    unseen = sorted(seen_at_exit[0] - seen_at_exit[1])
    assert not unseen, f"rank 1 ended before rank 0 wrote {unseen} (finalize must wait for every rank)"

    checkpoint = bundle_copy / spec["checkpoint"]
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    weights = state.get("model", state)
    assert not [k for k in weights if k.startswith("module.")], "the checkpoint holds DDP-wrapped keys"
    parser = ConfigParser()
    parser.read_config([str(bundle_copy / "configs" / c) for c in spec["configs"] if c != "multi_gpu_train.json"])
    parser.update({"bundle_root": str(bundle_copy), **tiny, **spec["args"]})
    load_network_weights(parser.get_parsed_content(spec["network"]), str(checkpoint), ("model",))
    if spec["inference"]:
        outputs = overrides_of(bundle_copy.name)["outputs"]
        run(bundle_copy, ("inference.json",), "inference", **tiny)
        assert glob.glob(str(bundle_copy / outputs["inference_glob"])), "single-process inference wrote nothing"
