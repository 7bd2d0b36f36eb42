"""Local brokers started as subprocesses for tests and the demo (no Dagster imports)."""
