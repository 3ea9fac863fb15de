"""Incoming batches in Dagster: the sensor only detects; the intake asset applies, in a run."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from curatornet_pipeline.core.data import formats as data
from curatornet_pipeline.defs import intake
from curatornet_pipeline.defs.assets import ingest
from curatornet_pipeline.defs.io_managers import io_managers
from curatornet_pipeline.defs.resources import DatasetResource
from curatornet_pipeline.defs.tracking import MlflowTracking
from tests.test_incoming_batches import dataset_files, make_batch, snapshot

ASSETS = [intake.applied_batches, ingest.inventory, ingest.purchases, ingest.image_manifest]


@pytest.fixture
def dataset(tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "data"
    shutil.copytree(tiny_data, root)
    (root / "incoming").mkdir()
    monkeypatch.delenv("CURATORNET_INCOMING", raising=False)
    monkeypatch.setenv("CURATORNET_DATA", str(root))
    return root


def evaluate_sensor(root: Path, instance: dg.DagsterInstance) -> list[dg.RunRequest] | str:
    context = dg.build_sensor_context(
        instance=instance, resources={"dataset": DatasetResource(root=str(root))}
    )
    data_ = intake.incoming_batches.evaluate_tick(context)
    return data_.run_requests or data_.skip_message


def refresh(root: Path, storage: Path, run_config: dict | None = None) -> dg.ExecuteInProcessResult:
    """The intake asset and the ingestion assets, as the intake job runs them."""
    resources = {
        **io_managers(str(storage)),
        "dataset": DatasetResource(root=str(root)),
        "mlflow": MlflowTracking(),
    }
    return dg.materialize(ASSETS, resources=resources, run_config=run_config, raise_on_error=False)


def materialization(result: dg.ExecuteInProcessResult, name: str) -> dict:
    event = result.asset_materializations_for_node(name)[0]
    return {k: v.value for k, v in event.metadata.items()}


def test_sensor_evaluation_reads_only_and_carries_the_batch(dataset: Path) -> None:
    make_batch(dataset, "b1", items=["new01"], purchases=[("u", ["new01"])])
    make_batch(dataset, "copying", items=["new02"], ready=False)  # no READY, just written
    before = snapshot(dataset)
    with dg.instance_for_test() as instance:
        requests = evaluate_sensor(dataset, instance)
        again = evaluate_sensor(dataset, instance)
    assert snapshot(dataset) == before  # byte-identical, nothing moved or appended
    assert [r.tags[intake.TAG_BATCH] for r in requests] == ["b1"]
    (request,) = requests
    digest = request.tags[intake.TAG_HASH]
    assert len(digest) == 64 and request.run_key.startswith(f"batch-{digest[:16]}-")
    assert request.run_config["ops"]["applied_batches"]["config"] == {
        "batch": "b1",
        "content_hash": digest,
    }
    assert [r.run_key for r in again] == [request.run_key]  # same arrival, same run key


def test_sensor_skips_when_nothing_is_ready(dataset: Path) -> None:
    with dg.instance_for_test() as instance:
        assert "nothing new" in evaluate_sensor(dataset, instance)
        make_batch(dataset, "w", items=["n1"], images=[], ready=False)
        message = evaluate_sensor(dataset, instance)
    assert "still arriving" in message


def test_batch_applied_in_a_run_then_resent_batch_skipped_and_reported(
    dataset: Path, mlflow_store, tmp_path: Path
) -> None:
    make_batch(dataset, "b1", items=["new01"], purchases=[("u-new", ["new01"])])
    with dg.instance_for_test() as instance:
        (request,) = evaluate_sensor(dataset, instance)
    result = refresh(dataset, tmp_path / "s1", request.run_config)
    assert result.success
    meta = materialization(result, "applied_batches")
    assert meta["outcome"] == "applied" and meta["new_items"] == 1
    assert "new01" in set(result.output_for_node("inventory")["artwork_id_hash"])
    assert "u-new" in set(result.output_for_node("purchases")["user_id_hash"])
    purchases_after = (dataset / "purchases.csv").read_bytes()

    make_batch(dataset, "b1", items=["new01"], purchases=[("u-new", ["new01"])])  # re-sent
    with dg.instance_for_test() as instance:
        (request2,) = evaluate_sensor(dataset, instance)
    assert request2.tags[intake.TAG_HASH] == request.tags[intake.TAG_HASH]
    resent = refresh(dataset, tmp_path / "s2", request2.run_config)
    assert resent.success
    meta = materialization(resent, "applied_batches")
    assert meta["outcome"] == "skipped" and meta["entry"] == meta["history_entries"][-1]["id"]
    assert sorted(meta["skipped_files"]) == sorted(
        ["inventory-b1.csv", "purchases-b1.csv", "images/new01.jpg"]
    )
    (check,) = [
        c for c in resent.get_asset_check_evaluations() if c.check_name == "no_resent_files"
    ]
    assert not check.passed
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert (dataset / "purchases.csv").read_bytes() == purchases_after


def test_batch_missing_an_image_fails_its_run_and_the_next_refresh_succeeds(
    dataset: Path, mlflow_store, tmp_path: Path
) -> None:
    before = dataset_files(dataset)
    make_batch(dataset, "b1", items=["new01", "new02"], images=["new01"])
    with dg.instance_for_test() as instance:
        (request,) = evaluate_sensor(dataset, instance)
    failed = refresh(dataset, tmp_path / "s1", request.run_config)
    assert not failed.success
    error = failed.get_step_failure_events()[0].step_failure_data.error
    assert "rejected whole" in error.message
    assert "inventory-b1.csv, line 3, field 'artwork_id_hash'" in error.message
    assert dataset_files(dataset) == before
    rejected = list((dataset / "incoming" / "rejected").glob("*.error.txt"))
    assert len(rejected) == 1 and "new02" in rejected[0].read_text()

    nightly = refresh(dataset, tmp_path / "s2")  # no batch configured: a plain refresh
    assert nightly.success
    assert materialization(nightly, "applied_batches")["outcome"] == "nothing to apply"
    inventory = nightly.output_for_node("inventory")
    assert len(inventory) == len(data.read_inventory(dataset / "inventory.csv"))
    assert all(c.passed for c in nightly.get_asset_check_evaluations())


def test_sensor_runs_refresh_ingestion_to_the_split(dataset: Path) -> None:
    from curatornet_pipeline.definitions import defs

    make_batch(dataset, "b1", items=["new01"])
    with dg.instance_for_test() as instance:
        (request,) = evaluate_sensor(dataset, instance)
    job = defs.resolve_job_def("refresh_upstream")
    assert dg.validate_run_config(job, request.run_config)  # the request fits the real job

    assert intake.incoming_batches.job_name == "refresh_upstream"
    selected = {k.to_user_string() for k in job.asset_layer.executable_asset_keys}
    assert {"applied_batches", "inventory", "purchases", "train_test_split"} <= selected
    assert not selected & {"triplets", "curatornet_models", "evaluation_report"}
    graph = defs.resolve_asset_graph()
    assert dg.AssetKey("applied_batches") in graph.get(dg.AssetKey("inventory")).parent_keys
    assert "incoming_batches" in {s.name for s in defs.sensors}


@pytest.mark.slow
def test_dagster_sensor_preview_leaves_the_data_folder_byte_identical(
    dataset: Path, curatornet_home: Path
) -> None:
    make_batch(dataset, "b1", items=["new01"], purchases=[("u", ["new01"])])
    (dataset / "incoming" / "purchases-loose.csv").write_text(
        "user_id_hash,purchased_artwork_ids_hash,purchase_timestamp\n"
        f"""x,"['{data.read_inventory(dataset / "inventory.csv")["artwork_id_hash"].iloc[0]}']",1\n"""
    )
    os.utime(dataset / "incoming" / "purchases-loose.csv", (0, 0))  # quiet for long: ready
    before = snapshot(dataset)
    env = {**os.environ, "CURATORNET_DATA": str(dataset), "DAGSTER_HOME": str(curatornet_home)}
    env.pop("CURATORNET_INCOMING", None)
    Path(env["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    dagster = Path(sys.executable).with_name("dagster")
    proc = subprocess.run(
        [
            str(dagster),
            "sensor",
            "preview",
            "incoming_batches",
            "-m",
            "curatornet_pipeline.definitions",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "run requests for 2 run(s)" in proc.stdout, proc.stdout
    assert "batch: b1" in proc.stdout and "batch: ." in proc.stdout
    assert snapshot(dataset) == before
