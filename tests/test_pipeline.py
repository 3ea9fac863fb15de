"""The whole asset graph on the tiny synthetic dataset, in-process, with a real MLflow store.

One module fixture materializes everything once (about a minute on 2 cores);
the tests then read what it left: checks, MLflow runs, files, data versions,
lineage.
"""

import os
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from curatornet_pipeline.core.types import STRATEGIES
from curatornet_pipeline.definitions import build_resources, defs
from curatornet_pipeline.defs.tracking import (
    TAG_ASSET,
    TAG_DATA_VERSION,
    TAG_PARTITION,
    TAG_RUN_ID,
    MlflowTracking,
)
from curatornet_pipeline.lineage import explain, trace
from tests.graph_support import materialize_graph

pytestmark = pytest.mark.slow

PNG = b"\x89PNG\r\n\x1a\n"


class Pipeline:
    def __init__(self, storage: Path, data: Path, instance: dg.DagsterInstance, results: list):
        self.storage, self.data, self.instance, self.results = storage, data, instance, results

    def resources(self, **overrides) -> dict:
        os.environ["CURATORNET_STORAGE"] = str(self.storage)
        return build_resources(profile="tiny", data_root=str(self.data), overrides=overrides)

    def materialize(self, keys: list[str], partition: str | None = None, **overrides):
        return dg.materialize(
            list(defs.assets) + list(defs.asset_checks or []),
            selection=[dg.AssetKey(k) for k in keys],
            partition_key=partition,
            resources=self.resources(**overrides),
            instance=self.instance,
        )

    def version(self, asset: str, partition: str | None = None) -> str:
        records = self.instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=dg.AssetKey(asset), asset_partitions=[partition] if partition else None
            ),
            limit=1,
        ).records
        return records[0].asset_materialization.tags["dagster/data_version"]


@pytest.fixture(scope="module")
def pipeline(tiny_data: Path, mlflow_store: str, tmp_path_factory) -> Pipeline:
    storage = tmp_path_factory.mktemp("storage")
    previous = os.environ.get("CURATORNET_STORAGE")
    os.environ["CURATORNET_STORAGE"] = str(storage)
    instance = dg.DagsterInstance.ephemeral()
    p = Pipeline(storage, tiny_data, instance, [])
    p.results = materialize_graph(instance, p.resources())
    yield p
    if previous is None:
        os.environ.pop("CURATORNET_STORAGE", None)
    else:
        os.environ["CURATORNET_STORAGE"] = previous


def test_every_step_succeeds_and_every_check_passes(pipeline: Pipeline) -> None:
    # refresh, 7 triplet partitions, 2 + 1 + 2 model partitions (tiny grid), evaluate
    assert len(pipeline.results) == 1 + 7 + 5 + 1
    assert all(r.success for r in pipeline.results)
    evaluations = [e for r in pipeline.results for e in r.get_asset_check_evaluations()]
    names = {(e.asset_key.to_user_string(), e.check_name) for e in evaluations}
    for expected in [
        ("item_embeddings", "finite_vectors"),
        ("visual_clusters", "silhouette_positive"),
        ("triplets", "no_hidden_basket_items"),
        ("triplets", "no_validation_basket_items"),
        ("triplets", "strategy_invariants"),
        ("curatornet_models", "weights_finite"),
        ("evaluation_report", "oracle_is_perfect"),
        ("evaluation_report", "random_near_half_auc"),
    ]:
        assert expected in names
    failed = [
        (e.asset_key.to_user_string(), e.check_name, e.metadata)
        for e in evaluations
        if not e.passed
    ]
    assert failed == []
    # each triplets check result names its strategy partition (metadata and description)
    triplet_checks = [e for e in evaluations if e.asset_key.to_user_string() == "triplets"]
    assert len(triplet_checks) == 7 * 4
    named = {e.metadata["partition"].value for e in triplet_checks}
    assert named == set(STRATEGIES)
    assert all(
        e.description == f"partition {e.metadata['partition'].value}" for e in triplet_checks
    )


