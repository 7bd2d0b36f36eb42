"""File drops in Dagster: a bronze asset per declared feed, and the landing-zone sensor."""

import hashlib
import json
import time
from collections.abc import Mapping, Sequence

from dagster import (
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    Config,
    DagsterInstance,
    DefaultSensorStatus,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    asset,
    sensor,
)
from dagster._core.storage.tags import RUN_KEY_TAG
from pydantic import Field

from medallion_platform.connectors.bronze import BRONZE_SCHEMA
from medallion_platform.connectors.files import FileFeed, ingest_files, list_landing_files
from medallion_platform.connectors.files.landing import unmatched_files
from medallion_platform.connectors.files.loader import ensure_feed_table
from medallion_platform.defs.metadata import table_metadata
from medallion_platform.defs.resources import LandingZoneResource, WarehouseResource
from medallion_platform.warehouse.tables import describe_table, markdown_table


class FileIngestConfig(Config):
    files: list[str] | None = Field(
        default=None,
        description="Landing paths (relative to the landing root) to load. Default: every "
        "file of the feed waiting in the landing zone. The landing-zone sensor fills this in.",
    )


def bronze_key(feed: FileFeed) -> AssetKey:
    return AssetKey([BRONZE_SCHEMA, feed.bronze_table])


def landing_key(feed: FileFeed) -> AssetKey:
    return AssetKey(["landing", feed.name])


def build_landing_spec(feed: FileFeed) -> AssetSpec:
    """The landing folder as an external asset, so lineage in the UI starts at the files."""
    return AssetSpec(
        landing_key(feed),
        group_name="landing",
        description=f"Files dropped into `landing/{feed.folder}/{feed.glob}` "
        f"({feed.format}), outside Dagster's control. {feed.description.strip()}",
        owners=[feed.owner],
        kinds={feed.format, "file"},
        tags={"layer": "landing"},
        metadata={"landing_folder": feed.folder, "glob": feed.glob},
    )


def build_bronze_file_asset(feed: FileFeed, feeds: Sequence[FileFeed] = ()) -> AssetsDefinition:
    """``bronze/files_<feed>``: raw rows of every landed file, as text, with lineage.

    ``feeds`` are all declared feeds: a file in this feed's folder that none of them takes is
    reported by the run (and by ``medallion status``), never silently left.
    """
    folder_feeds = [f for f in feeds if f.folder == feed.folder] or [feed]

    @asset(
        key=bronze_key(feed),
        deps=[landing_key(feed)],
        group_name="bronze",
        description=(
            f"{feed.description.strip()}\n\nRaw rows exactly as received from "
            f"`landing/{feed.folder}/{feed.glob}`, every value kept as text, append-only, with "
            "lineage columns `_batch_id`, `_ingested_at`, `_source` (file#row), `_file_hash`, "
            "`_parse_error`, `_extra_fields`. Each file loads exactly once (by content hash)."
        ),
        owners=[feed.owner],
        kinds={"duckdb", feed.format},
        tags={"layer": "bronze", "source": "files"},
        metadata={"landing_folder": feed.folder, "glob": feed.glob, "format": feed.format},
    )
    def _bronze(
        context,
        config: FileIngestConfig,
        warehouse: WarehouseResource,
        landing_zone: LandingZoneResource,
    ) -> MaterializeResult:
        wh = warehouse.warehouse()
        with wh.transaction() as conn:
            ensure_feed_table(conn, feed)
        report = ingest_files(wh, feed, landing_zone.root, config.files, run_id=context.run_id)
        for outcome in report.files:
            if outcome.status in ("rejected", "vanished", "changed_after_load", "changing"):
                context.log.warning(f"{outcome.status}: {outcome.path}: {outcome.reason}")
            elif outcome.status in ("duplicate", "settling"):
                context.log.info(f"Skipped {outcome.path}: {outcome.reason}")
        unmatched = unmatched_files(landing_zone.root, folder_feeds)
        if unmatched:
            globs = ", ".join(sorted({f.glob for f in folder_feeds}))
            context.log.warning(
                f"{len(unmatched)} file(s) in landing/{feed.folder}/ match no feed's glob "
                f"({globs}) and were not loaded: {', '.join(unmatched[:10])}"
            )
        with wh.connect() as conn:
            desc = describe_table(conn, BRONZE_SCHEMA, feed.bronze_table)
        files_table = markdown_table(
            ["file", "status", "rows", "batch", "reason"],
            [(f.path, f.status, f.rows, f.batch_id, f.reason or "") for f in report.files],
        )
        return MaterializeResult(
            metadata={
                **table_metadata(desc),
                "rows_added": report.rows_loaded,
                "files_loaded": report.count("loaded"),
                "files_duplicate": report.count("duplicate"),
                "files_rejected": report.count("rejected"),
                "files_waiting": report.count("settling") + report.count("changing"),
                "files_vanished": report.count("vanished"),
                "files_changed_after_load": report.count("changed_after_load"),
                "unmatched_files": MetadataValue.json(unmatched),
                "batch_ids": MetadataValue.json(report.batch_ids),
                "files": MetadataValue.md(files_table if report.files else "(no new files)"),
            }
        )

    return _bronze


