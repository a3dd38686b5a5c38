"""Collating sweeps into tables and plots."""
