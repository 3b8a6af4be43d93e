"""Prefect flows and deployments wrapping pipeline functions (issue: orchestration)."""
