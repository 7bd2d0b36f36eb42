"""Change data capture from PostgreSQL (logical decoding with pgoutput)."""
