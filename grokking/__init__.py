"""Reproduce and study grokking (Power et al. 2022): memorize first, generalize much later.

The Python API (see grokking/api.py): `load_run`, `RunConfig`, `PRESETS`, `draw_run`, `GrokkingError`
(what every mistake a user can make raises), and `grokking.train.train` (not re-exported:
`grokking.train` is that module). These names, and `main` (the Typer app of the `grokking` command),
are imported on first use, so that `import grokking.config` (or any module below the CLI) loads
neither typer, rich nor matplotlib.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

__version__ = "0.1.0"

# Each public name and the module it lives in.
_LAZY = {
    "main": "grokking.cli",
    "load_run": "grokking.api",
    "Run": "grokking.api",
    "RunConfig": "grokking.config",
    "PRESETS": "grokking.config",
    "draw_run": "grokking.plot",
    "GrokkingError": "grokking.errors",
}
__all__ = ["__version__", "run", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'grokking' has no attribute {name!r}")


def run() -> None:
    """The `grokking` command: the app, with Ctrl-C while torch and the rest load ending quietly too."""
    try:
        from grokking.cli import run as run_app
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        raise SystemExit(130) from None
    run_app()
