"""Identifiers that reach SQL come from configuration; they are validated here, once."""

from __future__ import annotations

import re

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class InvalidIdentifierError(ValueError):
    """A schema, table or column name that is not a plain lower-case SQL identifier."""


def validate_identifier(name: str) -> str:
    """Return ``name`` if it is a safe lower-case identifier, else raise."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise InvalidIdentifierError(
            f"{name!r} is not a valid identifier: use lower-case letters, digits and '_', "
            "starting with a letter or '_', at most 63 characters"
        )
    return name


def quote(name: str) -> str:
    """Quote a validated identifier for DuckDB."""
    return '"' + validate_identifier(name) + '"'


def qualified(schema: str, table: str) -> str:
    return f"{quote(schema)}.{quote(table)}"


def normalize_column_name(raw: str) -> str:
    """Turn a file header into a column name, as dlt does: ``"Unit Price ($)"`` → ``unit_price``.

    Headers are not trusted input; the result always passes :func:`validate_identifier`.
    """
    name = re.sub(r"[^0-9a-zA-Z]+", "_", raw.strip()).strip("_").lower()
    if not name:
        name = "column"
    if name[0].isdigit():
        name = "_" + name
    return name[:63]
