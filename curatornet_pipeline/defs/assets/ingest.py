"""Ingestion: the published files as validated, typed tables."""

import dagster as dg
import pandas as pd

from curatornet_pipeline.core.data import formats as data
from curatornet_pipeline.core.evaluation.report import markdown_table
from curatornet_pipeline.core.hashing import file_sha256
from curatornet_pipeline.defs.common import check, finish, upstream_versions
from curatornet_pipeline.defs.resources import DatasetResource
from curatornet_pipeline.defs.tracking import MlflowTracking
from curatornet_pipeline.defs.versioning import source_hash

GROUP = "ingestion"


def _describe(series: pd.Series) -> dict[str, float]:
    return {
        "min": float(series.min()),
        "median": float(series.median()),
        "max": float(series.max()),
    }


@dg.asset(
    dagster_type=pd.DataFrame,
    group_name=GROUP,
    code_version=source_hash(data.read_inventory, _describe),
    deps=["applied_batches"],  # incoming batches are applied before the files are read
)
def inventory(
    context: dg.AssetExecutionContext, dataset: DatasetResource, mlflow: MlflowTracking
) -> dg.MaterializeResult:
    """Artworks with their artist and upload time, from inventory.csv."""
    paths = dataset.paths()
    with mlflow.run_for(context, params={"file": str(paths.inventory)}) as run:
        df = data.read_inventory(paths.inventory)
        stats = pd.DataFrame([{"column": "upload_timestamp", **_describe(df["upload_timestamp"])}])
        per_artist = df.groupby("artist_id_hash").size()
        return finish(
            context,
            run,
            df,
            metadata={
                "items": len(df),
                "file": str(paths.inventory),
                "file_sha256": file_sha256(paths.inventory)[:16],
                "artists": int(per_artist.size),
                "items_per_artist_max": int(per_artist.max()),
                "preview": dg.MetadataValue.md(markdown_table(df.head(5))),
                "statistics": dg.MetadataValue.md(markdown_table(stats, ".0f")),
            },
        )


@dg.asset(
    dagster_type=pd.DataFrame,
    group_name=GROUP,
    code_version=source_hash(data.read_purchases, data.baskets, _describe),
    check_specs=[
        dg.AssetCheckSpec(
            "no_dropped_rows",
            asset="purchases",
            description="WARN when purchases of unknown artworks were dropped (on_unknown_items=drop).",
        ),
    ],
)
def purchases(
    context: dg.AssetExecutionContext,
    dataset: DatasetResource,
    mlflow: MlflowTracking,
    inventory: pd.DataFrame,
) -> dg.MaterializeResult:
    """One row per purchased artwork, from purchases.csv (baskets exploded)."""
    paths = dataset.paths()
    options = dataset.read_options()
    upstream = upstream_versions(context)
    params = {"file": str(paths.purchases), "on_unknown_items": options.on_unknown_items}
    with mlflow.run_for(context, params=params) as run:
        df, report = data.read_purchases(paths.purchases, inventory, options)
        per_user = df.groupby("user_id_hash").size()
        baskets = data.baskets(df)
        dropped = int(report.get("dropped_unknown", 0))
        stats = pd.DataFrame(
            [
                {"statistic": "purchases per user", **_describe(per_user)},
                {"statistic": "items per basket", **_describe(baskets["items"].map(len))},
            ]
        )
        return finish(
            context,
            run,
            df,
            upstream=upstream,
            metadata={
                "purchases": len(df),
                "file": str(paths.purchases),
                "file_sha256": file_sha256(paths.purchases)[:16],
                "users": int(per_user.size),
                "baskets": len(baskets),
                "csv_rows": int(report.get("rows", 0)),
                "dropped_unknown_items": dropped,
                "statistics": dg.MetadataValue.md(markdown_table(stats, ".2f")),
            },
            checks=[
                check("no_dropped_rows", dropped == 0, severity="WARN", dropped=dropped),
            ],
        )


@dg.asset(
    dagster_type=pd.DataFrame,
    group_name=GROUP,
    code_version=source_hash(data.image_manifest),
    check_specs=[
        dg.AssetCheckSpec(
            "every_item_has_an_image",
            asset="image_manifest",
            description="WARN when inventory items without an image were dropped "
            "(on_missing_images=drop).",
        )
    ],
)
def image_manifest(
    context: dg.AssetExecutionContext,
    dataset: DatasetResource,
    mlflow: MlflowTracking,
    inventory: pd.DataFrame,
) -> dg.MaterializeResult:
    """Image file, content hash and size of every artwork (empty when embeddings were imported)."""
    paths = dataset.paths()
    options = dataset.read_options()
    params = {"images": str(paths.images), "on_missing_images": options.on_missing_images}
    with mlflow.run_for(context, params=params) as run:
        if paths.uses_imported_vectors():
            df = pd.DataFrame(columns=["artwork_id_hash", "path", "content_hash", "size_bytes"])
            report = {"source": "imported embeddings", "dropped_missing": 0}
        else:
            df, report = data.image_manifest(paths.images, inventory, options)
        dropped = int(report.get("dropped_missing", 0))
        source = report.get("source", "images")
        return finish(
            context,
            run,
            df,
            metadata={
                "images": len(df),
                "source": source,
                "total_megabytes": float(df["size_bytes"].sum() / 1e6) if len(df) else 0.0,
                "dropped_missing_images": dropped,
                "unmatched_files": int(report.get("unmatched_files", 0)),
            },
            checks=[
                check("every_item_has_an_image", dropped == 0, severity="WARN", dropped=dropped)
            ],
        )
