"""Journey tests: the commands written in README.md and docs/*.md, run as written on a fresh copy."""
