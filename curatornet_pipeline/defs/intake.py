"""Incoming batches in Dagster: a sensor that only detects, an asset that applies.

The ``incoming_batches`` sensor only reads (``dagster sensor preview`` changes nothing)
and requests a ``refresh_upstream`` run per ready batch; in it ``applied_batches``
validates and applies the batch, so that shows in the UI and leaves lineage
(docs/operations.md, "Nightly retraining and new files").
"""

from pathlib import Path

import dagster as dg

from curatornet_pipeline import settings
from curatornet_pipeline.core.data import batches as batches_core
from curatornet_pipeline.core.data import history as history_core
from curatornet_pipeline.core.data import incoming as incoming_core
from curatornet_pipeline.defs.automation import TRIGGER_TAG, refresh_upstream
from curatornet_pipeline.defs.common import check, finish
from curatornet_pipeline.defs.resources import DatasetResource
from curatornet_pipeline.defs.tracking import MlflowTracking
from curatornet_pipeline.defs.versioning import source_hash

GROUP = "ingestion"
TAG_BATCH = "curatornet/batch"
TAG_HASH = "curatornet/batch_sha256"


def incoming_dir(dataset: DatasetResource) -> Path:
    """``CURATORNET_INCOMING``, else ``<data>/incoming``."""
    return Path(settings.env("CURATORNET_INCOMING") or dataset.paths().root / "incoming")


class IntakeConfig(dg.Config):
    """The batch a run applies (set by the sensor; empty in nightly runs: nothing to apply)."""

    batch: str = ""  # folder name under incoming/, "." for loose files
    content_hash: str = ""  # sha256 of the batch as detected; a batch changed since is left


@dg.asset(
    group_name=GROUP,
    code_version=source_hash(batches_core, history_core, incoming_core, IntakeConfig),
    check_specs=[
        dg.AssetCheckSpec(
            "no_resent_files",
            asset="applied_batches",
            description="WARN when files of the run's batch had been applied before (skipped).",
        )
    ],
    description="History of applied incoming batches (data/batches/); applies the run's batch.",
)
def applied_batches(
    context: dg.AssetExecutionContext,
    config: IntakeConfig,
    dataset: DatasetResource,
    mlflow: MlflowTracking,
) -> dg.MaterializeResult:
    with mlflow.run_for(context, params=config.model_dump()) as run:
        return _intake(context, config, dataset, run)


def _intake(context, config: IntakeConfig, dataset: DatasetResource, run) -> dg.MaterializeResult:
    paths = dataset.paths()
    history = history_core.History(paths)
    outcome = None
    if config.batch:
        folder = incoming_dir(dataset)
        batch = incoming_core.read_batch(folder, config.batch)
        if batch is None:
            context.log.warning(f"batch {config.batch!r} is no longer in {folder}")
        elif config.content_hash and batch.content_hash != config.content_hash:
            context.log.warning(
                f"batch {config.batch!r} changed since it was detected; the sensor will see it again"
            )
        else:
            outcome = batches_core.apply_batch(batch, paths, folder)
    if outcome is not None and outcome.status == "rejected":
        raise dg.Failure(
            description=f"batch {outcome.batch!r} rejected whole: {outcome.error}",
            metadata={"moved_to": outcome.moved_to or "", "error": outcome.error or ""},
        )
    rows = history.describe()
    skipped = list(outcome.report.get("skipped", [])) if outcome else []
    metadata = {
        "outcome": outcome.status if outcome else "nothing to apply",
        "batch": config.batch,
        "batches_in_force": sum(r["status"] == "applied" for r in rows),
        "history": dg.MetadataValue.path(str(history.folder)),
        "history_entries": dg.MetadataValue.json(rows[-20:]),
    }
    if outcome is not None:
        metadata.update(
            {
                "entry": outcome.entry or "",
                "new_items": int(outcome.report.get("new_items", 0)),
                "new_purchase_rows": int(outcome.report.get("new_purchase_rows", 0)),
                "new_images": int(outcome.report.get("new_images", 0)),
                "skipped_files": dg.MetadataValue.json(skipped),
                "moved_to": outcome.moved_to or "",
            }
        )
        if skipped:
            context.log.warning(f"skipped, applied before: {skipped} ({outcome.entry})")
    return finish(
        context,
        run,
        None,
        version_of=history.state(),
        metadata=metadata,
        checks=[
            check(
                "no_resent_files", not skipped, "WARN", skipped_files=dg.MetadataValue.json(skipped)
            )
        ],
    )


def _request(batch: incoming_core.Batch) -> dg.RunRequest:
    return dg.RunRequest(
        # content hash + arrival time: one run per arrival; a re-sent batch gets its own
        # run, in which the history finds the content applied and reports it skipped
        run_key=f"batch-{batch.content_hash[:16]}-{batch.changed_ns}",
        run_config={
            "ops": {
                "applied_batches": {
                    "config": {"batch": batch.name, "content_hash": batch.content_hash}
                }
            }
        },
        tags={
            TRIGGER_TAG: "sensor",
            TAG_BATCH: batch.name,
            TAG_HASH: batch.content_hash,
        },
    )


@dg.sensor(
    job=refresh_upstream,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Detects ready batches in incoming/ (reads only) and launches refresh_upstream "
    "with the batch in its config; applied_batches applies it.",
)
def incoming_batches(context: dg.SensorEvaluationContext, dataset: DatasetResource):
    """Request a run per ready batch in incoming/; reads only."""
    folder = incoming_dir(dataset)
    settle = settings.env_seconds("CURATORNET_INCOMING_SETTLE_S", incoming_core.SETTLE_S)
    grace = settings.env_seconds("CURATORNET_INCOMING_GRACE_S", incoming_core.GRACE_S)
    requests, waiting = [], []
    for batch in incoming_core.find_batches(folder):
        if not batch.ready(settle):
            waiting.append(f"{batch.name}: still arriving (no {incoming_core.MARKER} file)")
            continue
        if not batch.marked and batch.quiet_s() < grace:
            missing = incoming_core.waiting_for_images(batch, dataset.paths())
            if missing:
                waiting.append(f"{batch.name}: waiting for images of {missing[:5]}")
                continue
        requests.append(_request(batch))
    for line in waiting:
        context.log.info(line)
    if not requests:
        detail = "; ".join(waiting) if waiting else "nothing new"
        return dg.SkipReason(f"{folder}: {detail}")
    return requests


ASSETS = [applied_batches]
ASSET_CHECKS: list = []  # applied_batches' check is part of the asset (check_specs)
JOBS: list = []  # the sensor launches automation.refresh_upstream, which holds applied_batches
SENSORS = [incoming_batches]
