"""Files as other tools write them, through the real loader and contract.

pandas writes an integer column with gaps as ``517.0``; R writes ``NA``; PostgreSQL's COPY
writes ``\\N`` between tabs. None of these may cost a row, and none may slip a wrong value
into silver. The parsing rules are one table (trim, then strict ISO/decimal forms), the same
for every type and for ``accepted_values``.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pandas as pd
import pytest

from medallion_platform.connectors.files import FileFeed, ingest_files
from medallion_platform.contracts import Column, Contract, apply_contract
from medallion_platform.settings import PlatformSettings
from medallion_platform.warehouse import Warehouse
from medallion_platform_tests.conftest import copy_packaged_config, settled


def _feed(name: str, **kw) -> FileFeed:
    return FileFeed(name=name, description=name, folder=name, contract=name, **kw)


def _contract(name: str, columns: list[Column], key: str = "id", **kw) -> Contract:
    return Contract(
        name=name,
        description=name,
        source=f"files_{name}",
        business_key=[key],
        columns=columns,
        **kw,
    )


def _load_and_apply(
    warehouse: Warehouse, settings: PlatformSettings, feed: FileFeed, contract: Contract
) -> tuple[dict[str, tuple], dict[int, str]]:
    """Load every file waiting for ``feed``, apply ``contract``; (silver by key, reasons)."""
    for path in (settings.landing_dir / feed.folder).iterdir():
        settled(path)
    report = ingest_files(warehouse, feed, settings.landing_dir)
    assert all(f.status == "loaded" for f in report.files), report
    with warehouse.transaction() as conn:
        apply_contract(conn, contract)
        cols = [c.name for c in contract.columns]
        rows = conn.execute(
            f"SELECT {', '.join(cols)} FROM silver.{contract.name} ORDER BY 1"
        ).fetchall()
        reasons = dict(
            conn.execute(f"SELECT _row_number, _reason FROM quarantine.{contract.name}").fetchall()
        )
    return {str(r[0]): r[1:] for r in rows}, reasons


def test_pandas_integers_with_gaps_load_and_fractions_are_still_refused(
    warehouse, settings
) -> None:
    """``df.to_csv`` of an int column with a missing value writes floats: 517.0, ''."""
    df = pd.DataFrame({"id": ["a", "b", "c", "d"], "qty": [517, None, 3, 2.5]})
    assert df["qty"].dtype == "float64"
    path = settings.landing_dir / "stock" / "stock.csv"
    path.parent.mkdir(parents=True)
    df.to_csv(path, index=False)
    assert "517.0" in path.read_text()
    contract = _contract(
        "stock", [Column(name="id"), Column(name="qty", type="integer"), Column(name="n")]
    )
    silver, reasons = _load_and_apply(warehouse, settings, _feed("stock"), contract)
    assert silver == {"a": (517, None), "b": (None, None), "c": (3, None)}
    assert reasons == {4: "qty: cannot parse '2.5' as integer"}


R_CSV = (  # write.csv(df, row.names = FALSE): quoted strings, NA unquoted
    '"id","country","delay_minutes","on_time"\n'
    '"F1","DE",12,TRUE\n'
    '"F2",NA,NA,NA\n'
    '"F3","NA",7,FALSE\n'
)


def test_r_na_markers_are_nulls_where_declared_and_namibia_stays(warehouse, settings) -> None:
    (settings.landing_dir / "flights").mkdir(parents=True)
    (settings.landing_dir / "flights" / "flights.csv").write_text(R_CSV)
    columns = [
        Column(name="id"),
        # 'NA' is Namibia here: this column reads only the empty field as NULL.
        Column(name="country", null_values=[]),
        Column(name="delay_minutes", type="integer"),
        Column(name="on_time", type="boolean"),
    ]
    feed = _feed("flights", null_values=["NA"])
    # (the config loader hands a feed's null_values to its contract: tested below)
    contract = _contract("flights", columns, null_values=feed.null_values)
    silver, reasons = _load_and_apply(warehouse, settings, feed, contract)
    assert reasons == {}
    assert silver == {
        "F1": ("DE", 12, True),
        "F2": ("NA", None, None),  # R's unquoted NA (bronze keeps the text 'NA' as is)
        "F3": ("NA", 7, False),
    }


def test_without_declared_markers_na_is_quarantined_not_guessed(warehouse, settings) -> None:
    (settings.landing_dir / "flights").mkdir(parents=True)
    (settings.landing_dir / "flights" / "flights.csv").write_text(R_CSV)
    columns = [Column(name="id"), Column(name="delay_minutes", type="integer")]
    feed, contract = _feed("flights"), _contract("flights", columns)
    _, reasons = _load_and_apply(warehouse, settings, feed, contract)
    assert reasons == {2: "delay_minutes: cannot parse 'NA' as integer"}


def test_a_feeds_null_values_reach_its_contract_through_the_config(tmp_path) -> None:
    from medallion_platform.config import load_config

    config_dir = copy_packaged_config(tmp_path / "config")
    feeds = config_dir / "file_feeds.yaml"
    marker = "    contract: ad_spend\n"
    feeds.write_text(feeds.read_text().replace(marker, marker + "    null_values: [NA, 'N/A']\n"))
    config = load_config(config_dir)
    ad_spend = config.contract("ad_spend")
    assert ad_spend.null_values == ["NA", "N/A"]
    assert ad_spend.null_markers(ad_spend.column("spend")) == ["", "NA", "N/A"]
    assert config.contract("products").null_values is None


def test_a_postgresql_copy_text_export_loads_with_its_null_marker(
    warehouse, settings, postgres
) -> None:
    """The real server's ``COPY … TO STDOUT`` (text format): tab-separated, NULL as \\N."""
    with postgres.connect() as conn:
        conn.execute("CREATE TEMP TABLE export (id text, amount numeric(8,2), seen timestamptz)")
        conn.execute(
            "INSERT INTO export VALUES ('x1', 12.50, '2026-11-02 10:00:00+01'), "
            "('x2', NULL, NULL), ('x3', 0, '2026-11-03 00:00:00+00')"
        )
        conn.execute("SET TIME ZONE 'Europe/Berlin'")
        with conn.cursor().copy("COPY export TO STDOUT") as copy:
            data = b"".join(bytes(chunk) for chunk in copy)
    assert b"\\N" in data
    path = settings.landing_dir / "export" / "export.tsv"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"id\tamount\tseen\n" + data)
    feed = _feed("export", glob="*.tsv", csv={"delimiter": "\t"}, null_values=["\\N"])
    columns = [
        Column(name="id"),
        Column(name="amount", type="decimal(8,2)"),
        Column(name="seen", type="timestamptz"),
    ]
    contract = _contract("export", columns, null_values=feed.null_values)
    silver, reasons = _load_and_apply(warehouse, settings, feed, contract)
    assert reasons == {}
    utc = dt.UTC
    assert {k: (v[0], v[1].astimezone(utc) if v[1] else None) for k, v in silver.items()} == {
        "x1": (Decimal("12.50"), dt.datetime(2026, 11, 2, 9, 0, tzinfo=utc)),
        "x2": (None, None),
        "x3": (Decimal("0.00"), dt.datetime(2026, 11, 3, 0, 0, tzinfo=utc)),
    }


