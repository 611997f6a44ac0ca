"""What the model zoo's CI checks on every bundle, plus train -> evaluate -> inference -> export on synthetic data.

Parametrised over every folder in ``bundles/``; a bundle's tiny sizes come from ``tests/bundle_overrides/<name>.json``.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow, ckpt_export, verify_metadata, verify_net_in_out
from monai.networks import convert_to_onnx
from monai.transforms import SaveImaged

from tests.conftest import REPO_ROOT, SCHEMA_FILE, bundle_names, cli_args, configs, overrides_of, train_tiny
from tools.package_bundle import pack

BUNDLES = bundle_names()
INFERENCE_KEYS = (
    "bundle_root",
    "device",
    "dataset_dir",
    "network_def",
    "network",
    "preprocessing",
    "inferer",
    "postprocessing",
    "writers",
    "dataset",
    "evaluator",
)


def forward_args(spec: dict, batch: int, key: str = "forward_args") -> dict[str, torch.Tensor]:
    """Extra network inputs besides the image (e.g. a diffusion network's timesteps), for ``batch`` samples.

    ``export_forward_args`` (the export check, with the tiny sizes) defaults to ``forward_args``; a generator's
    noise vector goes there, since without it two calls give different images.
    """
    args = spec.get(key, spec.get("forward_args", {}))
    return {k: torch.tensor(v[:batch]) for k, v in args.items()}


def input_fingerprint(bundle: Path) -> dict[str, str]:
    """sha256 of every file of the (synthetic) input data: runs must neither add to nor change it."""
    data = bundle / "eval" / "synthetic_data"
    return {
        str(p.relative_to(data)): hashlib.sha256(p.read_bytes()).hexdigest() for p in data.rglob("*") if p.is_file()
    }


def workflow(bundle: Path, config_names: tuple[str, ...], workflow_type: str, **override: object) -> ConfigWorkflow:
    wf = ConfigWorkflow(
        config_file=configs(bundle, *config_names),
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=str(bundle / "configs" / "logging.conf"),
        workflow_type=workflow_type,
        bundle_root=str(bundle),
        **override,
    )
    wf.initialize()
    return wf


def run(bundle: Path, config_names: tuple[str, ...], workflow_type: str, **override: object) -> ConfigWorkflow:
    wf = workflow(bundle, config_names, workflow_type, **override)
    assert wf.check_properties() in (None, []), f"{config_names}: missing bundle properties"
    wf.run()
    wf.finalize()
    return wf


def trained_network(trained: Path) -> tuple[torch.nn.Module, torch.Tensor, dict[str, torch.Tensor]]:
    """The bundle's inference network with its trained weights, in eval mode, and an input for it (tiny sizes)."""
    spec = overrides_of(trained.name)
    parser = ConfigParser()
    parser.read_config(str(trained / "configs" / "inference.json"))
    parser.update({"bundle_root": str(trained), **spec["train"]})
    net = parser.get_parsed_content("network_def")
    state = torch.load(trained / "models" / "model.pt", map_location="cpu", weights_only=True)
    net.load_state_dict(state.get("model", state))
    net.eval()
    x = torch.rand(*spec["export_input_shape"], generator=torch.Generator().manual_seed(0))
    return net, x, forward_args(spec, batch=x.shape[0], key="export_forward_args")


def isolated_python() -> tuple[list[str], dict[str, str]]:
    """An interpreter command and environment that see the installed packages but not this repository.

    ``-S`` skips the ``.pth`` files, among them the editable install of ``common``; site-packages come back through
    ``PYTHONPATH``. A downloaded bundle must then find ``common`` in its own folder.
    """
    site_dirs = [p for p in sys.path if p.endswith("site-packages")]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join(site_dirs)
    return [sys.executable, "-S"], env


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """No access log on the test output."""


@pytest.fixture(scope="module")
def zip_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A local HTTP server on 127.0.0.1 serving a folder: (folder, base URL)."""
    folder = tmp_path_factory.mktemp("dist")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=folder))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def trained(bundle_copy: Path) -> Path:
    """The bundle trained once with tiny sizes through the model-zoo command line, as a user would."""
    return train_tiny(bundle_copy)


@pytest.mark.parametrize("bundle_copy", BUNDLES, indirect=True)
class TestBundle:
    def test_contract_files(self, bundle_copy: Path) -> None:
        for f in (
            "LICENSE",
            "configs/metadata.json",
            "configs/train.json",
            "configs/evaluate.json",
            "configs/inference.json",
            "configs/multi_gpu_train.json",
            "configs/logging.conf",
            "docs/README.md",
            "docs/data_license.txt",
        ):
            assert (bundle_copy / f).is_file(), f"{bundle_copy.name} lacks {f}"
        train = json.loads((bundle_copy / "configs" / "train.json").read_text())
        assert train.get("training") == "%run", "train.json needs 'training': '%run' so `run training` works"

    def test_metadata_verifies_offline(self, bundle_copy: Path) -> None:
        meta = json.loads((bundle_copy / "configs" / "metadata.json").read_text())
        assert meta["changelog"].get(meta["version"]), "the changelog needs an entry for the current version"
        assert "monai-genseg-common" in meta["required_packages_version"]
        verify_metadata(meta_file=str(bundle_copy / "configs" / "metadata.json"), filepath=str(SCHEMA_FILE))

    def test_inference_config_keys_and_properties(self, bundle_copy: Path) -> None:
        parser = ConfigParser()
        parser.read_config(bundle_copy / "configs" / "inference.json")
        missing = [k for k in INFERENCE_KEYS if k not in parser]
        assert not missing, f"inference.json lacks {missing} (MONAI Label / Deploy read them)"
        wf = workflow(bundle_copy, ("inference.json",), "inference")
        assert wf.check_properties() in (None, [])
        writers = [
            type(t).__name__
            for t in wf.parser.get_parsed_content("postprocessing").flatten().transforms
            if isinstance(t, SaveImaged) or type(t).__module__ == "common.transforms.writers"
        ]
        assert not writers, f"postprocessing writes files ({writers}): MONAI Label/Deploy run it; use 'writers'"

    def test_network_in_out_matches_metadata(self, bundle_copy: Path) -> None:
        verify_net_in_out(
            net_id="network_def",
            extra_forward_args=forward_args(overrides_of(bundle_copy.name), batch=1),
            meta_file=str(bundle_copy / "configs" / "metadata.json"),
            config_file=str(bundle_copy / "configs" / "inference.json"),
            bundle_root=str(bundle_copy),
        )

    def test_train_writes_checkpoints(self, trained: Path) -> None:
        tiny = overrides_of(trained.name)["train"]
        models = trained / "models"
        assert (models / "model.pt").is_file() and (models / "model_final.pt").is_file()
        assert (models / f"checkpoint_epoch={tiny['max_epochs']}.pt").is_file()
        assert not glob.glob(str(models / ".tmp-*")), "a temporary checkpoint file was left behind"

    def test_resume_continues_from_last_checkpoint(self, trained: Path) -> None:
        tiny = dict(overrides_of(trained.name)["train"])
        first_epochs = tiny["max_epochs"]
        tiny["max_epochs"] = first_epochs + 1
        wf = run(trained, ("train.json",), "train", resume=True, **tiny)
        trainer = wf.parser.get_parsed_content("train#trainer")
        assert trainer.state.epoch == first_epochs + 1
        assert trainer.state.iteration == (first_epochs + 1) * trainer.state.epoch_length
        assert (trained / "models" / f"checkpoint_epoch={first_epochs + 1}.pt").is_file()

    def test_evaluate_reports_metrics(self, trained: Path) -> None:
        spec = overrides_of(trained.name)
        before = input_fingerprint(trained)
        run(trained, ("train.json", "evaluate.json"), "train", **spec["train"])
        assert input_fingerprint(trained) == before, "evaluation wrote into or changed its input data"
        metrics = trained / spec["outputs"]["evaluate_metrics"]
        rows = dict(line.split(",") for line in metrics.read_text().strip().splitlines())
        assert rows, f"{metrics} is empty"
        for name, value in rows.items():
            assert float(value) == float(value) or "hd" in name, f"metric {name} is NaN"

    def test_inference_writes_outputs(self, trained: Path) -> None:
        spec = overrides_of(trained.name)
        before = input_fingerprint(trained)
        run(trained, ("inference.json",), "inference", **spec["train"])
        assert input_fingerprint(trained) == before, "inference wrote into or changed its input data"
        assert glob.glob(str(trained / spec["outputs"]["inference_glob"])), "inference wrote no mask"
        assert glob.glob(str(trained / spec["outputs"]["overlay_glob"])), "inference wrote no overlay PNG"

    def test_torchscript_export_matches_network(self, trained: Path) -> None:
        spec = overrides_of(trained.name)
        ts_file = trained / "models" / "model.ts"
        ckpt_export(
            net_id="network_def",
            filepath=str(ts_file),
            ckpt_file=str(trained / "models" / "model.pt"),
            bundle_root=str(trained),
            meta_file=str(trained / "configs" / "metadata.json"),
            config_file=str(trained / "configs" / "inference.json"),
            **spec["train"],
        )
        net, x, extra = trained_network(trained)
        scripted = torch.jit.load(str(ts_file))
        with torch.no_grad():
            torch.testing.assert_close(scripted(x, **extra), net(x, **extra))

    def test_onnx_export_matches_network(self, trained: Path, tmp_path: Path) -> None:
        net, x, extra = trained_network(trained)
        convert_to_onnx(
            net,
            inputs=[x, *extra.values()],
            filename=str(tmp_path / "model.onnx"),
            verify=True,
            use_ort=True,
            rtol=1e-3,
            atol=1e-4,
        )
        assert (tmp_path / "model.onnx").stat().st_size > 0

    def test_packaged_zip_downloads_and_runs_without_repository(
        self, trained: Path, tmp_path: Path, zip_server: tuple[Path, str]
    ) -> None:
        folder, base_url = zip_server
        archive = Path(pack(str(trained), output_dir=str(folder)))
        python, env = isolated_python()
        outside = tmp_path / "downloaded"
        probe = subprocess.run([*python, "-c", "import common"], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert probe.returncode != 0, "the isolated interpreter can still import this repository's common package"
        download = [*python, "-m", "monai.bundle", "download", "--name", trained.name, "--url"]
        result = subprocess.run(
            [*download, f"{base_url}/{archive.name}", "--bundle_dir", str(outside)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        bundle = outside / trained.name
        assert (bundle / "common" / "__init__.py").is_file() and (bundle / "large_files.yml").is_file()
        spec = overrides_of(trained.name)
        config = str(Path(trained.name) / "configs" / "inference.json")
        result = subprocess.run(
            [*python, "-m", "monai.bundle", "run", "--config_file", config, *cli_args(spec["train"])],
            cwd=outside,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert glob.glob(str(bundle / spec["outputs"]["inference_glob"])), "the downloaded bundle wrote no output"


def test_bundle_tests_cover_every_bundle() -> None:
    assert BUNDLES, "no bundle found under bundles/"
    for name in BUNDLES:
        assert os.path.isfile(REPO_ROOT / "tests" / "bundle_overrides" / f"{name}.json"), name
