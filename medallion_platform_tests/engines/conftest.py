"""One local Spark session for the whole test session (starting one costs ~15 s on 2 cores)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from medallion_platform.engines.settings import EngineSettings

# Small data, short jobs: one shuffle partition, the JVM's quick (C1) compiler only, no
# generated code and no adaptive re-planning: about half the time of the defaults here.
TEST_SPARK_CONF = {
    "spark.sql.shuffle.partitions": "1",
    "spark.default.parallelism": "2",
    "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
    "spark.sql.codegen.wholeStage": "false",
    "spark.sql.adaptive.enabled": "false",
}


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    from medallion_platform.engines.spark import spark_session

    settings = EngineSettings(
        engine="spark", spark_master="local[2]", lake=str(tmp_path_factory.mktemp("lake"))
    )
    session = spark_session(settings, app_name="medallion_platform_tests", conf=TEST_SPARK_CONF)
    yield session
    session.stop()