# One table of the rules, every type: (type, text, expected silver value or the reason).
STRICTNESS = [
    ("integer", " 42 ", 42),  # surrounding spaces are trimmed, for every type
    ("integer", "517.0", 517),
    ("integer", "517.5", "cannot parse '517.5' as integer"),
    ("integer", "1e3", "cannot parse '1e3' as integer"),
    ("decimal(10,2)", "12.990", Decimal("12.99")),  # trailing zeros change nothing
    ("decimal(10,2)", "12.999", "cannot parse '12.999' as decimal(10,2)"),
    ("decimal(10,2)", "12,99", "cannot parse '12,99' as decimal(10,2)"),
    ("double", "1e3", 1000.0),
    ("double", "NaN", "cannot parse 'NaN' as double"),
    ("double", "inf", "cannot parse 'inf' as double"),
    ("boolean", "Y", True),
    ("boolean", "off", False),
    ("boolean", "TRUE", True),
    ("boolean", "maybe", "cannot parse 'maybe' as boolean"),
    ("date", "2026-01-02", dt.date(2026, 1, 2)),
    ("date", "2026-1-2", "cannot parse '2026-1-2' as date"),
    ("date", "02/01/2026", "cannot parse '02/01/2026' as date"),
    ("date", "2026-02-30", "cannot parse '2026-02-30' as date"),
    ("date", "294247-01-01", "cannot parse '294247-01-01' as date"),
    ("timestamp", "2026-01-02T03:04:05+05:30", dt.datetime(2026, 1, 1, 21, 34, 5)),
    ("timestamp", "2026-01-02 03:04", dt.datetime(2026, 1, 2, 3, 4)),
    ("timestamp", "2026-01-02T03:04:05+99:00", "cannot parse '2026-01-02T03:04:05+99:00'"),
    ("timestamp", "294247-01-02T03:04:05", "cannot parse '294247-01-02T03:04:05'"),
    ("timestamp", "1/2/2026 3:04", "cannot parse '1/2/2026 3:04' as timestamp"),
    ("varchar", "  padded  ", "padded"),
]


