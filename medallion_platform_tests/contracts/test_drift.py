"""A renamed column is reported with the line that fixes it, never loaded as NULLs in silence."""

from __future__ import annotations

from dagster import AssetCheckSeverity, AssetKey, materialize

from medallion_platform.connectors.files import FileFeed, ingest_files
from medallion_platform.contracts import Column, Contract, apply_contract
from medallion_platform.contracts.drift import detect_drift
from medallion_platform.defs.resources import WarehouseResource
from medallion_platform.defs.silver import DRIFT_CHECK, build_silver_assets
from medallion_platform.status import format_status, read_status
from medallion_platform_tests.conftest import write_csv

FEED = FileFeed(name="flights", description="x", folder="flights", contract="flights")


def _contract(**column_kw) -> Contract:
    return Contract(
        name="flights",
        description="flight delays",
        source="files_flights",
        business_key=["flight"],
        columns=[
            Column(name="flight"),
            Column(name="delay_minutes", type="integer", **column_kw),
        ],
    )


def _load(warehouse, settings) -> None:
    write_csv(settings.landing_dir, "flights/2026-11-01.csv", "flight,delay_minutes\nLH1,5\n")
    write_csv(  # next day the export renamed a column and grew one
        settings.landing_dir, "flights/2026-11-02.csv", "flight,delay_mins,gate\nLH2,7,A1\n"
    )
    report = ingest_files(warehouse, FEED, settings.landing_dir)
    assert [f.status for f in report.files] == ["loaded", "loaded"]


def test_a_renamed_column_is_named_with_the_aliases_line_that_fixes_it(warehouse, settings) -> None:
    _load(warehouse, settings)
    with warehouse.transaction() as conn:
        apply_contract(conn, _contract())
        silver = conn.execute("SELECT * EXCLUDE (_batch_id, _source, _row_number) "
                              "FROM silver.flights ORDER BY 1").fetchall()  # fmt: skip
        report = detect_drift(conn, _contract())
    assert silver == [("LH1", 5), ("LH2", None)]  # what used to happen, silently
    assert report.drifted
    (finding,) = report.findings
    assert finding.where == "flights/2026-11-02.csv"
    assert (finding.missing, finding.new) == (["delay_minutes"], ["delay_mins", "gate"])
    assert report.fix_lines() == ["contract flights: column delay_minutes: aliases: [delay_mins]"]

    fixed = _contract(aliases=["delay_mins"])
    with warehouse.transaction() as conn:
        stats = apply_contract(conn, fixed)  # the alias changes the fingerprint: a rebuild
        silver = conn.execute("SELECT flight, delay_minutes FROM silver.flights ORDER BY 1")
        assert stats.rebuilt and silver.fetchall() == [("LH1", 5), ("LH2", 7)]
        after = detect_drift(conn, fixed)
    (finding,) = after.findings  # the renamed column is read again; 'gate' is still news
    assert (finding.missing, finding.new, after.fix_lines()) == ([], ["gate"], [])


def test_the_silver_asset_warns_and_status_lists_the_drift(warehouse, settings) -> None:
    _load(warehouse, settings)
    silver = build_silver_assets(_contract(), AssetKey(["bronze", "files_flights"]))
    result = materialize(
        [silver],
        resources={"warehouse": WarehouseResource(path=str(settings.warehouse_path))},
    )
    assert result.success  # a warning, not a failure: the run goes on
    (check,) = [c for c in result.get_asset_check_evaluations() if c.check_name == DRIFT_CHECK]
    assert not check.passed and check.severity == AssetCheckSeverity.WARN
    assert check.metadata["fix"].value == [
        "contract flights: column delay_minutes: aliases: [delay_mins]"
    ]


def test_status_lists_drift_of_a_packaged_contract(warehouse, settings, config) -> None:
    feed = next(f for f in config.feeds if f.name == "ad_spend")
    header = "date,channel,campaign,spend,impressions,click_count\n"
    write_csv(settings.landing_dir, "ad_spend/a.csv", header + "2026-11-01,email,x,1,10,2\n")
    ingest_files(warehouse, feed, settings.landing_dir)
    status = read_status(settings, streams=[], cdc_sources=[])
    (report,) = status.drift
    assert report.contract == "ad_spend" and report.findings[0].missing == ["clicks"]
    text = format_status(status)
    assert "Schema drift in contract ad_spend" in text
    assert "column clicks: aliases: [click_count]" in text


def test_a_column_read_from_platform_lineage_is_not_drift(warehouse, settings) -> None:
    """``_changed_at`` is stamped by the REST connector on records from a change log: bronze
    has no such column until the first change lands, and that is not the source drifting."""
    _load(warehouse, settings)
    contract = _contract(aliases=["delay_mins"]).model_copy(
        update={
            "columns": [
                *_contract(aliases=["delay_mins"]).columns,
                Column(name="changed_at", source="_changed_at", type="timestamp"),
            ]
        }
    )
    with warehouse.transaction() as conn:
        report = detect_drift(conn, contract)
    assert [f.missing for f in report.findings] == [[]]  # only 'gate' is news
    assert [f.new for f in report.findings] == [["gate"]]