def test_one_finished_mlflow_run_per_materialization(pipeline: Pipeline) -> None:
    tracking = MlflowTracking()
    expected, found = [], []
    for result in pipeline.results:
        for event in result.get_asset_materialization_events():
            mat = event.step_materialization_data.materialization
            expected.append((mat.asset_key.to_user_string(), mat.partition or ""))
        runs = tracking.client.search_runs(
            [tracking.experiment_id], filter_string=f"tags.`{TAG_RUN_ID}` = '{result.run_id}'"
        )
        for run in runs:
            assert run.info.status == "FINISHED", run.data.tags
            assert run.data.tags[TAG_DATA_VERSION]
            assert "resumed_from_epoch" not in run.data.tags  # nothing was interrupted
            found.append((run.data.tags[TAG_ASSET], run.data.tags[TAG_PARTITION]))
    assert sorted(found) == sorted(expected)
    assert ("triplets", "s4_same_artist") in found
    assert {p for a, p in found if a == "curatornet_models"} == {"l0", "l0.0001"}
    assert {p for a, p in found if a == "random_sampling_models"} == {"curatornet", "vbpr"}


def test_figures_and_reports_are_written(pipeline: Pipeline) -> None:
    figures = pipeline.storage / "figures"
    for rel in [
        "cluster_map/cluster_map.png",
        "sampling_ablation/sampling_ablation_unbought.png",
        "sampling_ablation/sampling_ablation_in_stock.png",
        "curatornet_models/l0/training_curve.png",
    ]:
        assert (figures / rel).read_bytes().startswith(PNG), rel
    reports = pipeline.storage / "reports"
    for protocol in ("unbought", "in_stock"):
        table = pd.read_csv(reports / f"table2_{protocol}.csv", index_col="method")
        assert table.loc["Oracle", "auc"] == pytest.approx(1.0)
        assert {"VisRank", "Random", "CuratorNet (0)", "VBPR (random sampling)"} <= set(table.index)
        assert "protocol `" + protocol + "`" in (reports / f"table2_{protocol}.md").read_text()


def test_models_are_registered_with_a_champion(pipeline: Pipeline) -> None:
    client = MlflowTracking().client
    champion = client.get_model_version_by_alias("curatornet", "champion")
    assert champion.tags["variant"].startswith("curatornet-l")
    assert 0.0 <= float(champion.tags["test_auc"]) <= 1.0
    run = client.get_run(champion.run_id)
    assert run.data.tags.get("champion") == "True"


def _latest(pipeline: Pipeline, asset: str, partition: str | None = None) -> dict:
    records = pipeline.instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey(asset), asset_partitions=[partition] if partition else None
        ),
        limit=1,
    ).records
    return records[0].asset_materialization.metadata


def test_models_choose_epochs_and_the_champion_on_held_out_baskets(pipeline: Pipeline) -> None:
    """Training ranks held-out training baskets after each epoch; the champion compares that
    validation AUC, not the test set's."""
    held = _latest(pipeline, "validation_split")
    assert held["validation_users"].value > 0
    aucs = {}
    for partition in ("l0", "l0.0001"):
        meta = _latest(pipeline, "curatornet_models", partition)
        assert meta["monitor"].value == "val_auc"
        aucs[partition] = meta["best_val_auc"].value
        assert 0.5 < aucs[partition] <= 1.0  # the tiny data's planted signal ranks
    run = MlflowTracking().client.get_run(meta["mlflow_run_id"].value)
    assert {"val_auc", "val_recall_100", "val_accuracy"} <= set(run.data.metrics)  # @ -> _
    champion = _latest(pipeline, "champion")
    assert champion["selected_on"].value == "val_auc"
    assert champion["validation_auc"].value == pytest.approx(aucs)
    best = max(aucs, key=aucs.__getitem__)
    assert champion["variant"].value == f"curatornet-{best}"
    # the registered version states the rule, the candidates and the gate
    version = MlflowTracking().client.get_model_version(
        "curatornet", champion["registered_version"].value
    )
    listed = ", ".join(f"{k}={v:.4f}" for k, v in sorted(aucs.items()))
    assert version.tags["candidate_val_auc"] == listed
    assert "picked by the highest validation AUC" in version.description
    assert "among 2 CuratorNet candidates: " in version.description
    assert "Deployment gate" in version.description


