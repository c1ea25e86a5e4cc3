"""Utilities (Prefect's `prefect.utilities` paths)."""
