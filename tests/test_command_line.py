"""Tests of common.command_line: the overrides of ``python -m monai.bundle run`` are checked before a bundle runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.command_line import check_command_line, check_overrides, command_line_overrides
from tests.conftest import BUNDLES_DIR

MAIN = "/venv/lib/python3.11/site-packages/monai/bundle/__main__.py"
SDF = BUNDLES_DIR / "sdf_score_segmentation" / "configs"


def argv(*args: str, config: str = str(SDF / "train.json")) -> list[str]:
    return [MAIN, "run", "training", "--config_file", config, *args]


def test_arguments_are_parsed_as_fire_parses_them() -> None:
    found = command_line_overrides([MAIN, "run", "--a", "3", "--b=[1, 2]", "--c", "false", "--d", "--e", "-1"])
    assert found == {"a": 3, "b": [1, 2], "c": "false", "d": True, "e": -1}


@pytest.mark.parametrize(
    "args",
    [
        ("--max_epochs", "3"),
        ("--patch_size", "[64, 64]"),
        ("--patch_size", "[64.0, 96]"),
        ("--learning_rate", "1e-3"),
        ("--learning_rate", "1"),  # an int where a float is expected
        ("--resume", "false"),
        ("--resume", "True"),
        ("--num_workers", "0"),
        ("--dataset_dir", "/data/monuseg"),
        ("--train#trainer#max_epochs", "2"),  # a nested id under a known key
        ("--bundle_root", "/tmp/b"),
        ("--meta_file", "m.json"),  # monai.bundle's own argument
    ],
)
def test_good_overrides_pass(args: tuple[str, ...]) -> None:
    check_command_line(argv(*args))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--max_epoch", "3"), "--max_epoch: no such key in"),
        (("--max_epoch", "3"), "did you mean --max_epochs"),
        (("--batch_size", "abc"), "--batch_size 'abc': expected an integer (default 2)"),
        (("--batch_size", "2.5"), "--batch_size 2.5: expected an integer"),
        (("--max_epochs", "-1"), "--max_epochs -1: expected a positive integer"),
        (("--max_epochs", "0"), "--max_epochs 0: expected a positive integer"),
        (("--patch_size", "[0, 32]"), "--patch_size [0, 32]: expected a list of positive numbers"),
        (("--patch_size", "128"), "--patch_size 128: expected a list like [128, 128]"),
        (("--learning_rate", "fast"), "--learning_rate 'fast': expected a number"),
        (("--learning_rate", "-0.1"), "--learning_rate -0.1: expected a value >= 0"),
        (("--resume", "maybe"), "--resume 'maybe': expected true or false"),
        (("--dataset_dir", "[1, 2]"), "--dataset_dir [1, 2]: expected a string"),
        (("--patch_size", "[64, 'x']"), "expected a list of positive numbers"),
    ],
)
def test_bad_overrides_are_refused_naming_the_key(args: tuple[str, ...], expected: str) -> None:
    with pytest.raises(ValueError, match="command-line override") as error:
        check_command_line(argv(*args))
    assert expected in str(error.value)


def test_every_bad_key_is_named_in_one_message() -> None:
    with pytest.raises(ValueError) as error:
        check_command_line(argv("--max_epoch", "3", "--batch_size", "x", "--seed", "1"))
    assert "--max_epoch" in str(error.value) and "--batch_size" in str(error.value) and "--seed" not in str(error.value)


def test_training_keys_given_to_inference_are_logged_not_refused(caplog: pytest.LogCaptureFixture) -> None:
    check_command_line(argv("--max_epochs", "3", config=str(SDF / "inference.json")))
    assert "--max_epochs" in caplog.text and "not used" in caplog.text


def test_merged_configs_and_args_file(tmp_path: Path) -> None:
    files = json.dumps([str(SDF / "train.json"), str(SDF / "evaluate.json")])
    check_command_line(argv("--eval_dir", "/tmp/e", config=files))  # a key of the second file
    args = tmp_path / "args.json"
    args.write_text(json.dumps({"config_file": str(SDF / "train.json"), "max_epoch": 2}))
    with pytest.raises(ValueError, match="--max_epoch: no such key"):
        check_command_line([MAIN, "run", "--args_file", str(args)])


def test_other_processes_are_not_checked() -> None:
    """MONAI Label, Deploy and tests build workflows in-process: their overrides do not come from a command line."""
    check_command_line(["/usr/bin/monailabel", "start_server", "--max_epoch", "3"])
    check_command_line([MAIN, "run"])  # no config file named: nothing to compare with
    check_overrides([str(SDF / "train.json")], {"config_file": "x", "run_id": "training"})
