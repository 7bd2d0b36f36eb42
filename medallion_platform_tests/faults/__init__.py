"""Fault trials: every source and every reverse-ETL sync, killed at seeded random points."""
