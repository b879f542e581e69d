"""Validation gates: the checks that prove a migration is complete, intact and searchable."""
