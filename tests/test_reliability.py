"""Interruptions, determinism and nothing lost, for every bundle, through the model-zoo command line.

For each bundle, on a user's data folder (the synthetic sample data written as a user would give it):

1. run A trains uninterrupted, recording every iteration's loss;
2. run B trains with the same seed and is killed with SIGKILL in the middle of its second epoch, then resumed with
   one override (``--resume true``) until the end;
3. A's model is evaluated, and run for inference twice into two folders;
4. inference into a folder that holds results, and training over run A's checkpoints, are both refused.

Checked: the killed run left only complete, loadable files; the resumed run ends with A's iteration count, A's loss
for every iteration of the resumed epochs and exactly A's weights (``model_final.pt``, and ``model.pt``, the best
model, which a resume must not replace by a worse one); the same seed gives the same losses and byte-identical
inference outputs; every input (data, configs, pretrained weights) hashes the same after every command.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common.data.synthetic import write_synthetic_dataset
from tests.conftest import REPO_ROOT, bundle_names, cli_args, overrides_of, pretrain_tiny

#: The sub-folder of the data set that inference reads (a folder of files, no datalist), where not ``images``.
INFERENCE_INPUT = {"postdae_mask_refinement": "labels", "ct_label_to_image_synthesis": "labels"}

#: Weights a bundle's training starts from (written by its ``pretrain`` step), by config key.
PRETRAINED = {"autoencoder_path": "autoencoder.pt", "ddpm_path": "ddpm.pt", "segmenter_path": "segmenter/model.pt"}


def fingerprint(*roots: Path) -> dict[str, str]:
    """sha256 of every file below ``roots``, by path."""
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest()
        for root in roots
        for p in sorted(root.rglob("*") if root.is_dir() else [root])
        if p.is_file()
    }


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def state_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint, flattened to ``key/sub-key`` names."""

    def flatten(value: object, prefix: str) -> dict[str, torch.Tensor]:
        if isinstance(value, torch.Tensor):
            return {prefix: value}
        if isinstance(value, dict):
            return {k: v for key, item in value.items() for k, v in flatten(item, f"{prefix}/{key}").items()}
        return {}

    return flatten(torch.load(path, map_location="cpu", weights_only=True), "")


class BundleRuns:
    """Runs one bundle's commands in a subprocess each, the way a user types them."""

    def __init__(self, bundle: Path, root: Path) -> None:
        self.bundle, self.root = bundle, root
        self.tiny = overrides_of(bundle.name)["train"]
        train_config = json.loads((bundle / "configs" / "train.json").read_text())
        self.data = root / "data"
        write_synthetic_dataset(
            train_config["synthetic_kind"],
            self.data,
            num=self.tiny.get("synthetic_num", 8),
            seed=0,
            size=self.tiny.get("synthetic_size"),
        )
        self.pretrained = {
            key: str(bundle / "models" / file) for key, file in PRETRAINED.items() if key in train_config
        }

    def run(self, configs: list[str], overrides: dict) -> subprocess.CompletedProcess:
        files = json.dumps([str(self.bundle / "configs" / c) for c in configs])
        cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", files, "--bundle_root", str(self.bundle)]
        cmd += cli_args({**self.tiny, "dataset_dir": str(self.data), **self.pretrained, **overrides})
        return subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)

    def train(self, run: str, record: Path | None = None, kill_at: int = 0, **overrides: object):
        configs = ["train.json"]
        if record is not None:
            probe = {
                "run": [
                    {"_target_": "tests.run_probe.attach", "trainer": "@train#trainer", "record": str(record)}
                    | ({"kill_at": kill_at} if kill_at else {}),
                    "$@train#trainer.run()",
                ]
            }
            probe_file = self.root / f"probe_{record.stem}_{kill_at}.json"
            probe_file.write_text(json.dumps(probe))
            configs.append(str(probe_file))
        folder = self.root / run
        return self.run(configs, {"ckpt_dir": str(folder / "models"), "output_dir": str(folder / "eval"), **overrides})

    def evaluate(self, run: str) -> subprocess.CompletedProcess:
        folder = self.root / run
        return self.run(
            ["train.json", "evaluate.json"], {"ckpt_dir": str(folder / "models"), "output_dir": str(folder / "eval")}
        )

    def infer(self, run: str, out: str) -> subprocess.CompletedProcess:
        inputs = self.data / INFERENCE_INPUT.get(self.bundle.name, "images")
        overrides = {"dataset_dir": str(inputs), "datalist": "", "ckpt_dir": str(self.root / run / "models")}
        return self.run(["inference.json"], {**overrides, "output_dir": str(self.root / out)})


def _ok(result: subprocess.CompletedProcess, what: str) -> None:
    assert result.returncode == 0, f"{what}: exit {result.returncode}\n{result.stderr[-4000:]}"


