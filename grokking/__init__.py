"""Reproduce and study grokking (Power et al. 2022): memorize first, generalize much later."""

__version__ = "0.1.0"

from grokking.cli import main  # noqa: E402

__all__ = ["main", "__version__"]
