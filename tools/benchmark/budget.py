"""Wall-clock budgets for the bundles' own trainers, and temporary settings of the per-bundle benchmark modules.

The per-bundle benchmarks (``tools.benchmark_*``) train for a number of epochs and keep their CPU sizes in module
constants. The combined benchmark gives every bundle the same wall-clock budget instead, and smaller sizes in quick
mode, without copying their code: their training functions take ``seconds`` (``tools.bundle_runs.StopAtDeadline``,
which ends the run before it would pass the budget, within an epoch if need be) with ``UNLIMITED_EPOCHS`` epochs,
and ``patched`` sets module constants for one block.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import ModuleType
from typing import Any

__all__ = ["UNLIMITED_EPOCHS", "patched"]

#: ``max_epochs`` given to trainers whose length a wall-clock budget decides
UNLIMITED_EPOCHS = 100_000


@contextlib.contextmanager
def patched(module: ModuleType, **values: Any) -> Iterator[None]:
    """Set module-level constants of ``module`` (e.g. a benchmark's CPU sizes) for the block, then restore them."""
    missing = [name for name in values if not hasattr(module, name)]
    if missing:
        raise AttributeError(f"{module.__name__} has no {missing}")
    saved = {name: getattr(module, name) for name in values}
    for name, value in values.items():
        setattr(module, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)
