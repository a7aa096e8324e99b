"""Bulk import: stream records from a file in batches through a sink (the core's batch write)."""