def test_same_seed_gives_the_same_data_version(pipeline: Pipeline) -> None:
    before = pipeline.version("triplets", "s3_artist_cluster")
    pipeline.materialize(["triplets"], "s3_artist_cluster")
    assert pipeline.version("triplets", "s3_artist_cluster") == before


def test_retraining_on_unchanged_inputs_keeps_the_model_version(pipeline: Pipeline) -> None:
    before = pipeline.version("random_sampling_models", "vbpr")
    pipeline.materialize(["random_sampling_models"], "vbpr")
    assert pipeline.version("random_sampling_models", "vbpr") == before


def test_embeddings_are_reused_on_rematerialization(pipeline: Pipeline) -> None:
    before = pipeline.version("item_embeddings")
    result = pipeline.materialize(["item_embeddings"])
    mat = result.asset_materializations_for_node("item_embeddings")[0]
    assert mat.metadata["embedded"].value == 0
    assert mat.metadata["reused"].value == mat.metadata["items"].value
    assert "RANDOM" in mat.metadata["weights"].value
    assert pipeline.version("item_embeddings") == before


def test_lineage_follows_a_changed_partition(pipeline: Pipeline) -> None:
    """Re-sample one partition, retrain, re-evaluate: lineage shows exactly that change."""
    old = {s: pipeline.version("triplets", s) for s in STRATEGIES}
    pipeline.materialize(["triplets"], "s2_single_item", sampling={"seed": 7})
    new_s2 = pipeline.version("triplets", "s2_single_item")
    assert new_s2 != old["s2_single_item"]
    pipeline.materialize(["curatornet_models"], "l0.0001")
    pipeline.materialize(["evaluation_report"])

    text = explain(pipeline.instance, "auc", "CuratorNet (0.0001)")
    assert f"triplets[s2_single_item]  version {new_s2}" in text
    assert old["s2_single_item"] not in text
    for strategy in ("s1_user_profile", "s5_next_basket"):
        assert f"triplets[{strategy}]  version {old[strategy]}" in text
    assert "item_embeddings" in text and "inventory" in text and "file_sha256" in text

    report = trace(pipeline.instance, "evaluation_report")
    model = next(
        c for c in report.inputs if c.asset == "curatornet_models" and c.partition == "l0.0001"
    )
    versions = {c.partition: c.data_version for c in model.inputs if c.asset == "triplets"}
    assert set(versions) == {"s1_user_profile", "s2_single_item", "s3_artist_cluster",
                             "s4_same_artist", "s5_next_basket", "s6_hide_one"}  # fmt: skip
    assert versions["s2_single_item"] == new_s2
    assert versions["s6_hide_one"] == old["s6_hide_one"]


def test_bad_input_fails_and_keeps_what_was_materialized(pipeline: Pipeline, tmp_path) -> None:
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(pipeline.data, bad, ignore=shutil.ignore_patterns("images"))
    (bad / "images").symlink_to(pipeline.data / "images")
    lines = (bad / "purchases.csv").read_text().splitlines()
    cells = lines[3].rsplit(",", 1)
    lines[3] = cells[0] + ",yesterday"
    (bad / "purchases.csv").write_text("\n".join(lines) + "\n")
    stored = pipeline.storage / "tables" / "purchases.parquet"
    before_bytes = stored.read_bytes()
    before_version = pipeline.version("purchases")

    res = build_resources(profile="tiny", data_root=str(bad))
    result = dg.materialize(
        list(defs.assets),
        selection=[dg.AssetKey("purchases")],
        resources=res,
        instance=pipeline.instance,
        raise_on_error=False,
    )
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    message = failure.cause.message if failure.cause else failure.message
    assert "purchases.csv" in message and "line 4" in message
    assert "purchase_timestamp" in message
    assert stored.read_bytes() == before_bytes
    assert pipeline.version("purchases") == before_version


# ----------------------------------------------------------------------------- automation


