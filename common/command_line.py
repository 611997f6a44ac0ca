"""Checks of the overrides given on ``python -m monai.bundle run ... --key value`` before a bundle uses them.

MONAI merges every ``--key value`` into the config as it is: a misspelt key (``--max_epoch 5``) adds a new, unused
entry and the run silently trains with the default; a wrong type (``--batch_size abc``) or a negative size fails deep
inside torch, or not at all. :func:`check_command_line` compares each override with the value it replaces in the
config files given on the same command line, and refuses unknown keys, other types and negative or zero sizes in one
message that names every key at fault.
"""

from __future__ import annotations

import difflib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fire.parser import DefaultParseValue
from monai.bundle import ConfigParser

__all__ = ["check_command_line", "check_overrides", "command_line_overrides"]

logger = logging.getLogger(__name__)

#: Arguments of ``monai.bundle run`` itself, not config ids.
RUN_ARGUMENTS = frozenset(
    {
        "args_file",
        "config_file",
        "final_id",
        "init_id",
        "logging_file",
        "meta_file",
        "properties_path",
        "run_id",
        "tracking",
        "workflow_name",
        "workflow_type",
    }
)

#: Integer keys with a positive default for which 0 is meaningful (off, none, an index or a seed).
ZERO_IS_VALID = frozenset(
    {
        "bn_refresh_batches",
        "corrector_steps",
        "display_channel",
        "feature_blocks",
        "feature_timesteps",
        "max_validation",
        "num_workers",
        "r1_every",
        "seed",
        "warmup_epochs",
    }
)

_TRUE_FALSE = {"true", "false", "0", "1"}


def _is_bundle_command(argv: Sequence[str]) -> bool:
    """True when this process is ``python -m monai.bundle ...`` (also under torchrun)."""
    main = Path(argv[0]) if argv else Path()
    return main.name == "__main__.py" and main.parent.name == "bundle" and main.parent.parent.name == "monai"


def command_line_overrides(argv: Sequence[str]) -> dict[str, Any]:
    """The ``--key value``, ``--key=value`` and bare ``--flag`` arguments of ``argv``, values parsed as fire does."""
    args, found, i = list(argv[1:]), {}, 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("--"):
            continue
        name, has_value, value = arg[2:].partition("=")
        if not has_value:
            if i < len(args) and not args[i].startswith("--"):
                value, i = args[i], i + 1
            else:
                value = "True"
        found[name.replace("-", "_")] = DefaultParseValue(value)
    return found


def _config_files(value: Any) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    text = str(value)
    if not os.path.isfile(text) and "," in text:
        return [part.strip() for part in text.split(",")]
    return [text]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _sign_error(key: str, default: Any, value: Any) -> str | None:
    if not (_number(default) and _number(value)) or default < 0:
        return None
    base = key.rsplit("#", 1)[-1]
    if isinstance(default, int) and default > 0 and value <= 0 and base not in ZERO_IS_VALID:
        return f"--{key} {value!r}: expected a positive integer (default {default!r})"
    if value < 0:
        return f"--{key} {value!r}: expected a value >= 0 (default {default!r})"
    return None


def _value_error(key: str, default: Any, value: Any) -> str | None:
    """Why ``value`` cannot replace ``default`` at ``key``, or None when it can."""
    if isinstance(default, str) and default[:1] in ("$", "@", "%"):
        return None  # an expression or a reference: its type is not known before it runs
    if isinstance(default, bool):
        if isinstance(value, bool) or str(value).strip().lower() in _TRUE_FALSE:
            return None
        return f"--{key} {value!r}: expected true or false (default {default!r})"
    if _number(default) and isinstance(value, bool):
        return f"--{key} {value!r}: expected a number (default {default!r})"
    if isinstance(default, int) and not isinstance(value, int):
        return f"--{key} {value!r}: expected an integer (default {default!r})"
    if isinstance(default, float) and not _number(value):
        return f"--{key} {value!r}: expected a number (default {default!r})"
    if isinstance(default, list) and default and all(_number(d) for d in default):
        if not isinstance(value, (list, tuple)):
            return f"--{key} {value!r}: expected a list like {default!r}"
        if not all(_number(item) for item in value) or any(_sign_error(key, min(default), item) for item in value):
            sign = "positive " if min(default) > 0 and key.rsplit("#", 1)[-1] not in ZERO_IS_VALID else ""
            sign = sign or ("non-negative " if min(default) >= 0 else "")
            return f"--{key} {value!r}: expected a list of {sign}numbers like the default {default!r}"
        return None
    if isinstance(default, str) and isinstance(value, (list, dict)):
        return f"--{key} {value!r}: expected a string (default {default!r})"
    return _sign_error(key, default, value)


def _sibling_keys(config_files: Sequence[str]) -> set[str]:
    """Top-level keys of the other configs beside ``config_files`` (a bundle's train.json beside its inference.json)."""
    keys: set[str] = set()
    for folder in {os.path.dirname(os.path.abspath(f)) for f in config_files}:
        for path in sorted(Path(folder).glob("*.json")):
            if path.name != "metadata.json":
                try:
                    keys.update(ConfigParser.load_config_file(str(path)))
                except ValueError:
                    continue
    return keys


def check_overrides(config_files: Sequence[str], overrides: dict[str, Any]) -> None:
    """Refuse ``overrides`` that are not ids of ``config_files`` (merged in order) or do not fit their defaults.

    An id ``a#b`` is accepted when ``a`` is a top-level key; its value is checked when ``a#b`` exists. A key of
    another config of the same bundle (``--max_epochs`` given to inference with the training overrides) is logged as
    unused, not refused. Arguments of ``monai.bundle run`` itself (:data:`RUN_ARGUMENTS`) are not config ids and pass.

    Raises:
        ValueError: naming every key at fault, what was expected and, for an unknown key, the closest known ones.
    """
    parser = ConfigParser()
    parser.read_config(list(config_files))
    known = list(parser.get())
    siblings = _sibling_keys(config_files)
    errors, unused = [], []
    for key, value in overrides.items():
        if key in RUN_ARGUMENTS:
            continue
        top = key.split("#", 1)[0]
        if top not in known and top in siblings:
            unused.append(key)
        elif top not in known:
            close = difflib.get_close_matches(top, [*known, *sorted(siblings)], n=3)
            hint = f"; did you mean {', '.join('--' + c for c in close)}?" if close else ""
            errors.append(f"--{key}: no such key in {', '.join(config_files)}{hint}")
            continue
        if key in parser:
            error = _value_error(key, parser[key], value)
            if error:
                errors.append(error)
    if unused:
        logger.warning(
            "overrides not used by %s (keys of the bundle's other configs): %s",
            ", ".join(config_files),
            ", ".join("--" + k for k in unused),
        )
    if errors:
        raise ValueError("command-line override(s) refused:\n  " + "\n  ".join(errors))


def check_command_line(argv: Sequence[str] | None = None) -> None:
    """Check this process's ``monai.bundle`` command-line overrides (see :func:`check_overrides`); bundles call it
    first in ``initialize``. Does nothing in a process that is not ``python -m monai.bundle`` (MONAI Label, Deploy,
    tests), whose overrides do not come from a command line.
    """
    argv = sys.argv if argv is None else argv
    if not _is_bundle_command(argv):
        return
    overrides = command_line_overrides(argv)
    if "args_file" in overrides:
        overrides = {**ConfigParser.load_config_file(str(overrides["args_file"])), **overrides}
    if "config_file" not in overrides:
        return
    check_overrides(_config_files(overrides["config_file"]), overrides)
