"""The Dagster code location: every asset, check, job, schedule, sensor and resource."""

import dagster as dg

from curatornet_pipeline import settings
from curatornet_pipeline.defs import automation, crash, intake
from curatornet_pipeline.defs.assets import (
    evaluation,
    ingest,
    recommend,
    registry,
    sampling,
    training,
    visual,
)
from curatornet_pipeline.defs.executors import ComputeResource, executor
from curatornet_pipeline.defs.io_managers import ArtifactStorage, io_managers
from curatornet_pipeline.defs.resources import DatasetResource, pipeline_settings
from curatornet_pipeline.defs.tracking import MlflowTracking, with_definition_links

ASSET_MODULES = [ingest, visual, sampling, training, evaluation, recommend, registry]


def _dataset_env() -> dict[str, str]:
    """``CURATORNET_ON_UNKNOWN_ITEMS`` and friends: the dataset resource's drop options."""
    names = ("on_unknown_items", "on_missing_images", "on_unreadable_images", "on_missing_vectors")
    return {n: value for n in names if (value := settings.env(f"CURATORNET_{n.upper()}"))}


def build_resources(
    profile: str | None = None,
    data_root: str = "",
    overrides: dict | None = None,
    **dataset_options,
) -> dict:
    """The resources of a deployment: storage, dataset, stage settings, tracking."""
    storage = settings.storage_uri()
    return {
        **io_managers(storage),
        "storage": ArtifactStorage(root=storage, local_root=str(settings.home_dir() / "local")),
        "dataset": DatasetResource(root=data_root, **{**_dataset_env(), **dataset_options}),
        "pipeline": pipeline_settings(
            profile or settings.run_profile(),
            settings.run_overrides() if overrides is None else overrides,
        ),
        "mlflow": MlflowTracking(),
        "compute": ComputeResource(),
    }


def all_assets() -> list:
    return with_definition_links([*dg.load_assets_from_modules(ASSET_MODULES), *intake.ASSETS])


def all_checks() -> list:
    return [*dg.load_asset_checks_from_modules(ASSET_MODULES), *intake.ASSET_CHECKS]


defs = dg.Definitions(
    assets=all_assets(),
    asset_checks=all_checks(),
    jobs=[*automation.JOBS, *intake.JOBS],
    schedules=[automation.nightly_retraining],
    sensors=[automation.automation_sensor, crash.end_mlflow_runs_of_failed_runs, *intake.SENSORS],
    resources=build_resources(),
    executor=executor(),
)
