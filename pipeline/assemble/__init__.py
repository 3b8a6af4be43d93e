"""Assemble: multi-temporal stacks on one grid, harmonised, with clearance."""