def test_parsing_is_one_strict_table_for_every_type(warehouse, settings) -> None:
    lines = ["id,value"] + [f'r{i},"{text}"' for i, (_, text, _) in enumerate(STRICTNESS)]
    (settings.landing_dir / "strict").mkdir(parents=True)
    (settings.landing_dir / "strict" / "s.csv").write_text("\n".join(lines) + "\n")
    settled(settings.landing_dir / "strict" / "s.csv")
    ingest_files(warehouse, _feed("strict"), settings.landing_dir)
    for i, (dtype, text, expected) in enumerate(STRICTNESS):
        contract = _contract(
            "strict", [Column(name="id"), Column(name="value", type=dtype)]
        ).model_copy(update={"name": f"strict_{i}"})
        with warehouse.transaction() as conn:
            apply_contract(conn, contract)
            got = conn.execute(f"SELECT value FROM silver.strict_{i} WHERE id = 'r{i}'").fetchall()
            reason = conn.execute(
                f"SELECT _reason FROM quarantine.strict_{i} WHERE _row_number = {i + 1}"
            ).fetchall()
        if isinstance(expected, str) and dtype != "varchar":
            assert got == [] and reason and expected in reason[0][0], (dtype, text, reason)
        else:
            assert got == [(expected,)] and reason == [], (dtype, text, got, reason)


def test_accepted_values_compare_the_trimmed_value(warehouse, settings) -> None:
    (settings.landing_dir / "chan").mkdir(parents=True)
    (settings.landing_dir / "chan" / "c.csv").write_text(
        'id,channel\n1,"email "\n2,Email\n3,email\n'
    )
    columns = [Column(name="id"), Column(name="channel", accepted_values=["email"])]
    silver, reasons = _load_and_apply(
        warehouse, settings, _feed("chan"), _contract("chan", columns)
    )
    assert silver == {"1": ("email",), "3": ("email",)}
    assert reasons == {2: "channel: 'Email' is not one of email"}


@pytest.mark.parametrize("seconds", ["1767225600", "253402300800", "99999999999999999999"])
def test_epoch_seconds_past_year_9999_are_quarantined(seconds, warehouse, settings) -> None:
    (settings.landing_dir / "ep").mkdir(parents=True)
    (settings.landing_dir / "ep" / "e.csv").write_text(f"id,created\n1,{seconds}\n")
    columns = [
        Column(name="id"),
        Column(name="created", type="timestamp", transform="epoch_seconds"),
    ]
    silver, reasons = _load_and_apply(warehouse, settings, _feed("ep"), _contract("ep", columns))
    if seconds == "1767225600":
        assert silver == {"1": (dt.datetime(2026, 1, 1),)} and reasons == {}
    else:
        assert silver == {} and "cannot parse" in reasons[1]
