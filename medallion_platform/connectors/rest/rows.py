"""API records as bronze rows: each record's JSON in ``_raw``, its place in ``_source``.

Bronze keeps a record as the API sent it, one JSON text, as the event stream's bronze keeps
each message in ``payload``; silver reads each field with a ``json_path`` (all of a contract's
paths in one parse per row, in DuckDB). The sync's Python per record is thus one encoding (by
the pager) and a key check. Flattening every field into a text column of its own, in Python,
was most of the sync's time and held it under half the API's rate (bench/README.md, REST,
"Fifth pass: the records' JSON only").

What bronze gives up is a column per field; what the drift report needs of it (which fields
records came with) is each distinct set of top-level fields, recorded as it first lands
(:func:`field_sets`, ``_meta.record_fields``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from json.encoder import c_make_encoder, encode_basestring_ascii
from typing import Any

import pyarrow as pa

from medallion_platform.connectors.bronze import EXTRA_FIELDS, PARSE_ERROR, ROW_NUMBER


def _json_text(item_separator: str, key_separator: str) -> Callable[[Any], str]:
    """``json.dumps(value, separators=(item_separator, key_separator))``, text for text.

    ``JSONEncoder.encode`` builds the C encoder it calls on every call; built once here, a
    record encodes in markedly less time. The one thing left out is the circular-reference
    check, which values parsed from JSON never need."""
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


def field_sets(records: Sequence[dict[str, Any]]) -> list[tuple[str, ...]]:
    """The distinct sets of top-level fields of ``records``, each in its record's order, in
    order of first appearance (an API's records usually share one). A JSON object's keys are
    text, so a record's keys are its fields as they are."""
    return list(dict.fromkeys(map(tuple, records)))


def bronze_rows(
    records: Sequence[dict[str, Any]],
    *,
    numbers: Sequence[int],
    sources: Sequence[str],
    raws: Sequence[str],
    required: Sequence[str],
    wheres: Sequence[str],
    stamps: dict[str, Sequence[str | None]] | None = None,
) -> pa.Table:
    """The bronze table of ``records``: ``_raw`` (``raws``, each record's JSON), ``_source``,
    ``_row_number``, ``_parse_error`` naming a missing required field (``"<where>: missing
    required field(s) …"``), ``_extra_fields``, and one text column per ``stamps`` entry (a
    value the platform stamps on each row, such as a change's time)."""
    n = len(records)
    errors: list[str | None] = [None] * n
    absent = [field for field in required if not all(field in r for r in records)]
    if absent:  # rare: only then is each record asked which it lacks
        for i, record in enumerate(records):
            missing = [field for field in required if field not in record]
            if missing:
                errors[i] = f"{wheres[i]}: missing required field(s) {', '.join(missing)}"
    data: dict[str, pa.Array] = {
        "_raw": pa.array(raws, pa.string()),
        "_source": pa.array(sources, pa.string()),
        ROW_NUMBER: pa.array(numbers, pa.int64()),
        PARSE_ERROR: pa.array(errors, pa.string()),
        EXTRA_FIELDS: pa.nulls(n, pa.string()),
    }
    for name, values in (stamps or {}).items():
        data[name] = pa.array(values, pa.string())
    return pa.table(data)


__all__ = ["bronze_rows", "field_sets", "raw_json"]
