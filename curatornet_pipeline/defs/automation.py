"""Nightly retraining: a 02:00 schedule and eager downstream assets.

The schedule (and the incoming-batch sensor, in ``defs/intake.py``) launch one run of ``refresh_upstream`` (ingestion,
embeddings of new images only, PCA, clusters, split). Everything downstream
(all triplet partitions, the training sets, every model partition, the
reports) carries ``AutomationCondition.eager()``, so Dagster's automation
sensor materializes it as soon as its parents have new data versions, partition
by partition. Unchanged inputs give unchanged data versions, so nothing
downstream re-runs needlessly.
"""

import os

import dagster as dg

#: Given to every asset below the split: materialize when a parent updates.
EAGER = dg.AutomationCondition.eager()

UPSTREAM = dg.AssetSelection.all() - dg.AssetSelection.keys("triplets").downstream()

refresh_upstream = dg.define_asset_job(
    "refresh_upstream",
    selection=UPSTREAM,
    description="Ingestion to train/test split; downstream assets follow by automation.",
)


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


automation_sensor = dg.AutomationConditionSensorDefinition(
    "downstream_automation",
    target=dg.AssetSelection.all(),
    default_status=(
        dg.DefaultSensorStatus.STOPPED
        if os.environ.get("CURATORNET_AUTOMATION", "on") == "off"
        else dg.DefaultSensorStatus.RUNNING
    ),
)
