"""The code location: named jobs, honest partition mappings, typed settings, code versions."""

import dagster as dg
import pytest

from curatornet_pipeline.core.types import GUIDELINE_STRATEGIES, VBPR_GUIDELINES
from curatornet_pipeline.definitions import defs
from curatornet_pipeline.defs.assets.training import add_grid_partitions
from curatornet_pipeline.defs.automation import JOBS
from curatornet_pipeline.defs.resources import pipeline_settings, run_config
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
        "catalogue",
        "cluster_map",
        "train_test_split",
        "validation_split",
        "triplets",
        "curatornet_models",
        "vbpr_models",
        "random_sampling_models",
        "evaluation_report",
        "sampling_ablation",
        "sample_recommendations",
    } <= keys
    assert defs.get_schedule_def("nightly_retraining").job_name == "refresh_upstream"
    assert defs.get_sensor_def("incoming_batches")


def test_every_asset_job_schedule_sensor_and_check_is_described() -> None:
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.group_name != "default", key
        assert node.description, key
    repo = defs.get_repository_def()
    for job in repo.get_all_jobs():
        if not job.name.startswith("__"):
            assert job.description, job.name
    for item in [*repo.schedule_defs, *repo.sensor_defs]:
        assert item.description, item.name
    for checks in defs.asset_checks or []:
        for spec in checks.check_specs:
            assert spec.description, spec.key


def test_each_triplets_check_result_names_its_partition() -> None:
    """Unpartitioned checks (a partitioned one broke the blocking gate, see
    sampling._triplets_check): the result's description and metadata name the strategy."""
    from curatornet_pipeline.defs.assets.sampling import _result

    result = _result("no_hidden_basket_items", False, "s3_artist_cluster", leaks=3)
    assert result.description == "partition s3_artist_cluster"
    assert result.metadata["partition"].value == "s3_artist_cluster"
    assert result.metadata["leaks"].value == 3 and not result.passed
    triplets = next(a for a in defs.assets if dg.AssetKey("triplets") in a.keys)
    specs = list(triplets.check_specs)
    assert len(specs) == 4
    assert all(s.partitions_def is None and "partition" in s.description for s in specs)


def test_every_asset_belongs_to_exactly_one_named_job() -> None:
    graph = defs.resolve_asset_graph()
    owners: dict[str, list[str]] = {}
    for job in JOBS:
        for key in job.selection.resolve(graph):
            owners.setdefault(key.to_user_string(), []).append(job.name)
    materializable = {k.to_user_string() for k in graph.materializable_asset_keys}
    assert set(owners) == materializable
    assert all(len(jobs) == 1 for jobs in owners.values()), owners


def test_plan_launches_each_stage_after_its_upstream() -> None:
    with dg.instance_for_test() as instance:
        add_grid_partitions(instance, pipeline_settings("tiny").grid())
        stages = plan(defs, instance)
    labels = [[launch.label() for launch in stage] for stage in stages]
    assert labels[0] == ["refresh_upstream"]
    assert len(labels[1]) == 7 and all(x.startswith("sample_triplets[") for x in labels[1])
    assert set(labels[2]) == {
        "train_curatornet[l0]",
        "train_curatornet[l0.0001]",
        "train_vbpr[l0.0001]",
        "train_random_sampling[curatornet]",
        "train_random_sampling[vbpr]",
    }
    assert labels[3] == ["evaluate"]


@pytest.mark.parametrize(
    ("child", "partition", "expected"),
    [
        ("curatornet_models", "l0.0001", set(GUIDELINE_STRATEGIES)),
        ("vbpr_models", "l0.0001", set(VBPR_GUIDELINES)),
        ("random_sampling_models", "curatornet", {"random", *GUIDELINE_STRATEGIES}),
        ("random_sampling_models", "vbpr", {"random", *VBPR_GUIDELINES}),
    ],
)
def test_models_read_exactly_the_triplets_they_train_on(child, partition, expected) -> None:
    model = defs.resolve_assets_def(child)
    mapping = model.get_partition_mapping(dg.AssetKey("triplets"))
    parents = mapping.get_upstream_mapped_partitions_result_for_partitions(
        model.partitions_def.subset_with_partition_keys([partition]),
        model.partitions_def,
        defs.resolve_assets_def("triplets").partitions_def,
    ).partitions_subset.get_partition_keys()
    assert set(parents) == expected
    assert {"s3_artist_cluster", "s1_user_profile"} == set(VBPR_GUIDELINES)


def test_settings_are_typed_fields_with_the_profile_as_defaults_in_the_launchpad() -> None:
    """The launchpad renders the job's run config schema: typed fields, profile values."""
    job = defs.resolve_job_def("train_curatornet")
    resources = job.run_config_schema.config_type.fields["resources"].config_type
    config = resources.fields["pipeline"].config_type.fields["config"].config_type
    assert {"embed", "train", "sampling", "models", "evaluation"} <= set(config.fields)
    train = config.fields["train"].config_type.fields
    assert "Int" in train["epochs"].config_type.key
    assert "Float" in train["lr"].config_type.key
    assert config.fields["profile"].default_value == "tiny"  # the test session's preset
    assert train["epochs"].default_value == 3  # tiny's value, not the paper's 10
    assert config.fields["models"].config_type.fields["curatornet_l2"].default_value == [0.0, 1e-4]
    # a run's config overrides one field and keeps the profile's others
    launched = run_config("tiny", {"train": {"epochs": 7}})["resources"]["pipeline"]["config"]
    assert launched["train"]["epochs"] == 7 and launched["sampling"]["n_per_strategy"] == 1500
    assert job.run_config_schema.config_type.fields  # the launched config validates:
    assert dg.validate_run_config(job, run_config("tiny", {"train": {"epochs": 7}}))
    with pytest.raises(ValueError, match="unknown train settings"):
        run_config("tiny", {"train": {"epochz": 7}})


def test_code_versions_follow_the_code_each_asset_runs() -> None:
    graph = defs.resolve_asset_graph()
    versions = {k.to_user_string(): graph.get(k).code_version for k in graph.get_all_asset_keys()}
    assert all(v and v != "1" for v in versions.values()), versions
    # assets calling different core code carry different versions
    assert versions["triplets"] != versions["train_test_split"]
    assert versions["curatornet_models"] == versions["vbpr_models"]  # one training code


def test_code_version_changes_when_the_source_changes(tmp_path, monkeypatch) -> None:
    import importlib
    import sys

    from curatornet_pipeline.defs.versioning import source_hash

    module = tmp_path / "versioned_stage.py"
    module.write_text("def stage(x):\n    return x + 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    first = source_hash(importlib.import_module("versioned_stage").stage)
    module.write_text("def stage(x):\n    return x + 2\n")
    sys.modules.pop("versioned_stage")
    importlib.invalidate_caches()
    second = source_hash(importlib.import_module("versioned_stage").stage)
    assert first != second and len(first) == 12


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
