"""Crash safety: checkpoints keyed by what a training depends on, and no MLflow run left RUNNING.

The checkpoint key hashes the input data versions, settings and code, so only a re-run
of the same training resumes. A dead training's MLflow run is ended as KILLED by the
run-failure sensor below or, without a daemon, by the next materialization of the same
partition (docs/architecture.md, "Crash safety").
"""

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import dagster as dg

from curatornet_pipeline.defs.tracking import (
    TAG_ASSET,
    TAG_HOST,
    TAG_PARTITION,
    TAG_PID,
    TAG_RUN_ID,
    MlflowTracking,
)

#: Dagster run states in which the process that owns an MLflow run may still be alive.
ALIVE = {
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
}


def checkpoint_key(upstream: Mapping[str, Mapping[str, Any]], config: dict, code: str) -> str:
    """16 hex digits naming (input data versions, settings, code version)."""
    document = {
        "inputs": {k: v.get("data_version", "") for k, v in sorted(upstream.items())},
        "config": config,
        "code": code,
    }
    text = json.dumps(document, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def checkpoint_epochs(path) -> int:
    """Epochs a training checkpoint (local path or fsspec ``UPath``) holds; 0 without one."""
    from upath import UPath

    from curatornet_pipeline.core.training.train import load_checkpoint

    state = load_checkpoint(UPath(path))
    return int(state["epoch"]) if state is not None else 0


def running_mlflow_runs(mlflow: MlflowTracking, filters: list[str]) -> list:
    query = " and ".join(["attributes.status = 'RUNNING'", *filters])
    return mlflow.client.search_runs([mlflow.experiment_id], filter_string=query, max_results=200)


def end_runs(mlflow: MlflowTracking, runs: list, reason: str) -> list[str]:
    ended = []
    for run in runs:
        mlflow.client.set_tag(run.info.run_id, "killed_reason", reason[:4000])
        mlflow.client.set_terminated(run.info.run_id, "KILLED")
        ended.append(run.info.run_id)
    return ended


def _process_gone(tags: Mapping[str, str]) -> bool:
    """Whether the run's owning process was on this machine and no longer exists."""
    import socket

    from curatornet_pipeline.daemon import _alive

    if tags.get(TAG_HOST) != socket.gethostname() or not tags.get(TAG_PID, "").isdigit():
        return False  # another machine: its Dagster run status (run monitoring) decides
    return not _alive(int(tags[TAG_PID]))


def end_orphaned_mlflow_runs(
    mlflow: MlflowTracking, context: dg.AssetExecutionContext
) -> list[str]:
    """End as KILLED the RUNNING MLflow runs of this asset partition whose Dagster run is over."""
    partition = context.partition_key if context.has_partition_key else ""
    filters = [
        f"tags.`{TAG_ASSET}` = '{context.asset_key.to_user_string()}'",
        f"tags.`{TAG_PARTITION}` = '{partition}'",
    ]
    orphans = []
    for run in running_mlflow_runs(mlflow, filters):
        owner = run.data.tags.get(TAG_RUN_ID, "")
        if owner == context.run.run_id:
            continue
        record = context.instance.get_run_by_id(owner) if owner else None
        if record is None or record.status not in ALIVE or _process_gone(run.data.tags):
            orphans.append(run)
    ended = end_runs(mlflow, orphans, "its Dagster run ended without closing it (process died)")
    if ended:
        context.log.warning(f"ended {len(ended)} orphaned MLflow run(s) as KILLED: {ended}")
    return ended


@dg.run_failure_sensor(
    name="end_mlflow_runs_of_failed_runs",
    default_status=dg.DefaultSensorStatus.RUNNING,
    monitor_all_code_locations=False,
    description="When a Dagster run fails (run monitoring marks dead workers failed), end its "
    "MLflow runs still RUNNING as KILLED.",
)
def end_mlflow_runs_of_failed_runs(context: dg.RunFailureSensorContext, mlflow: MlflowTracking):
    run_id = context.dagster_run.run_id
    ended = end_runs(
        mlflow,
        running_mlflow_runs(mlflow, [f"tags.`{TAG_RUN_ID}` = '{run_id}'"]),
        f"Dagster run {run_id} failed: {context.failure_event.message or ''}",
    )
    if ended:
        context.log.info(f"ended MLflow runs {ended} of failed Dagster run {run_id}")
