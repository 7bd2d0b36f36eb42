"""The landing-zone sensor: cheap, cursor-driven, one run per batch of new files."""

from __future__ import annotations

import json
import os
import time

import pytest
from dagster import AssetKey, DagsterInstance, RunRequest, SensorResult, build_sensor_context
from dagster._core.storage.dagster_run import DagsterRunStatus
from dagster._core.storage.tags import RUN_KEY_TAG
from dagster._core.test_utils import create_run_for_test

from medallion_platform.definitions import build_definitions
from medallion_platform.defs.resources import LandingZoneResource
from medallion_platform.settings import PlatformSettings
from medallion_platform_tests.conftest import write_csv

PRODUCTS = "sku,name,category,brand,unit_price,currency,weight_kg,active,updated_at\n"
AD_SPEND = "date,channel,campaign,spend,impressions,clicks\n"


@pytest.fixture
def sensor_def(settings: PlatformSettings):
    defs = build_definitions(settings)
    return defs.resolve_sensor_def("landing_zone_sensor")


def drop(settings: PlatformSettings, relpath: str, text: str, age_s: float = 60):
    """A file as a writer left it ``age_s`` seconds ago (settled unless age_s is small)."""
    path = write_csv(settings.landing_dir, relpath, text)
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))
    return path


def _tick(
    sensor_def, settings: PlatformSettings, cursor: str | None, instance=None
) -> SensorResult:
    context = build_sensor_context(
        cursor=cursor,
        instance=instance or DagsterInstance.ephemeral(),
        resources={"landing_zone": LandingZoneResource(path=str(settings.landing_dir))},
    )
    result = sensor_def(context)
    assert isinstance(result, SensorResult)
    return result


def test_no_files_skips_and_never_opens_the_warehouse(sensor_def, settings) -> None:
    result = _tick(sensor_def, settings, None)
    assert not result.run_requests
    assert result.skip_reason is not None
    assert not settings.warehouse_path.exists()


def test_new_files_give_one_run_request_with_the_files_and_their_assets(
    sensor_def, settings
) -> None:
    drop(
        settings, "products/a.csv", PRODUCTS + "SKU-000001,T,tents,B,1,USD,1,true,2026-10-01\n", 90
    )
    drop(settings, "products/b.csv", PRODUCTS)
    drop(settings, "products/_notes.csv", PRODUCTS)  # reserved name: ignored
    drop(settings, "products/readme.txt", "not a feed file")  # wrong glob

    result = _tick(sensor_def, settings, None)

    assert len(result.run_requests) == 1
    request: RunRequest = result.run_requests[0]
    config = request.run_config["ops"]
    assert config == {
        "bronze__files_products": {"config": {"files": ["products/a.csv", "products/b.csv"]}}
    }
    assert set(request.asset_selection) == {
        AssetKey(["bronze", "files_products"]),
        AssetKey(["silver", "products"]),
        AssetKey(["quarantine", "products"]),
        AssetKey(["gold", "dim_product"]),
        # Lines carry the product's category: a new catalog refreshes them and what reads them.
        AssetKey(["gold", "fct_order_items"]),
        AssetKey(["gold", "customer_360"]),
    }
    assert request.run_key and request.run_key.startswith("landing:")
    assert not settings.warehouse_path.exists()


def test_seen_files_are_not_requested_again_and_cursor_forgets_moved_files(
    sensor_def, settings
) -> None:
    path = drop(settings, "ad_spend/email_2026-10-01.csv", AD_SPEND)
    first = _tick(sensor_def, settings, None)
    assert len(first.run_requests) == 1

    second = _tick(sensor_def, settings, first.cursor)
    assert not second.run_requests

    path.unlink()  # the run loaded it and moved it to _archive
    third = _tick(sensor_def, settings, second.cursor)
    assert not third.run_requests
    assert json.loads(third.cursor) == {}


def test_run_key_is_stable_for_the_same_files_and_changes_with_content(
    sensor_def, settings
) -> None:
    path = drop(settings, "ad_spend/email_2026-10-01.csv", AD_SPEND)
    key1 = _tick(sensor_def, settings, None).run_requests[0].run_key
    assert _tick(sensor_def, settings, None).run_requests[0].run_key == key1

    path.write_text(AD_SPEND + "2026-10-01,email,c1,1.00,10,1\n")
    os.utime(path, (time.time() - 30, time.time() - 30))
    key2 = _tick(sensor_def, settings, None).run_requests[0].run_key
    assert key2 != key1


def _twenty_minutes_ago(cursor: str) -> str:
    return json.dumps(
        {
            fp: {**state, "requested_at": state["requested_at"] - 1200}
            for fp, state in json.loads(cursor).items()
        }
    )


def test_a_file_whose_run_failed_is_requested_again_after_the_retry_delay(
    sensor_def, settings
) -> None:
    drop(settings, "ad_spend/email_2026-10-01.csv", AD_SPEND)
    with DagsterInstance.ephemeral() as instance:
        first = _tick(sensor_def, settings, None, instance)
        key = first.run_requests[0].run_key
        create_run_for_test(instance, tags={RUN_KEY_TAG: key}, status=DagsterRunStatus.FAILURE)
        # The request was made 20 minutes ago and its run failed: the file is still there.
        retry = _tick(sensor_def, settings, _twenty_minutes_ago(first.cursor), instance)
    assert len(retry.run_requests) == 1
    assert retry.run_requests[0].run_key != key
    assert retry.run_requests[0].run_key.endswith(":retry1")


def test_a_file_whose_run_is_still_running_is_not_requested_twice(sensor_def, settings) -> None:
    """A run still going (or queued behind the warehouse pool) after 20 minutes has not failed."""
    drop(settings, "ad_spend/email_2026-10-01.csv", AD_SPEND)
    with DagsterInstance.ephemeral() as instance:
        first = _tick(sensor_def, settings, None, instance)
        key = first.run_requests[0].run_key
        create_run_for_test(instance, tags={RUN_KEY_TAG: key}, status=DagsterRunStatus.STARTED)
        later = _tick(sensor_def, settings, _twenty_minutes_ago(first.cursor), instance)
    assert not later.run_requests


def test_a_file_still_being_written_waits_until_it_settles(sensor_def, settings) -> None:
    """A file changed within the feed's settle_seconds is left for a later tick."""
    path = drop(settings, "ad_spend/email_2026-10-01.csv", AD_SPEND, age_s=1)
    first = _tick(sensor_def, settings, None)
    assert not first.run_requests
    assert "settle" in first.skip_reason.skip_message
    os.utime(path, (time.time() - 60, time.time() - 60))  # the writer finished a minute ago
    assert len(_tick(sensor_def, settings, first.cursor).run_requests) == 1


def test_files_of_two_feeds_share_one_run(sensor_def, settings) -> None:
    drop(settings, "products/a.csv", PRODUCTS)
    drop(settings, "ad_spend/email_2026-10-01.csv", AD_SPEND)
    result = _tick(sensor_def, settings, None)
    assert len(result.run_requests) == 1
    assert set(result.run_requests[0].run_config["ops"]) == {
        "bronze__files_products",
        "bronze__files_ad_spend",
    }
