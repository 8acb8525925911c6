"""Deterministic orchestration only: no I/O, no clocks, no randomness outside `workflow.*`."""
