"""Snapshots: publish, pull, merge (above analysis; below the CLI)."""
