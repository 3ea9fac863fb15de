"""MLflow tracking: one MLflow run per asset materialization (and per partition).

A small ``ConfigurableResource`` over ``mlflow.MlflowClient`` instead of
``dagster-mlflow``, which opens one run per Dagster run, merges every asset's
metrics into it and leaves runs RUNNING without a job hook. Runs of one Dagster
run share the ``dagster.run_id`` tag, which the MLflow UI filters on.

Links both ways (docs/operations.md, "Links between the UIs") point at the home's stable
addresses (:func:`settings.mlflow_ui_address`, :func:`settings.dagster_ui_address`);
``curatornet ui`` on other ports answers those with a redirect, so every link written
earlier still opens its page. Each asset definition carries an ``mlflow_runs`` link
(:func:`definition_links`); each materialization records ``mlflow_run_id`` and a link to
its run. Each MLflow run's description links back to its Dagster run and asset page
(the partition's, for a partition; tag ``dagster.run_url``).
"""

import json
import logging
import os
import socket
import tempfile
import urllib.parse
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
TAG_RUN_URL = "dagster.run_url"
TAG_NOTE = "mlflow.note.content"  # the run's / experiment's description (markdown) in the UI
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"  # MLflow 3 UI: which view the experiment opens in
EXPERIMENT_KIND = "custom_model_development"  # the model-training view (runs, models)
EXPERIMENT_DESCRIPTION = (
    "One run per Dagster asset materialization (and partition) of the curatornet pipeline: "
    "params, metrics, figures and tables of each stage. Tags `dagster.run_id`, "
    "`dagster.asset_key`, `dagster.partition_key` say where a run came from; its description "
    "links back to the Dagster UI. Trained CuratorNets are registered as the model "
    "`curatornet` (alias `champion`, see the Models page)."
)


def run_link(ui_url: str, experiment_id: str, run_id: str) -> str:
    view = settings.MLFLOW_TRAINING_VIEW
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?{view}"


def _sqlite_experiment_id(uri: str, name: str) -> str | None:
    """The experiment id from a local SQLite store without importing mlflow (load time)."""
    import sqlite3

    path = uri[len("sqlite:///") :]
    if not Path(path).is_file():
        return None
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2) as db:
            row = db.execute(
                "SELECT experiment_id FROM experiments WHERE name = ? AND lifecycle_stage = "
                "'active'",
                (name,),
            ).fetchone()
    except sqlite3.Error:
        return None
    return str(row[0]) if row else None


def definition_links(asset_key: str, experiment_name: str = "curatornet") -> dict[str, Any]:
    """Definition metadata of an asset: a link to its MLflow runs (the experiment's id is
    read when the code location loads)."""
    ui, view = settings.mlflow_ui_address(), settings.MLFLOW_TRAINING_VIEW
    uri = settings.mlflow_tracking_uri()
    experiment = _sqlite_experiment_id(uri, experiment_name) if uri.startswith("sqlite:") else None
    if experiment is None:
        return {"mlflow_ui": dg.MetadataValue.url(f"{ui}/#/experiments?{view}")}
    search = urllib.parse.quote(f"tags.`{TAG_ASSET}` = '{asset_key}'")
    return {
        "mlflow_runs": dg.MetadataValue.url(
            f"{ui}/#/experiments/{experiment}/runs?searchFilter={search}&{view}"
        )
    }


def with_definition_links(assets: list) -> list:
    """``assets`` with :func:`definition_links` merged into each asset's definition metadata."""
    return list(
        dg.map_asset_specs(
            lambda spec: spec.merge_attributes(
                metadata=definition_links(spec.key.to_user_string())
            ),
            assets,
        )
    )


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
        return run_link(self.ui_url, self.experiment_id, self.run_id)

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
        """Where the metadata links point (see :func:`settings.mlflow_ui_address`)."""
        if self.ui_url:
            return self.ui_url
        uri = self.resolved_uri()
        if uri.startswith(("http://", "https://")) and not settings.env("CURATORNET_MLFLOW_UI"):
            return uri
        return settings.mlflow_ui_address()

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
                        self.experiment_name,
                        artifact_location=artifact_location,
                        tags={
                            TAG_EXPERIMENT_KIND: EXPERIMENT_KIND,
                            TAG_NOTE: EXPERIMENT_DESCRIPTION,
                        },
                    )
                    _hide_empty_default(client)
                else:
                    experiment_id = experiment.experiment_id
                    if TAG_EXPERIMENT_KIND not in experiment.tags:  # stores made before
                        client.set_experiment_tag(
                            experiment_id, TAG_EXPERIMENT_KIND, EXPERIMENT_KIND
                        )
                        client.set_experiment_tag(experiment_id, TAG_NOTE, EXPERIMENT_DESCRIPTION)
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
        dagster_ui = settings.dagster_ui_address()
        run_url = f"{dagster_ui}/runs/{context.run.run_id}"
        asset_url = f"{dagster_ui}/assets/{'/'.join(context.asset_key.path)}"
        if partition:  # the partition's own events
            asset_url += "?" + urllib.parse.urlencode({"view": "events", "partition": partition})
        where = f" partition `{partition}`" if partition else ""
        run_tags[TAG_RUN_URL] = run_url
        run_tags[TAG_NOTE] = (
            f"Materialization of the Dagster asset [{asset_key}]({asset_url}){where} "
            f"in Dagster run [{context.run.run_id[:8]}]({run_url}) "
            f"(job `{context.run.job_name}`)."
        )
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


def _hide_empty_default(client: Any) -> None:
    """Delete MLflow's "Default" experiment when it holds no run, so that ``curatornet``
    is the experiment the UI lists (it stays restorable in MLflow's trash)."""
    from mlflow.exceptions import MlflowException

    default = client.get_experiment_by_name("Default")
    if default is None or default.lifecycle_stage != "active":
        return
    if client.search_runs([default.experiment_id], max_results=1):
        return
    try:
        client.delete_experiment(default.experiment_id)
    except MlflowException as exc:  # some servers refuse: only the list gets longer
        logger.info("kept the Default experiment: %s", exc)
