"""Dagster wiring: partitions, resources, assets, checks, jobs and schedules."""
