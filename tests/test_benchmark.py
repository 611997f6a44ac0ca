"""The combined benchmark (``python -m tools.benchmark``): quick mode end to end, and its refusals of bad input.

Quick mode needs no real data: ``--data_root`` points at a folder that does not exist.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from ignite.engine import Engine, Events

from tests.conftest import REPO_ROOT
from tools import bundle_runs
from tools.benchmark import main
from tools.benchmark.report import PLOTS
from tools.bundle_runs import StopAtDeadline

#: two bundles keep the test under 4 minutes: the first also measures torch.compile, SDF gives the Dice-vs-NFE curve
#: (every bundle's phases run the same code; the DDPM bundle's pixel-feature phase is not covered here)
QUICK_BUNDLES = ("postdae_mask_refinement", "sdf_score_segmentation")


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("benchmark") / "out"
    command = [
        sys.executable,
        "-m",
        "tools.benchmark",
        "--quick",
        "--out_dir",
        str(out),
        "--data_root",
        str(out.parent / "no_such_data"),
        "--bundles",
        ",".join(QUICK_BUNDLES),
    ]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, json.loads((out / "results.json").read_text())


def test_quick_run_reports_every_measure(quick_run: tuple[Path, dict]) -> None:
    _, results = quick_run
    assert results["quick"] is True and list(results["bundles"]) == list(QUICK_BUNDLES)
    assert _positive(results["machine"]["conv_ceiling"]["gflops_per_s"])
    assert isinstance(results["machine"]["cpu"]["bf16"]["available"], bool)
    for name, r in results["bundles"].items():
        quality, speed, memory, efficiency = r["quality"], r["speed"], r["memory"], r["efficiency"]
        assert "error" not in quality, quality
        assert 0 <= quality["bundle"]["dice"] <= 1 and 0 <= quality["basic_unet"]["dice"] <= 1, name
        assert _positive(quality["train_seconds"]) and _positive(quality["basic_unet_train_seconds"])
        assert "source" in r["paper"]
        for key in ("images_per_s", "step_seconds", "seconds_per_iteration"):
            assert _positive(speed["train"][key]), (name, key)
        assert _positive(speed["inference"]["seconds_per_image"])
        assert _positive(memory["train_peak_rss_mb"]) and _positive(memory["inference_peak_rss_mb"])
        for key in ("flops_per_step", "achieved_gflops_per_s", "ceiling_fraction", "plain_step_seconds"):
            assert _positive(efficiency[key]), (name, key)
        assert 0 <= efficiency["data_wait_fraction"] < 1
        assert isinstance(efficiency["ceiling_goal_met"], bool) and isinstance(efficiency["data_wait_goal_met"], bool)
        profile = efficiency["profile"]
        assert sum(profile["shares"].values()) == pytest.approx(1.0), (name, profile["shares"])
        assert 0 < profile["shares"]["convolution"] < 1, "both networks are convolutional, with other work besides"
        assert _positive(profile["convolution_gflops_per_s"]) and profile["top_ops"][0]["share"] > 0
        levers = efficiency["levers"]
        assert _positive(levers["channels_last"]["speedup"])
        shipped = "channels_last" if name == "postdae_mask_refinement" else "contiguous"
        assert levers["channels_last"]["shipped"] == shipped, "the bundle's channels_last key is read from its weights"
        assert _positive(levers["bf16"].get("speedup")) or "not available" in levers["bf16"]["status"]
        assert set(levers["compile"]) & {"speedup", "error", "status"}
    compiled = results["bundles"][QUICK_BUNDLES[0]]["efficiency"]["levers"]["compile"]
    assert _positive(compiled.get("speedup")) or "error" in compiled, "torch.compile measured for the first bundle"
    assert _positive(results["bundles"]["sdf_score_segmentation"]["speed"]["inference"]["nfe"])
    curve = results["bundles"]["sdf_score_segmentation"]["quality"]["dice_vs_nfe"]
    assert [c["nfe"] for c in curve if c["sampler"].startswith("ode")] == [5, 10, 20]
    assert any(c["sampler"].startswith("pc") for c in curve)
    assert all(0 <= c["dice"] <= 1 and _positive(c["seconds_per_image"]) for c in curve)


def test_quick_run_writes_the_report_and_plots(quick_run: tuple[Path, dict]) -> None:
    out, results = quick_run
    report = (out / "results.md").read_text()
    assert "## Quality" in report and "## Efficiency" in report and "QUICK" in report
    assert "### Where a training step's time goes" in report and "| convolution |" in report
    for name in QUICK_BUNDLES:
        assert f"| {name} |" in report
    assert sorted(results["plots"]) == sorted(PLOTS)
    for plot in PLOTS:
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", plot
    assert not list(out.glob("*.tmp*")), "a temporary file was left behind"


def _refused(argv: list[str], caplog: pytest.LogCaptureFixture) -> str:
    """The one error logged when ``main`` refuses ``argv`` with exit status 1."""
    caplog.clear()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1, errors
    return errors[0]


def test_refuses_bad_options(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = ["--out_dir", str(tmp_path / "out"), "--quick"]
    assert "--bundles" in _refused([*out, "--bundles", "no_such_bundle"], caplog)
    assert "--budget_s" in _refused([*out, "--budget_s", "0"], caplog)
    assert "--budget_s" in _refused([*out, "--budget_s=-5"], caplog)
    assert "--budget_s" in _refused([*out, "--budget_s", "soon"], caplog)
    missing = tmp_path / "no_data"
    assert "--data_root" in _refused(["--out_dir", str(tmp_path / "o"), "--data_root", str(missing)], caplog)
    full = tmp_path / "full"
    full.mkdir()
    (full / "results.json").write_text("{}")
    text = _refused(["--out_dir", str(full), "--quick"], caplog)
    assert str(full) in text and "--overwrite" in text
    assert (full / "results.json").read_text() == "{}", "a refused run must not touch the folder"
    assert not (tmp_path / "out").exists() and not (tmp_path / "o").exists()


def test_command_line_error_has_no_traceback(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "tools.benchmark", "--quick", "--out_dir", str(tmp_path), "--bundles", "nope"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "--bundles" in result.stdout + result.stderr and "Traceback" not in result.stdout + result.stderr


def _clocked_run(
    monkeypatch: pytest.MonkeyPatch, seconds: float, validation_s: float = 0.0, iterations: int = 3
) -> tuple[int, int, list[int], bool]:
    """Epochs and iterations run, the epochs validated and whether COMPLETED fired: one-second iterations on a fake
    clock, the first epoch's end-of-epoch "validation" (attached before the deadline, as a bundle's handlers are)
    taking ``validation_s``."""
    clock = [0.0]
    monkeypatch.setattr(bundle_runs.time, "perf_counter", lambda: clock[0])
    completed, validated = [], []

    def step(engine: Engine, batch: int) -> None:
        clock[0] += 1.0

    def validate(engine: Engine) -> None:
        validated.append(engine.state.epoch)
        clock[0] += validation_s if engine.state.epoch == 1 else 0.0

    engine = Engine(step)
    engine.add_event_handler(Events.EPOCH_COMPLETED, validate)
    StopAtDeadline(seconds).attach(engine)
    engine.add_event_handler(Events.COMPLETED, lambda _: completed.append(True))
    engine.run(range(iterations), max_epochs=100)
    return engine.state.epoch, engine.state.iteration, validated, bool(completed)


def test_stop_at_deadline_stops_before_the_budget_would_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _clocked_run(monkeypatch, 12.0) == (4, 12, [1, 2, 3, 4], True), "after 12 one-second iterations"
    epochs, iterations, validated, _ = _clocked_run(monkeypatch, 12.0, 2.0)
    assert (epochs, iterations) == (3, 8), "the 2 s validation is reserved: 8 iterations + 2 validations + 2 s"
    assert validated == [1, 2, 3], "the epoch ended early is still validated"
    assert _clocked_run(monkeypatch, 0.0)[:2] == (1, 1), "at least one iteration runs"
    assert _clocked_run(monkeypatch, 1e9)[:2] == (100, 300), "max_epochs still caps the run"


def test_stop_at_deadline_stops_within_a_long_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run whose epochs are longer than the budget stops at the budget, not at its first epoch end."""
    epochs, iterations, validated, completed = _clocked_run(monkeypatch, 5.0, iterations=100)
    assert (epochs, iterations, validated, completed) == (1, 5, [1], True)


def _python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True).stdout


def test_peak_rss_is_the_process_own() -> None:
    """A process's own peak: what it allocated counts; its parent's peak does not (os.wait4's ru_maxrss would)."""
    report = "from tools.bundle_runs import peak_rss_bytes; print(peak_rss_bytes())"
    touch = "b = bytearray(400 * 2**20); b[::4096] = b'x' * len(b[::4096]); "
    plain, big = int(_python(report)), int(_python(touch + report))
    from_big_parent = int(
        _python(touch + f"import subprocess, sys; subprocess.run([sys.executable, '-c', {report!r}])")
    )
    assert big - plain > 350 * 2**20, (plain, big)
    assert abs(from_big_parent - plain) < 100 * 2**20, (plain, from_big_parent)
