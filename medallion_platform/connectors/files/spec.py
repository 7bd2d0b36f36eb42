"""A file feed, as declared in ``config/file_feeds.yaml``."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from medallion_platform.warehouse.identifiers import validate_identifier


class CsvOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    delimiter: str = Field(default=",", min_length=1, max_length=1)
    quotechar: str = Field(default='"', min_length=1, max_length=1)
    encoding: Literal["utf-8", "utf-8-sig", "latin-1", "cp1252"] = "utf-8-sig"


class FileFeed(BaseModel):
    """One kind of file that arrives in the landing zone, and where its rows go."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Feed name; bronze table is bronze.files_<name>.")
    description: str
    folder: str = Field(description="Landing sub-folder the files arrive in.")
    glob: str = Field(default="*.csv", description="Which files in the folder belong to the feed.")
    format: Literal["csv", "jsonl", "parquet"] = "csv"
    contract: str = Field(description="Name of the silver contract that cleans this feed.")
    required_columns: list[str] = Field(
        default_factory=list,
        description="Columns (normalized names) without which a file is rejected whole.",
    )
    csv: CsvOptions = Field(default_factory=CsvOptions)
    null_values: list[str] = Field(
        default_factory=list,
        description="Texts that mean 'no value' in this feed's files besides the empty field "
        "(R writes NA, databases NULL or \\N). Its contract reads them as NULL unless it, or "
        "a column, declares its own. Empty by default: 'NA' is also Namibia's country code.",
    )
    settle_seconds: float = Field(
        default=10.0,
        ge=0,
        description="The sensor requests a file only once it has not changed for this long, "
        "so a file still being written is not loaded half-finished.",
    )
    owner: str = "team:data-platform"

    @field_validator("name", "contract")
    @classmethod
    def _identifier(cls, value: str) -> str:
        return validate_identifier(value)

    @field_validator("required_columns")
    @classmethod
    def _identifiers(cls, value: list[str]) -> list[str]:
        return [validate_identifier(v) for v in value]

    @field_validator("folder")
    @classmethod
    def _relative_folder(cls, value: str) -> str:
        path = PurePosixPath(value)
        if path.is_absolute() or ".." in path.parts or not path.parts:
            raise ValueError(f"folder {value!r} must be a relative path inside the landing zone")
        if any(part.startswith("_") for part in path.parts):
            raise ValueError(f"folder {value!r}: names starting with '_' are reserved")
        return str(path)

    @property
    def bronze_table(self) -> str:
        return f"files_{self.name}"
