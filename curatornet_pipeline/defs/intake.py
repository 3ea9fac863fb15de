"""Incoming data: files dropped in ``incoming/`` are validated, appended, and refresh the graph."""

import os
import time
from pathlib import Path

import dagster as dg

from curatornet_pipeline import settings
from curatornet_pipeline.defs.automation import TRIGGER_TAG, refresh_upstream


def incoming_dir() -> Path:
    return Path(os.environ.get("CURATORNET_INCOMING", settings.data_dir() / "incoming"))


@dg.sensor(
    job=refresh_upstream,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Validates files dropped in incoming/, appends the good ones to the dataset "
    "and launches refresh_upstream.",
)
def incoming_files(context: dg.SensorEvaluationContext):
    """Validate and append files landing in incoming/, then refresh the graph."""
    from curatornet_pipeline.core.data import DatasetPaths
    from curatornet_pipeline.core.incoming import intake, pending

    folder = incoming_dir()
    if not pending(folder):
        return dg.SkipReason(f"nothing new in {folder}")
    report = intake(folder, DatasetPaths(settings.data_dir()))
    for name, error in report.rejected.items():
        context.log.warning(f"rejected {name}: {error}")
    if not report.changed:
        return dg.SkipReason(f"rejected {len(report.rejected)} file(s); see {folder}/rejected")
    key = "+".join(sorted(report.accepted))[:200]
    return dg.RunRequest(
        run_key=f"incoming-{time.time_ns()}-{key}",
        tags={
            TRIGGER_TAG: "sensor",
            "curatornet/accepted": ",".join(report.accepted)[:200],
            "curatornet/rejected": ",".join(report.rejected)[:200],
        },
    )


ASSETS: list = []
ASSET_CHECKS: list = []
JOBS: list = []
SENSORS = [incoming_files]