@pytest.fixture(scope="module")
def runs(bundle_copy: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every command of the scenario above, with what the tests check recorded after each."""
    pretrain_tiny(bundle_copy)
    root = tmp_path_factory.mktemp("runs")
    runner = BundleRuns(bundle_copy, root)
    inputs = [runner.data, bundle_copy / "configs", bundle_copy / "models"]
    out: dict = {"root": root, "inputs_before": fingerprint(*inputs), "inputs_after": {}}

    def step(name: str, result: subprocess.CompletedProcess, ok: bool = True) -> subprocess.CompletedProcess:
        if ok:
            _ok(result, name)
        out["inputs_after"][name] = fingerprint(*inputs)
        return result

    step("train A", runner.train("A", record=root / "A.jsonl"))
    epoch_one = [r for r in records(root / "A.jsonl") if r["epoch"] == 1]
    out["kill_at"] = kill_at = len(epoch_one) + max(1, len(epoch_one) // 2)
    killed = step("train B, killed", runner.train("B", record=root / "B.jsonl", kill_at=kill_at), ok=False)
    out["killed_returncode"] = killed.returncode
    out["after_kill"] = sorted((root / "B" / "models").glob("*"))
    out["loadable_after_kill"] = {p.name: _loads(p) for p in out["after_kill"]}
    out["records_before_resume"] = records(root / "B.jsonl")
    step("train B, resumed", runner.train("B", record=root / "B.jsonl", resume=True))
    step("evaluate A", runner.evaluate("A"))
    step("inference A 1", runner.infer("A", "inference_1"))
    step("inference A 2", runner.infer("A", "inference_2"))
    results = fingerprint(root / "inference_1", root / "A" / "models")
    out["repeat_inference"] = step("inference into results", runner.infer("A", "inference_1"), ok=False)
    out["repeat_training"] = step("training over A", runner.train("A"), ok=False)
    out["results_unchanged"] = results == fingerprint(root / "inference_1", root / "A" / "models")
    return out


def _loads(path: Path) -> bool:
    try:
        torch.load(path, map_location="cpu", weights_only=True)
        return True
    except Exception:
        return False


BUNDLES = pytest.mark.parametrize("bundle_copy", bundle_names(), indirect=True)


@BUNDLES
def test_kill_leaves_only_complete_files(runs: dict) -> None:
    assert runs["killed_returncode"] == -9, "the run was not killed by SIGKILL"
    names = [p.name for p in runs["after_kill"]]
    assert "checkpoint_epoch=1.pt" in names, names
    assert not [n for n in names if n.startswith(".tmp-")], f"a temporary file was left behind: {names}"
    assert all(runs["loadable_after_kill"].values()), runs["loadable_after_kill"]
    last = runs["records_before_resume"][-1]
    assert last["iteration"] == runs["kill_at"] and last["epoch"] == 2, "killed mid-way through epoch 2"


@BUNDLES
def test_resumed_run_ends_with_the_uninterrupted_runs_iterations_and_weights(runs: dict) -> None:
    root = runs["root"]
    uninterrupted = records(root / "A.jsonl")
    resumed = records(root / "B.jsonl")[len(runs["records_before_resume"]) :]
    last_epoch_one = max(r["iteration"] for r in uninterrupted if r["epoch"] == 1)
    assert [r["iteration"] for r in resumed] == [r["iteration"] for r in uninterrupted[last_epoch_one:]]
    assert resumed == uninterrupted[last_epoch_one:], "the resumed epochs drew other batches or noise"
    for name in ("model_final.pt", "model.pt"):
        a, b = state_tensors(root / "A" / "models" / name), state_tensors(root / "B" / "models" / name)
        assert a.keys() == b.keys(), name
        different = [k for k in a if not torch.equal(a[k], b[k])]
        assert not different, f"{name}: {len(different)} of {len(a)} tensors differ, e.g. {different[:3]}"


@BUNDLES
def test_same_seed_gives_the_same_losses_and_outputs(runs: dict) -> None:
    root = runs["root"]
    first_epoch = [r for r in records(root / "A.jsonl") if r["epoch"] == 1]
    assert first_epoch == runs["records_before_resume"][: len(first_epoch)], "run B's first epoch differs from A's"
    one, two = fingerprint(root / "inference_1"), fingerprint(root / "inference_2")
    assert one, "inference wrote nothing"
    assert sorted(Path(p).name for p in one) == sorted(Path(p).name for p in two)
    assert sorted(one.values()) == sorted(two.values()), "two inference runs of one model wrote different files"


@BUNDLES
def test_no_command_changes_its_inputs(runs: dict) -> None:
    assert runs["inputs_before"], "no input was fingerprinted"
    for command, after in runs["inputs_after"].items():
        changed = {
            p for p in runs["inputs_before"].keys() | after.keys() if runs["inputs_before"].get(p) != after.get(p)
        }
        assert not changed, f"{command} changed or added inputs: {sorted(changed)[:5]}"


@BUNDLES
def test_results_are_not_overwritten_without_the_flag(runs: dict) -> None:
    inference, training = runs["repeat_inference"], runs["repeat_training"]
    assert inference.returncode != 0 and "already holds" in inference.stderr and "--overwrite true" in inference.stderr
    assert training.returncode != 0 and "earlier run's checkpoints" in training.stderr, training.stderr[-3000:]
    assert "--resume true" in training.stderr
    assert runs["results_unchanged"], "a refused command changed earlier results"
