"""File drops: a landing zone of CSV, JSON-lines and Parquet files, loaded exactly once."""

from medallion_platform.connectors.files.landing import LandingFile, list_landing_files
from medallion_platform.connectors.files.loader import FileOutcome, IngestReport, ingest_files
from medallion_platform.connectors.files.readers import FileReadError
from medallion_platform.connectors.files.spec import FileFeed

__all__ = [
    "FileFeed",
    "FileOutcome",
    "FileReadError",
    "IngestReport",
    "LandingFile",
    "ingest_files",
    "list_landing_files",
]
