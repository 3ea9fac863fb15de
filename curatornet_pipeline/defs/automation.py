"""Named jobs, the nightly schedule, and the conditions that keep the graph up to date.

Triggers launch named jobs; below the split, :data:`ON_DATA_CHANGE` requests a partition
only when the data version of an input changed (docs/architecture.md, "Jobs, triggers
and the main job" and "Automation only on change").
"""

import dagster as dg

from curatornet_pipeline import settings

#: Tag naming what launched a run: cli, ui, schedule, sensor, automation.
TRIGGER_TAG = "curatornet/trigger"
#: Runs that use every core (torch): the queued run coordinator runs a limited number
#: of them at once (``tag_concurrency_limits`` in dagster.yaml), so that two trainings
#: never oversubscribe the machine's cores.
HEAVY_TAG = "curatornet/heavy"

_deps_data_changed = dg.AutomationCondition.any_deps_match(
    dg.AutomationCondition.data_version_changed() | dg.AutomationCondition.will_be_requested()
).with_label("any_deps_data_version_changed")

#: Materialize when first missing, or when an input's data version changed; never while an
#: input is missing, running or failed a blocking check. (``eager()`` reacts to any new
#: materialization of a parent, even one that reproduced the same data version.)
ON_DATA_CHANGE = (
    (dg.AutomationCondition.newly_missing() | _deps_data_changed).since_last_handled()
    & ~dg.AutomationCondition.any_deps_missing()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
    & dg.AutomationCondition.all_deps_blocking_checks_passed()
).with_label("on_data_change")

UPSTREAM_ASSETS = (
    "applied_batches",  # applies the incoming batch a sensor run carries; else a no-op
    "inventory",
    "purchases",
    "image_manifest",
    "item_embeddings",
    "pca_embeddings",
    "visual_clusters",
    "cluster_map",
    "catalogue",
    "train_test_split",
    "validation_split",
)
TRAINING_JOBS = {
    "train_curatornet": "curatornet_models",
    "train_vbpr": "vbpr_models",
    "train_random_sampling": "random_sampling_models",
}
REPORT_ASSETS = ("evaluation_report", "sampling_ablation", "sample_recommendations", "champion")


def _job(name: str, keys, description: str, heavy: bool = True):
    selection = dg.AssetSelection.assets(*keys)
    tags = {HEAVY_TAG: "true"} if heavy else {}
    return dg.define_asset_job(name, selection=selection, description=description, tags=tags)


refresh_upstream = _job(
    "refresh_upstream",
    UPSTREAM_ASSETS,
    "Ingestion, embeddings of new images, PCA, visual clusters, catalogue and the "
    "train/test split. Nightly and on incoming data; what changes below follows by automation.",
)
sample_triplets = _job(
    "sample_triplets",
    ["triplets"],
    "Training and validation triples, one partition per sampling strategy.",
    heavy=False,  # numpy on one core: two partitions side by side use the machine
)
training_jobs = [
    _job(job, [asset], f"Train the {asset.replace('_', ' ')}, one partition per variant.")
    for job, asset in TRAINING_JOBS.items()
]
evaluate = _job(
    "evaluate",
    REPORT_ASSETS,
    "Table 2 on both protocols, Figure 3's sampling ablation, sample recommendations and the "
    "registry's champion (test-AUC rule).",
)

#: The whole graph, in the order `curatornet run` launches it (runs of one stage together).
STAGES: list[list] = [
    [refresh_upstream],
    [sample_triplets],
    training_jobs,
    [evaluate],
]
JOBS = [job for stage in STAGES for job in stage]


@dg.schedule(
    job=refresh_upstream,
    cron_schedule=settings.env("CURATORNET_NIGHTLY_CRON"),
    execution_timezone=settings.env("CURATORNET_TIMEZONE"),
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every night: refresh ingestion to split; models and reports whose inputs "
    "changed follow by automation.",
)
def nightly_retraining(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    when = context.scheduled_execution_time
    stamp = when.isoformat() if when else "manual"
    return dg.RunRequest(run_key=f"nightly-{stamp}", tags={TRIGGER_TAG: "schedule"})


automation_sensor = dg.AutomationConditionSensorDefinition(
    "downstream_automation",
    target=dg.AssetSelection.all(),
    run_tags={TRIGGER_TAG: "automation"},
    minimum_interval_seconds=int(settings.env("CURATORNET_AUTOMATION_INTERVAL")),
    description="Materializes triplets, models and reports whose inputs' data versions "
    "changed (ON_DATA_CHANGE), partition by partition.",
    default_status=(
        dg.DefaultSensorStatus.STOPPED
        if settings.env("CURATORNET_AUTOMATION") == "off"
        else dg.DefaultSensorStatus.RUNNING
    ),
)
