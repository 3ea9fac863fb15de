"""The MLflow resource: one run per materialization, tagged, never left RUNNING."""

import dagster as dg
import pytest

from curatornet_pipeline.defs.common import finish
from curatornet_pipeline.defs.tracking import (
    TAG_ASSET,
    TAG_DATA_VERSION,
    TAG_EXPERIMENT_KIND,
    TAG_NOTE,
    TAG_PARTITION,
    TAG_RUN_ID,
    TAG_RUN_URL,
    MlflowTracking,
    TrackingError,
    definition_links,
    with_definition_links,
)

PARTS = dg.StaticPartitionsDefinition(["a", "b"])


@dg.asset
def numbers(context: dg.AssetExecutionContext, mlflow: MlflowTracking) -> dg.MaterializeResult:
    with mlflow.run_for(context, params={"n": 3, "nested": {"k": 1}}) as run:
        return finish(context, run, [1, 2, 3], metadata={"count": 3})


@dg.asset(partitions_def=PARTS)
def per_part(context: dg.AssetExecutionContext, mlflow: MlflowTracking) -> dg.MaterializeResult:
    with mlflow.run_for(context) as run:
        return finish(context, run, context.partition_key, metadata={"size": 1})


@dg.asset
def broken(context: dg.AssetExecutionContext, mlflow: MlflowTracking) -> None:
    with mlflow.run_for(context):
        raise ValueError("inputs.csv, line 3, field 'x': boom")


def _runs(client, experiment_id: str, dagster_run_id: str):
    return client.search_runs(
        [experiment_id], filter_string=f"tags.`{TAG_RUN_ID}` = '{dagster_run_id}'"
    )


def test_one_finished_run_per_materialization(mlflow_store: str, tmp_path) -> None:
    tracking = MlflowTracking()
    resources = {"mlflow": tracking, "io_manager": dg.FilesystemIOManager(base_dir=str(tmp_path))}
    result = dg.materialize([numbers], resources=resources)
    runs = _runs(tracking.client, tracking.experiment_id, result.run_id)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags[TAG_ASSET] == "numbers"
    assert run.data.tags[TAG_PARTITION] == ""
    assert run.data.params["n"] == "3" and run.data.params["nested.k"] == "1"
    assert run.data.metrics["count"] == 3.0
    mat = result.asset_materializations_for_node("numbers")[0]
    assert mat.metadata["mlflow_run_id"].value == run.info.run_id
    assert run.data.tags[TAG_DATA_VERSION] == mat.tags["dagster/data_version"]


def test_partitions_get_their_own_runs(mlflow_store: str, tmp_path) -> None:
    tracking = MlflowTracking()
    resources = {"mlflow": tracking, "io_manager": dg.FilesystemIOManager(base_dir=str(tmp_path))}
    instance = dg.DagsterInstance.ephemeral()
    seen = []
    for key in PARTS.get_partition_keys():
        result = dg.materialize(
            [per_part], partition_key=key, resources=resources, instance=instance
        )
        runs = _runs(tracking.client, tracking.experiment_id, result.run_id)
        assert [r.data.tags[TAG_PARTITION] for r in runs] == [key]
        seen.append(runs[0].info.status)
    assert seen == ["FINISHED", "FINISHED"]


def test_failing_asset_leaves_a_failed_run(mlflow_store: str, tmp_path) -> None:
    tracking = MlflowTracking()
    resources = {"mlflow": tracking, "io_manager": dg.FilesystemIOManager(base_dir=str(tmp_path))}
    result = dg.materialize([broken], resources=resources, raise_on_error=False)
    assert not result.success
    runs = _runs(tracking.client, tracking.experiment_id, result.run_id)
    assert len(runs) == 1
    assert runs[0].info.status == "FAILED"
    assert "line 3" in runs[0].data.tags["error"]


def test_unreachable_server_fails_at_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    tracking = MlflowTracking(tracking_uri="http://127.0.0.1:9")
    with pytest.raises(TrackingError, match="not reachable"):
        tracking.client  # noqa: B018


def test_unreachable_server_fails_before_the_asset_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    ran = []

    @dg.asset
    def expensive(context: dg.AssetExecutionContext, mlflow: MlflowTracking) -> int:
        ran.append(True)
        return 1

    result = dg.materialize(
        [expensive],
        resources={
            "mlflow": MlflowTracking(tracking_uri="http://127.0.0.1:9"),
            "io_manager": dg.FilesystemIOManager(base_dir=str(tmp_path)),
        },
        raise_on_error=False,
    )
    assert not result.success
    assert ran == []
    errors = [
        e.event_specific_data.error
        for e in result.all_events
        if e.is_failure
        and e.event_specific_data is not None
        and getattr(e.event_specific_data, "error", None)
    ]
    assert any(
        "not reachable" in (err.cause.message if err.cause else err.message) for err in errors
    )


def test_runs_link_back_to_dagster(
    mlflow_store: str, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CURATORNET_DAGSTER_UI", "http://127.0.0.1:3900")
    tracking = MlflowTracking()
    resources = {"mlflow": tracking, "io_manager": dg.FilesystemIOManager(base_dir=str(tmp_path))}
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([per_part], partition_key="b", resources=resources, instance=instance)
    (run,) = _runs(tracking.client, tracking.experiment_id, result.run_id)
    run_url = f"http://127.0.0.1:3900/runs/{result.run_id}"
    assert run.data.tags[TAG_RUN_URL] == run_url
    note = run.data.tags[TAG_NOTE]
    assert f"({run_url})" in note
    # the asset link opens the partition's own events
    assert "[per_part](http://127.0.0.1:3900/assets/per_part?view=events&partition=b)" in note
    assert "partition `b`" in note


def test_mlflow_links_follow_the_deployment_address(
    mlflow_store: str, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The definition link is computed at load: a new port needs no re-materialization."""
    tracking = MlflowTracking()
    experiment = tracking.experiment_id
    for port in (5000, 5500):
        monkeypatch.setenv("CURATORNET_MLFLOW_UI", f"http://127.0.0.1:{port}")
        url = definition_links("numbers")["mlflow_runs"].value
        assert url.startswith(f"http://127.0.0.1:{port}/#/experiments/{experiment}/runs?")
        assert "numbers" in url and "workflowType=machine_learning" in url
        # and so does every asset of the code location, once loaded
        (spec,) = [s for a in with_definition_links([numbers]) for s in a.specs]
        assert spec.metadata["mlflow_runs"].value == url
    resources = {
        "mlflow": MlflowTracking(),
        "io_manager": dg.FilesystemIOManager(base_dir=str(tmp_path)),
    }
    result = dg.materialize([numbers], resources=resources)
    mat = result.asset_materializations_for_node("numbers")[0]
    assert mat.metadata["mlflow_run"].value.startswith("http://127.0.0.1:5500/#/experiments/")


def test_new_store_opens_in_the_model_training_view(tmp_path) -> None:
    """A fresh store: `curatornet` is the only visible experiment, of the training kind."""
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    tracking = MlflowTracking(tracking_uri=uri)
    client = tracking.client
    visible = [e.name for e in client.search_experiments()]
    assert visible == ["curatornet"]
    experiment = client.get_experiment(tracking.experiment_id)
    assert experiment.tags[TAG_EXPERIMENT_KIND] == "custom_model_development"
    assert "Dagster" in experiment.tags[TAG_NOTE]
    # reopening the store keeps it so
    again = MlflowTracking(tracking_uri=uri)
    assert again.experiment_id == tracking.experiment_id
    assert [e.name for e in again.client.search_experiments()] == ["curatornet"]
