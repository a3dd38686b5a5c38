"""Collating sweeps into tables and plots; `load_sweep(dir)`: a sweep as a DataFrame, a row per run."""

from .tidy import load_sweep

__all__ = ["load_sweep"]
