"""Scheduled regional runs: region definitions and how they are run."""
