"""Visual-feature assets in-process: unreadable images give the located error or a counted drop."""

import shutil
from pathlib import Path

import dagster as dg
import pytest

from curatornet_pipeline.definitions import build_resources, defs

pytestmark = pytest.mark.slow

CHAIN = ["inventory", "image_manifest", "item_embeddings", "pca_embeddings", "visual_clusters"]


def _run(data: Path, storage: Path, monkeypatch, **options) -> dg.ExecuteInProcessResult:
    monkeypatch.setenv("CURATORNET_STORAGE", str(storage))
    resources = build_resources(profile="tiny", data_root=str(data), **options)
    return dg.materialize(
        list(defs.assets),
        selection=[dg.AssetKey(k) for k in CHAIN],
        resources=resources,
        raise_on_error=False,
    )


def test_corrupt_image_error_then_counted_drop(tiny_data, mlflow_store, tmp_path, monkeypatch):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    victim = sorted((data / "images").iterdir())[3]
    victim.write_bytes(b"not a jpeg at all")

    failed = _run(data, tmp_path / "s1", monkeypatch)
    assert not failed.success
    error = failed.get_step_failure_events()[0].step_failure_data.error
    text = error.cause.message if error.cause else error.message
    assert victim.name in text and victim.stem in text

    dropped = _run(data, tmp_path / "s2", monkeypatch, on_unreadable_images="drop")
    assert dropped.success
    checks = {
        (e.asset_key.to_user_string(), e.check_name): e
        for e in dropped.get_asset_check_evaluations()
    }
    warn = checks[("item_embeddings", "no_dropped_images")]
    assert not warn.passed and warn.severity == dg.AssetCheckSeverity.WARN
    assert checks[("item_embeddings", "finite_vectors")].passed
    for name in ("silhouette_positive", "no_giant_cluster"):
        assert (("visual_clusters", name)) in checks
    vectors = dropped.output_for_node("item_embeddings")
    assert victim.stem not in set(vectors.ids)
    mat = dropped.asset_materializations_for_node("item_embeddings")[0]
    assert mat.metadata["dropped_unreadable_images"].value == 1
