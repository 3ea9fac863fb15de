"""Nightly retraining: a 02:00 schedule, an incoming-files sensor, eager downstream assets.

The schedule and the sensor launch one run of ``refresh_upstream`` (ingestion,
embeddings of new images only, PCA, clusters, split). Everything downstream
(all triplet partitions, the training sets, every model partition, the
reports) carries ``AutomationCondition.eager()``, so Dagster's automation
sensor materializes it as soon as its parents have new data versions, partition
by partition. Unchanged inputs give unchanged data versions, so nothing
downstream re-runs needlessly.
"""

import os
import time
from pathlib import Path

import dagster as dg

from curatornet_pipeline import settings

#: Given to every asset below the split: materialize when a parent updates.
EAGER = dg.AutomationCondition.eager()

UPSTREAM = dg.AssetSelection.all() - dg.AssetSelection.keys("triplets").downstream()

refresh_upstream = dg.define_asset_job(
    "refresh_upstream",
    selection=UPSTREAM,
    description="Ingestion to train/test split; downstream assets follow by automation.",
)


def incoming_dir() -> Path:
    return Path(os.environ.get("CURATORNET_INCOMING", settings.data_dir() / "incoming"))


@dg.schedule(
    job=refresh_upstream,
    cron_schedule=os.environ.get("CURATORNET_NIGHTLY_CRON", "0 2 * * *"),
    execution_timezone=os.environ.get("CURATORNET_TIMEZONE", "UTC"),
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def nightly_retraining(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Bring the whole graph up to date every night."""
    when = context.scheduled_execution_time
    stamp = when.isoformat() if when else "manual"
    return dg.RunRequest(run_key=f"nightly-{stamp}", tags={"curatornet/trigger": "nightly"})


@dg.sensor(
    job=refresh_upstream,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
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
            "curatornet/trigger": "incoming",
            "curatornet/accepted": ",".join(report.accepted)[:200],
            "curatornet/rejected": ",".join(report.rejected)[:200],
        },
    )


automation_sensor = dg.AutomationConditionSensorDefinition(
    "downstream_automation",
    target=dg.AssetSelection.all(),
    default_status=(
        dg.DefaultSensorStatus.STOPPED
        if os.environ.get("CURATORNET_AUTOMATION", "on") == "off"
        else dg.DefaultSensorStatus.RUNNING
    ),
)
