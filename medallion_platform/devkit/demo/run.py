"""``medallion demo``: seed the landing zone and run the main job through Dagster."""

from __future__ import annotations

from dagster import DagsterInstance

from medallion_platform.devkit.demo.calendar import AD_SPEND_DAYS, days_before
from medallion_platform.devkit.demo.generator import DemoManifest, generate_landing_files
from medallion_platform.instance import use_instance
from medallion_platform.settings import PlatformSettings


def seed(settings: PlatformSettings, *, scale: float, seed: int) -> DemoManifest:
    use_instance(settings)
    return generate_landing_files(
        settings.landing_dir,
        scale=scale,
        seed=seed,
        start_date=days_before(AD_SPEND_DAYS),
        days=AD_SPEND_DAYS,
    )


def run_main_job(settings: PlatformSettings, log_level: str = "WARNING") -> bool:
    """Run ``medallion_job`` in this process on the platform's instance (visible in the UI)."""
    from medallion_platform.definitions import MAIN_JOB, build_definitions

    use_instance(settings)
    job = build_definitions(settings).resolve_job_def(MAIN_JOB)
    with DagsterInstance.get() as instance:
        result = job.execute_in_process(
            instance=instance,
            raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
        )
    return result.success
