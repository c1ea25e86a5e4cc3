"""The engine: one async task-run engine and one flow-run engine, with thin sync edges."""
