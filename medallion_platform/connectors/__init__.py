"""Source connectors: plain Python that reads a source and writes bronze (no Dagster imports)."""