from curatornet_pipeline.core.experiment.grid import MODEL_ASSETS  # noqa: E402


def _tick(instance: dg.DagsterInstance, cursor=None):
    return dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)


def _requested_models(result) -> dict[str, set]:
    return {
        a: set(result.get_requested_partitions(dg.AssetKey(a)))
        for a in MODEL_ASSETS
        if result.get_requested_partitions(dg.AssetKey(a))
    }


def test_unchanged_data_version_requests_nothing(pipeline: Pipeline) -> None:
    baseline = _tick(pipeline.instance)
    settled = _tick(pipeline.instance, baseline.cursor)
    assert settled.total_requested == 0
    before = pipeline.version("evaluation_report")
    pipeline.materialize(["evaluation_report"])  # same models: same Table 2, same version
    assert pipeline.version("evaluation_report") == before
    pipeline.materialize(["triplets"], "s5_next_basket")  # same seed: same triples
    result = _tick(pipeline.instance, settled.cursor)
    assert result.total_requested == 0, [
        (r.key, r.true_subset.size) for r in result.results if r.true_subset.size
    ]


def test_changed_guideline_partition_retrains_exactly_the_models_that_read_it(
    pipeline: Pipeline,
) -> None:
    cursor = _tick(pipeline.instance, _tick(pipeline.instance).cursor).cursor
    before = pipeline.version("triplets", "s2_single_item")
    pipeline.materialize(["triplets"], "s2_single_item", sampling={"seed": 11})
    assert pipeline.version("triplets", "s2_single_item") != before
    result = _tick(pipeline.instance, cursor)
    # s2 is a guideline VBPR does not use; the random-sampling CuratorNet reads it only
    # for its size (as many random triples as the guidelines' union), VBPR's does not
    assert _requested_models(result) == {
        "curatornet_models": {"l0", "l0.0001"},
        "random_sampling_models": {"curatornet"},
    }
    assert result.get_num_requested(dg.AssetKey("triplets")) == 0


def test_changed_random_partition_retrains_only_the_random_sampling_models(
    pipeline: Pipeline,
) -> None:
    cursor = _tick(pipeline.instance, _tick(pipeline.instance).cursor).cursor
    pipeline.materialize(["triplets"], "random", sampling={"seed": 12})
    result = _tick(pipeline.instance, cursor)
    assert _requested_models(result) == {"random_sampling_models": {"curatornet", "vbpr"}}


def test_failing_blocking_check_stops_the_models(pipeline: Pipeline, monkeypatch) -> None:
    """A leak in one triplet partition: its run fails, and no model reading it is requested."""
    from curatornet_pipeline.core.sampling import checks as checks_core

    cursor = _tick(pipeline.instance, _tick(pipeline.instance).cursor).cursor
    monkeypatch.setattr(checks_core, "hidden_item_leaks", lambda triplets, split: 3)
    result = dg.materialize(
        list(defs.assets) + list(defs.asset_checks or []),
        selection=[dg.AssetKey("triplets")],
        partition_key="s3_artist_cluster",
        resources=pipeline.resources(sampling={"seed": 13}),
        instance=pipeline.instance,
        raise_on_error=False,
    )
    leak = next(
        e for e in result.get_asset_check_evaluations() if e.check_name == "no_hidden_basket_items"
    )
    assert not leak.passed and leak.metadata["leaks"].value == 3
    assert not result.success  # a failed blocking check fails the run: `curatornet run` stops
    ticked = _tick(pipeline.instance, cursor)
    assert _requested_models(ticked) == {}  # neither CuratorNet nor VBPR (both read s3)
    # the same triplets, now clean: both families that read s3 are requested
    monkeypatch.undo()
    pipeline.materialize(["triplets"], "s3_artist_cluster", sampling={"seed": 13})
    ticked = _tick(pipeline.instance, ticked.cursor)
    assert _requested_models(ticked) == {
        "curatornet_models": {"l0", "l0.0001"},
        "vbpr_models": {"l0.0001"},
        "random_sampling_models": {"curatornet", "vbpr"},
    }
