"""Task runners that place work outside the flow's threads: processes, Dask, Ray (optional extras)."""