def _run_key(fingerprints: Sequence[str], attempt: int) -> str:
    digest = hashlib.sha256("\n".join(sorted(fingerprints)).encode()).hexdigest()[:24]
    return f"landing:{digest}" + (f":retry{attempt}" if attempt else "")


def _still_running(instance: DagsterInstance, run_key: str) -> bool:
    """Whether a run launched for ``run_key`` is queued or in progress (then don't retry)."""
    runs = instance.get_runs(filters=RunsFilter(tags={RUN_KEY_TAG: run_key}), limit=5)
    return any(not run.is_finished for run in runs)


def build_landing_zone_sensor(
    feeds: Sequence[FileFeed],
    job_name: str,
    downstream_of_feed: Mapping[str, Sequence[AssetKey]],
    *,
    max_files_per_run: int = 500,
    retry_after_s: float = 900.0,
    minimum_interval_seconds: int = 30,
):
    """Lists the landing zone (names, sizes, mtimes; never contents, never the warehouse).

    A file is requested once it has settled (unchanged for the feed's ``settle_seconds``), so
    one still being written is left for a later tick. The cursor remembers the files it has
    requested that are still in the landing zone (loaded files are moved out, so it stays
    small). A file still waiting ``retry_after_s`` after its request, whose run is no longer
    queued or running (it failed, or was never launched), is requested again; loading is
    idempotent, so that is safe.
    """

    @sensor(
        name="landing_zone_sensor",
        job_name=job_name,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description="Watches the landing zone for new files and requests a run that loads them "
        "into bronze and refreshes what depends on them.",
    )
    def landing_zone_sensor(
        context: SensorEvaluationContext, landing_zone: LandingZoneResource
    ) -> SensorResult | SkipReason:
        seen: dict[str, dict[str, float | int | str]] = json.loads(context.cursor or "{}")
        now = time.time()
        present: dict[str, tuple[FileFeed, str]] = {}
        settling = 0
        for feed in feeds:
            for landed in list_landing_files(landing_zone.root, feed):
                if now - landed.mtime_ns / 1e9 < feed.settle_seconds:
                    settling += 1  # still being written, perhaps: look again next tick
                    continue
                present[landed.fingerprint] = (feed, landed.relpath)

        cursor = {fp: state for fp, state in seen.items() if fp in present}
        due = [fp for fp in present if fp not in cursor]
        stale = [
            fp
            for fp in present
            if fp in cursor and now - float(cursor[fp]["requested_at"]) >= retry_after_s
        ]
        stale_keys = {str(cursor[fp].get("run_key", "")) for fp in stale}
        running = {key for key in stale_keys if key and _still_running(context.instance, key)}
        due += [fp for fp in stale if cursor[fp].get("run_key") not in running]
        if not due:
            reason = "No new files in the landing zone."
            if settling:
                reason = f"{settling} file(s) still changing; waiting for them to settle."
            return SensorResult(
                skip_reason=SkipReason(reason), cursor=json.dumps(cursor, sort_keys=True)
            )

        requests = []
        for start in range(0, len(due), max_files_per_run):
            chunk = due[start : start + max_files_per_run]
            attempt = max(int(cursor.get(fp, {}).get("attempt", -1)) + 1 for fp in chunk)
            run_key = _run_key(chunk, attempt)
            files_by_feed: dict[str, list[str]] = {}
            for fp in chunk:
                feed, rel = present[fp]
                files_by_feed.setdefault(feed.name, []).append(rel)
                cursor[fp] = {"requested_at": now, "attempt": attempt, "run_key": run_key}
            selection = [key for name in files_by_feed for key in downstream_of_feed[name]]
            requests.append(
                RunRequest(
                    run_key=run_key,
                    asset_selection=selection,
                    run_config={
                        "ops": {
                            bronze_key(feed).to_python_identifier(): {
                                "config": {"files": files_by_feed[feed.name]}
                            }
                            for feed in feeds
                            if feed.name in files_by_feed
                        }
                    },
                    tags={"medallion/trigger": "landing_zone", "medallion/files": str(len(chunk))},
                )
            )
        return SensorResult(run_requests=requests, cursor=json.dumps(cursor, sort_keys=True))

    return landing_zone_sensor
