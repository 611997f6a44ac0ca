"""Untrusted weights and bundle files: nothing this project ships loads pickles or runs code from a logging file.

``torch.load`` without ``weights_only=True`` unpickles arbitrary objects, so a weight file from elsewhere could run
code; every call in the project's Python and in the bundle configs must pass ``weights_only=True`` (checked on the
syntax tree, so a call split over lines or with other arguments is still found). A bundle's ``logging.conf`` is
applied before its configs are parsed, and ``logging.config.fileConfig`` evaluates ``class=``/``args=``; each one must
pass MONAI 1.6's allow-list of plain logging classes and literal arguments.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from monai.bundle.workflows import _reject_executable_logging_config

from tests.conftest import BUNDLES_DIR, REPO_ROOT, bundle_names

PYTHON_FOLDERS = ("common", "tools", "tests")


def _is_torch_load(call: ast.Call) -> bool:
    func = call.func
    return isinstance(func, ast.Attribute) and func.attr == "load" and ast.unparse(func.value) == "torch"


def _weights_only(call: ast.Call) -> bool:
    return any(
        k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True for k in call.keywords
    )


def unsafe_torch_loads(source: str) -> list[int]:
    """Line numbers of ``torch.load`` calls in ``source`` without ``weights_only=True``."""
    return [
        node.lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call) and _is_torch_load(node) and not _weights_only(node)
    ]


def test_the_check_finds_unsafe_calls() -> None:
    assert unsafe_torch_loads("import torch\ntorch.load(p)\ntorch.load(\n  p, map_location='cpu')\n") == [2, 3]
    assert unsafe_torch_loads("torch.load(p, weights_only=False)") == [1]
    assert unsafe_torch_loads("torch.load(p, map_location='cpu', weights_only=True)") == []


def test_every_torch_load_in_the_project_is_weights_only() -> None:
    files = [p for folder in PYTHON_FOLDERS for p in sorted((REPO_ROOT / folder).rglob("*.py"))]
    assert len(files) > 50, "the check found too few files to mean anything"
    unsafe = {str(p.relative_to(REPO_ROOT)): lines for p in files if (lines := unsafe_torch_loads(p.read_text()))}
    assert not unsafe, f"torch.load without weights_only=True: {unsafe}"


def test_bundle_configs_load_weights_only() -> None:
    calls = [
        (config.relative_to(REPO_ROOT), call)
        for config in sorted(BUNDLES_DIR.glob("*/configs/*.json"))
        for call in re.findall(r"torch\.load\([^\"]*", config.read_text())
    ]
    assert not [(str(f), c) for f, c in calls if "weights_only=True" not in c]


@pytest.mark.parametrize("name", bundle_names())
def test_logging_conf_passes_monai_allow_list(name: str) -> None:
    _reject_executable_logging_config(str(BUNDLES_DIR / name / "configs" / "logging.conf"))


def test_the_allow_list_refuses_code_in_a_logging_conf(tmp_path: Path) -> None:
    hostile = tmp_path / "logging.conf"
    hostile.write_text(
        "[loggers]\nkeys=root\n[handlers]\nkeys=h\n[formatters]\nkeys=f\n"
        "[logger_root]\nlevel=INFO\nhandlers=h\n"
        "[handler_h]\nclass=StreamHandler\nformatter=f\nargs=(__import__('os').system('true'),)\n"
        "[formatter_f]\nformat=%(message)s\n"
    )
    with pytest.raises(ValueError):
        _reject_executable_logging_config(str(hostile))
