"""Interpretability of trained runs: Fourier spectrum of the embeddings, progress measures, ablations."""

from grokking.analysis.analyze import analyze_run

__all__ = ["analyze_run"]
