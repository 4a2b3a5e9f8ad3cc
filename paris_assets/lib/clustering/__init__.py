"""Partitioning into experts: two-stage k-means, the report that explains it, the quality gate."""
