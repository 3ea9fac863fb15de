"""Ingestion assets in-process: typed tables, checks that pass on good data and fail on bad."""

import shutil
from pathlib import Path

import dagster as dg
import pytest

from curatornet_pipeline.core.data import vectors as vectors_core
from curatornet_pipeline.defs.assets import ingest
from curatornet_pipeline.defs.io_managers import io_managers
from curatornet_pipeline.defs.resources import DatasetResource
from curatornet_pipeline.defs.tracking import TAG_ASSET, TAG_RUN_ID, MlflowTracking

ASSETS = [ingest.inventory, ingest.purchases, ingest.image_manifest]


def _run(data: Path, storage: Path, **options) -> dg.ExecuteInProcessResult:
    resources = {
        **io_managers(str(storage)),
        "dataset": DatasetResource(root=str(data), **options),
        "mlflow": MlflowTracking(),
    }
    return dg.materialize(ASSETS, resources=resources, raise_on_error=False)


def _checks(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    return {
        (e.asset_key.to_user_string(), e.check_name): e
        for e in result.get_asset_check_evaluations()
    }


@pytest.fixture
def data_copy(tiny_data: Path, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    return data


def test_good_data_materializes_with_passing_checks(tiny_data, mlflow_store, tmp_path) -> None:
    result = _run(tiny_data, tmp_path / "storage")
    assert result.success
    checks = _checks(result)
    assert len(checks) == 2 and all(c.passed for c in checks.values())
    inventory = result.output_for_node("inventory")
    purchases = result.output_for_node("purchases")
    manifest = result.output_for_node("image_manifest")
    assert str(inventory["upload_timestamp"].dtype) == "int64"
    assert set(purchases["artwork_id_hash"]) <= set(inventory["artwork_id_hash"])
    assert len(manifest) == len(inventory) and manifest["content_hash"].str.len().eq(64).all()
    mat = result.asset_materializations_for_node("purchases")[0]
    assert mat.metadata["users"].value == purchases["user_id_hash"].nunique()
    assert (tmp_path / "storage" / "tables" / "purchases.parquet").exists()
    tracking = MlflowTracking()
    runs = tracking.client.search_runs(
        [tracking.experiment_id], filter_string=f"tags.`{TAG_RUN_ID}` = '{result.run_id}'"
    )
    assert sorted(r.data.tags[TAG_ASSET] for r in runs) == [
        "image_manifest",
        "inventory",
        "purchases",
    ]
    assert all(r.info.status == "FINISHED" for r in runs)


def _add_unknown_purchase(data: Path) -> None:
    with (data / "purchases.csv").open("a") as f:
        f.write("ghost-user,\"['no-such-artwork']\",1700000000\n")


def test_unknown_items_fail_by_default(data_copy, mlflow_store, tmp_path) -> None:
    _add_unknown_purchase(data_copy)
    result = _run(data_copy, tmp_path / "storage")
    assert not result.success
    error = result.get_step_failure_events()[0].step_failure_data.error
    text = error.cause.message if error.cause else error.message
    assert "purchases.csv" in text and "no-such-artwork" in text and "line" in text


def test_dropped_unknown_items_are_counted_and_warned(data_copy, mlflow_store, tmp_path) -> None:
    _add_unknown_purchase(data_copy)
    result = _run(data_copy, tmp_path / "storage", on_unknown_items="drop")
    assert result.success
    check = _checks(result)[("purchases", "no_dropped_rows")]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    mat = result.asset_materializations_for_node("purchases")[0]
    assert mat.metadata["dropped_unknown_items"].value == 1
    assert "ghost-user" not in set(result.output_for_node("purchases")["user_id_hash"])


def test_missing_image_error_or_counted_drop(data_copy, mlflow_store, tmp_path) -> None:
    victim = sorted((data_copy / "images").iterdir())[0]
    victim.unlink()
    failed = _run(data_copy, tmp_path / "s1")
    assert not failed.success
    error = failed.get_step_failure_events()[0].step_failure_data.error
    text = error.cause.message if error.cause else error.message
    assert "inventory.csv" in text and victim.stem in text

    dropped = _run(data_copy, tmp_path / "s2", on_missing_images="drop")
    assert dropped.success
    check = _checks(dropped)[("image_manifest", "every_item_has_an_image")]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    mat = dropped.asset_materializations_for_node("image_manifest")[0]
    assert mat.metadata["dropped_missing_images"].value == 1


def test_item_without_imported_vector_error_then_counted_drop(
    data_copy, mlflow_store, tmp_path, monkeypatch
) -> None:
    """Imported embeddings: a missing vector stops the run by default, or is a WARN-checked drop."""
    import numpy as np

    from curatornet_pipeline.core.data import formats as data_core
    from curatornet_pipeline.definitions import build_resources
    from curatornet_pipeline.defs.assets import visual

    inventory = data_core.read_inventory(data_copy / "inventory.csv")
    missing = inventory["artwork_id_hash"].iloc[4]
    line = int(inventory["line"].iloc[4])
    array = np.empty((len(inventory) - 1, 2), dtype=object)
    kept = [i for i in inventory["artwork_id_hash"] if i != missing]
    for row, artwork in enumerate(kept):
        array[row, 0], array[row, 1] = artwork, np.full(8, row, dtype=np.float32)
    np.save(tmp_path / "resnet_embeddings.npy", array, allow_pickle=True)
    shutil.rmtree(data_copy / "images")
    vectors_core.import_embeddings(tmp_path / "resnet_embeddings.npy", data_copy / "embeddings.npz")
    monkeypatch.setenv("CURATORNET_STORAGE", str(tmp_path / "storage"))

    def run(**options):
        return dg.materialize(
            [*ASSETS, visual.item_embeddings],
            selection=["inventory", "image_manifest", "item_embeddings"],
            resources=build_resources(profile="tiny", data_root=str(data_copy), **options),
            raise_on_error=False,
        )

    failed = run()
    assert not failed.success
    error = failed.get_step_failure_events()[0].step_failure_data.error
    text = error.cause.message if error.cause else error.message
    assert f"inventory.csv, line {line}, field 'artwork_id_hash'" in text
    assert repr(missing) in text

    dropped = run(on_missing_vectors="drop")
    assert dropped.success
    warn = _checks(dropped)[("item_embeddings", "no_missing_vectors")]
    assert not warn.passed and warn.severity == dg.AssetCheckSeverity.WARN
    assert warn.metadata["dropped_missing_vectors"].value == 1
    mat = dropped.asset_materializations_for_node("item_embeddings")[0]
    assert mat.metadata["dropped_missing_vectors"].value == 1
    assert mat.metadata["items"].value == len(inventory) - 1
    assert missing not in set(dropped.output_for_node("item_embeddings").ids)
    # imported vectors are described by their file and hash, never as (random) backbone weights
    weights = mat.metadata["weights"].value
    assert weights.startswith("imported:") and "sha256:" in weights and "RANDOM" not in weights
    run_id = mat.metadata["mlflow_run_id"].value
    params = MlflowTracking().client.get_run(run_id).data.params
    assert params["source"] == "imported" and params["imported_sha256"] != "unknown"
    assert "backbone" not in params and params.get("weights") == weights
