"""API records as bronze rows, a commit's pages at a time, column by column.

Bronze keeps each record's top-level fields as text columns (strings as they are, booleans
``true``/``false``, numbers and nested values as their JSON), its JSON in ``_raw`` and its
place in ``_source``: what :func:`~medallion_platform.connectors.files.readers.flatten_object`
makes of one record, which stays the reference. Here the records of a commit are grouped by
key set (an API's records share one) and each field is read as one list, so the Python per
record is a few list steps instead of a dict, a loop over its fields and a ``json.dumps`` per
number (that was most of the sync's own time).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from json.encoder import c_make_encoder, encode_basestring_ascii
from typing import Any

import pyarrow as pa

from medallion_platform.connectors.bronze import EXTRA_FIELDS, PARSE_ERROR, ROW_NUMBER
from medallion_platform.connectors.files.readers import unique_column_names


def _json_text(item_separator: str, key_separator: str) -> Callable[[Any], str]:
    """``json.dumps(value, separators=(item_separator, key_separator))``, text for text.

    ``JSONEncoder.encode`` builds the C encoder it calls on every call; built once here, a
    small value (a charge's ``metadata``) encodes in under half the time. The one thing left
    out is the circular-reference check, which values parsed from JSON never need."""
    reference = json.JSONEncoder(separators=(item_separator, key_separator))
    if c_make_encoder is None:  # an interpreter without the C accelerator
        return reference.encode
    encode = c_make_encoder(
        None,  # no circular-reference markers
        reference.default,
        encode_basestring_ascii,
        None,  # no indent
        key_separator,
        item_separator,
        False,  # sort_keys
        False,  # skipkeys
        True,  # allow_nan
    )
    return lambda value: "".join(encode(value, 0))


raw_json = _json_text(",", ":")
"""``json.dumps(record, separators=(",", ":"))``: a record's ``_raw``."""
_nested_json = _json_text(", ", ": ")  # json.dumps' defaults: how a number or nested value is kept
_names_cache: dict[tuple[str, ...], list[str]] = {}


def _names(keys: tuple[str, ...]) -> list[str]:
    """Column names of a key set (normalized, repeats numbered), computed once per set."""
    names = _names_cache.get(keys)
    if names is None:
        if len(_names_cache) > 4096:
            _names_cache.clear()
        names = _names_cache[keys] = unique_column_names([str(k) for k in keys])
    return names


def _text(value: Any) -> str | None:
    """One field as bronze text (what flatten_object writes)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if type(value) is int:
        return str(value)  # what json.dumps writes for an int, for a fraction of the cost
    return _nested_json(value)


_NONE = type(None)
_BOOLEAN_TEXT = {True: "true", False: "false"}.__getitem__


def _texts(values: list[Any]) -> list[str | None]:
    """A field's values as text; a field of one type (the usual) converted in one ``map``."""
    kinds = set(map(type, values))
    if kinds <= {str, _NONE}:
        return values
    if kinds == {int}:
        return list(map(str, values))
    if kinds == {bool}:
        return list(map(_BOOLEAN_TEXT, values))
    if kinds == {dict}:
        return list(map(_nested_json, values))
    return [_text(v) for v in values]


def bronze_rows(
    records: Sequence[dict[str, Any]],
    *,
    numbers: Sequence[int],
    sources: Sequence[str],
    raws: Sequence[str],
    required: Sequence[str],
    wheres: Sequence[str],
) -> pa.Table:
    """The bronze table of ``records``: text columns in order of first appearance, ``_raw``,
    ``_source``, ``_row_number``, and ``_parse_error`` naming a missing required field
    (``"<where>: missing required field(s) …"``)."""
    n = len(records)
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, record in enumerate(records):
        groups.setdefault(tuple(record), []).append(i)
    columns: dict[str, list[Any]] = {}
    errors: list[str | None] = [None] * n
    for keys, members in groups.items():
        names = _names(keys)
        subset = records if len(members) == n else [records[i] for i in members]
        missing = [c for c in required if c not in names]
        if missing:
            for i in members:
                errors[i] = f"{wheres[i]}: missing required field(s) {', '.join(missing)}"
        for key, name in zip(keys, names, strict=True):
            values = _texts([r[key] for r in subset])
            if len(members) == n:
                columns[name] = values
                continue
            column = columns.setdefault(name, [None] * n)
            for i, value in zip(members, values, strict=True):
                column[i] = value
    data = {name: pa.array(values, pa.string()) for name, values in columns.items()}
    data["_raw"] = pa.array(raws, pa.string())
    data["_source"] = pa.array(sources, pa.string())
    data[ROW_NUMBER] = pa.array(numbers, pa.int64())
    data[PARSE_ERROR] = pa.array(errors, pa.string())
    data[EXTRA_FIELDS] = pa.nulls(n, pa.string())
    return pa.table(data)


__all__ = ["bronze_rows", "raw_json"]
