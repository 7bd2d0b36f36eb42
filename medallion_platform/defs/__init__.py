"""The Dagster layer: thin assets, sensors, checks and jobs built from the declared specs."""
