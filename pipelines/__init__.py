"""Prefect flows over the hvt library: thin orchestration, no model or data logic."""
