"""The code location loads and the main job's plan follows the dependencies."""

import dagster as dg

from curatornet_pipeline.definitions import defs
from curatornet_pipeline.runner import plan


def test_definitions_load_with_every_stage() -> None:
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {
        "inventory",
        "purchases",
        "image_manifest",
        "item_embeddings",
        "pca_embeddings",
        "visual_clusters",
        "cluster_map",
        "train_test_split",
        "triplets",
        "training_set",
        "models",
        "evaluation_report",
        "sampling_ablation",
    } <= keys
    for name in ("nightly_retraining",):
        assert defs.get_schedule_def(name)
    assert defs.get_sensor_def("incoming_batches")


def test_every_asset_has_a_group_and_a_description() -> None:
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.group_name != "default", key
        assert node.description, key


def test_plan_runs_each_partition_after_its_upstream() -> None:
    steps = plan(defs)
    order = {}
    for i, step in enumerate(steps):
        for key in step.keys:
            order.setdefault(key.to_user_string(), []).append(i)
    assert len(order["triplets"]) == 7
    assert max(order["item_embeddings"]) < min(order["triplets"])
    assert max(order["triplets"]) < min(order["training_set"])
    assert max(order["models"]) < min(order["evaluation_report"])
    partitioned = {s.partition for s in steps if s.keys == (dg.AssetKey("models"),)}
    assert "curatornet-random" in partitioned and "vbpr-random" in partitioned


def test_drop_options_come_from_the_environment(monkeypatch) -> None:
    from curatornet_pipeline.definitions import build_resources

    monkeypatch.setenv("CURATORNET_ON_UNKNOWN_ITEMS", "drop")
    dataset = build_resources(profile="tiny")["dataset"]
    assert dataset.on_unknown_items == "drop"
    assert dataset.on_missing_images == "error"
    assert (
        build_resources(profile="tiny", on_unknown_items="error")["dataset"].on_unknown_items
        == "error"
    )
