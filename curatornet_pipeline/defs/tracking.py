"""MLflow tracking: one MLflow run per asset materialization (and per partition).

A small ``ConfigurableResource`` over ``mlflow.MlflowClient`` instead of
``dagster-mlflow``, which opens one run per Dagster run, merges every asset's
metrics into it and leaves runs RUNNING without a job hook. Runs of one Dagster
run share the ``dagster.run_id`` tag, which the MLflow UI filters on.
"""

import json
import logging
import os
import socket
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from curatornet_pipeline import settings
from curatornet_pipeline.locks import first_use

logger = logging.getLogger(__name__)

#: Tag names written on every run, used by lineage and the UI filters.
TAG_RUN_ID = "dagster.run_id"
TAG_ASSET = "dagster.asset_key"
TAG_PARTITION = "dagster.partition_key"
TAG_CODE_VERSION = "dagster.code_version"
TAG_DATA_VERSION = "dagster.data_version"
TAG_INPUT_PREFIX = "dagster.input."
TAG_HOST = "process.host"  # the machine and process that owns a RUNNING run (crash sweeps)
TAG_PID = "process.pid"


class TrackingError(RuntimeError):
    """The tracking store cannot be reached or written."""


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, prefix=f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            out[name] = text[:6000]
    return out


class TrackedRun:
    """The MLflow run of one asset materialization."""

    def __init__(self, client: Any, run_id: str, experiment_id: str, ui_url: str) -> None:
        self.client = client
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.ui_url = ui_url.rstrip("/")

    @property
    def url(self) -> str:
        return f"{self.ui_url}/#/experiments/{self.experiment_id}/runs/{self.run_id}"

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat = _flatten(params)
        items = [Param(k, v) for k, v in flat.items()]
        for start in range(0, len(items), 90):
            self.client.log_batch(self.run_id, params=items[start : start + 90])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(_metric_key(k), float(v), now, step or 0)
            for k, v in metrics.items()
            if v is not None
        ]
        for start in range(0, len(items), 900):
            self.client.log_batch(self.run_id, metrics=items[start : start + 900])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)[:5000]) for k, v in tags.items()]
        if items:
            self.client.log_batch(self.run_id, tags=items)

    def log_bytes(self, data: bytes, artifact_file: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(artifact_file).name
            path.write_bytes(data)
            parent = str(Path(artifact_file).parent)
            self.client.log_artifact(self.run_id, str(path), None if parent == "." else parent)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.log_bytes(text.encode(), artifact_file)

    def log_file(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)


def _metric_key(name: str) -> str:
    # MLflow keys allow alphanumerics, _ - . space / only.
    return "".join(c if c.isalnum() or c in "_-. /" else "_" for c in name)


class MlflowTracking(dg.ConfigurableResource):
    """Opens one MLflow run per asset materialization, tagged with its Dagster context."""

    tracking_uri: str = ""  # empty: MLFLOW_TRACKING_URI, else SQLite in the home folder
    experiment_name: str = "curatornet"
    ui_url: str = ""  # MLflow UI for links; empty: the tracking server, else `curatornet ui`'s

    _client: Any = PrivateAttr(default=None)
    _experiment_id: str = PrivateAttr(default="")

    def resolved_uri(self) -> str:
        return self.tracking_uri or settings.mlflow_tracking_uri()

    def resolved_ui_url(self) -> str:
        """Where the metadata links point: a tracking server serves its own UI."""
        if self.ui_url:
            return self.ui_url
        uri = self.resolved_uri()
        if uri.startswith(("http://", "https://")):
            return uri
        return os.environ.get("CURATORNET_MLFLOW_UI", "http://127.0.0.1:5000")

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Connect before any asset work starts, so an unreachable server fails fast."""
        self._connect()

    def _connect(self) -> None:
        if self._client is not None:
            return
        from mlflow import MlflowClient

        uri = self.resolved_uri()
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        try:
            with first_use("mlflow"):  # concurrent first runs: one migrates, the others wait
                client = MlflowClient(tracking_uri=uri, registry_uri=uri)
                experiment = client.get_experiment_by_name(self.experiment_name)
                if experiment is None:
                    artifact_location = None
                    if uri.startswith("sqlite:"):
                        artifact_location = Path(settings.mlflow_artifact_root()).as_uri()
                    experiment_id = client.create_experiment(
                        self.experiment_name, artifact_location=artifact_location
                    )
                else:
                    experiment_id = experiment.experiment_id
        except Exception as exc:  # any failure here means no tracking at all
            raise TrackingError(
                f"MLflow tracking store {uri!r} is not reachable: {exc}. "
                "Start the server, or unset MLFLOW_TRACKING_URI to use the local SQLite store."
            ) from exc
        self._client = client
        self._experiment_id = experiment_id

    @property
    def client(self) -> Any:
        self._connect()
        return self._client

    @property
    def experiment_id(self) -> str:
        self._connect()
        return self._experiment_id

    @contextmanager
    def run_for(
        self,
        context: dg.AssetExecutionContext,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> Iterator[TrackedRun]:
        """An MLflow run for the asset being materialized; always ends FINISHED or FAILED."""
        client = self.client
        asset_key = context.asset_key.to_user_string()
        partition = context.partition_key if context.has_partition_key else ""
        run_tags = {
            TAG_RUN_ID: context.run.run_id,
            TAG_ASSET: asset_key,
            TAG_PARTITION: partition,
            TAG_CODE_VERSION: context.assets_def.code_versions_by_key.get(context.asset_key) or "",
            "dagster.job_name": context.run.job_name,
            TAG_HOST: socket.gethostname(),
            TAG_PID: os.getpid(),
            "mlflow.runName": f"{asset_key}[{partition}]" if partition else asset_key,
            **(tags or {}),
        }
        run = client.create_run(self.experiment_id, tags={k: str(v) for k, v in run_tags.items()})
        tracked = TrackedRun(client, run.info.run_id, self.experiment_id, self.resolved_ui_url())
        try:
            if params:
                tracked.log_params(params)
            yield tracked
        except BaseException as exc:
            try:
                tracked.set_tags({"error": f"{type(exc).__name__}: {exc}"[:4000]})
            finally:
                client.set_terminated(tracked.run_id, "FAILED")
            raise
        else:
            client.set_terminated(tracked.run_id, "FINISHED")


def register_version(
    run: TrackedRun, name: str, artifact_path: str, metric: str, value: float
) -> tuple[str, bool]:
    """Register the run's model artifact as a new version of ``name``.

    The alias ``champion`` moves to the new version only when its ``metric``
    beats the current champion's (or there is none). Returns (version, promoted).
    """
    from mlflow.exceptions import MlflowException

    client = run.client
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description=f"{name} models trained by the pipeline")
    source = f"{client.get_run(run.run_id).info.artifact_uri}/{artifact_path}"
    version = client.create_model_version(
        name, source, run_id=run.run_id, tags={metric: str(value)}
    ).version
    try:
        champion = client.get_model_version_by_alias(name, "champion")
        best = float(champion.tags.get(metric, "-inf"))
    except MlflowException:
        best = float("-inf")
    promoted = value > best
    if promoted:
        client.set_registered_model_alias(name, "champion", version)
    run.set_tags(
        {"registered_model": name, "registered_version": version, "champion": str(promoted)}
    )
    return str(version), promoted
