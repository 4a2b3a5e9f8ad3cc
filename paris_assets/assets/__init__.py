"""Dagster glue: each asset reads its settings, calls one stage function, hands a folder to storage, and
returns metadata."""
