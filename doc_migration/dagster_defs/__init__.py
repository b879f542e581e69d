"""Dagster wiring: partitions, resources, assets, checks, jobs and schedules."""

import warnings

import dagster as dg

# backfill_policy and pools are marked beta/preview in 1.13; the warnings are noise for operators.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
