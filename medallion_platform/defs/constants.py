"""Names shared across the Dagster layer."""

ROOT_OWNER = "team:data-platform"
