"""Visual features: ResNet embeddings, PCA-200, k-means visual clusters, the UMAP map."""

import dataclasses

import dagster as dg
import numpy as np
import pandas as pd

from curatornet_pipeline.core.data import catalogue as catalogue_core
from curatornet_pipeline.core.data.catalogue import Catalogue
from curatornet_pipeline.core.data.vectors import load_vectors
from curatornet_pipeline.core.evaluation.report import markdown_table
from curatornet_pipeline.core.types import ItemVectors, VisualClusters
from curatornet_pipeline.core.visual import backbone as backbone_core
from curatornet_pipeline.core.visual import cluster as cluster_core
from curatornet_pipeline.core.visual import embed as embed_core
from curatornet_pipeline.core.visual.store import EmbeddingStore
from curatornet_pipeline.defs.common import check, finish, upstream_versions
from curatornet_pipeline.defs.executors import ComputeResource
from curatornet_pipeline.defs.io_managers import ArtifactStorage
from curatornet_pipeline.defs.resources import DatasetResource, PipelineSettings
from curatornet_pipeline.defs.tracking import MlflowTracking
from curatornet_pipeline.defs.versioning import source_hash

GROUP = "visual"
BUNDLE = "bundle_io_manager"


@dg.asset(
    dagster_type=ItemVectors,
    group_name=GROUP,
    io_manager_key=BUNDLE,
    code_version=source_hash(embed_core, backbone_core, load_vectors),
    check_specs=[
        dg.AssetCheckSpec(
            "finite_vectors",
            asset="item_embeddings",
            blocking=True,
            description="Every vector is finite (NaN/inf from broken weights or images stop the graph).",
        ),
        dg.AssetCheckSpec(
            "no_dropped_images",
            asset="item_embeddings",
            description="WARN when unreadable images were dropped (on_unreadable_images=drop).",
        ),
        dg.AssetCheckSpec(
            "no_missing_vectors",
            asset="item_embeddings",
            description="WARN when items without an imported vector were dropped "
            "(on_missing_vectors=drop).",
        ),
    ],
)
def item_embeddings(
    context: dg.AssetExecutionContext,
    pipeline: PipelineSettings,
    dataset: DatasetResource,
    mlflow: MlflowTracking,
    compute: ComputeResource,  # sets torch threads to the step budget
    storage: ArtifactStorage,
    image_manifest: pd.DataFrame,
    inventory: pd.DataFrame,
) -> dg.MaterializeResult:
    """Backbone features of every artwork image; only new (item, image, weights) keys are embedded."""
    config = dataclasses.replace(
        pipeline.build("embed"),
        on_unreadable=dataset.on_unreadable_images,
    )
    imported = len(image_manifest) == 0
    if imported:  # the backbone settings were never used: name the file and its hash
        vectors, aligned = load_vectors(dataset.paths(), inventory, dataset.on_missing_vectors)
        params = embed_core.imported_meta(vectors.meta)
    else:
        params = dataclasses.asdict(config)
    upstream = upstream_versions(context)
    with mlflow.run_for(context, params=params) as run:
        if imported:
            stats = {
                "source": "imported",
                "embedded": 0,
                "reused": len(vectors.ids),
                "dropped_unreadable_images": 0,
                "dropped_missing_vectors": aligned["dropped_missing"],
            }
            if aligned["dropped_missing"]:
                context.log.warning(
                    f"dropped {aligned['dropped_missing']} items without an imported vector: "
                    f"{aligned['dropped_missing_examples']}"
                )
            weights = params["weights"]
        else:
            store = EmbeddingStore(str(storage.path("embedding_store")))
            total = len(image_manifest)

            def progress(done: int, _total: int) -> None:
                if done == _total or done % max(1, _total // 10) < config.batch_size:
                    context.log.info(f"embedded {done}/{_total} images")

            result = embed_core.embed_manifest(
                image_manifest, config, store=store, progress=progress
            )
            vectors, weights = result.vectors, result.weights
            stats = {
                "source": "images",
                "embedded": result.n_embedded,
                "reused": result.n_reused,
                "dropped_unreadable_images": len(result.dropped),
                "images_per_second": float(result.images_per_second),
                "images": total,
            }
            if result.dropped:
                context.log.warning(
                    f"dropped {len(result.dropped)} unreadable images: {result.dropped[:5]}"
                )
        if weights.startswith("none"):  # core.visual.backbone.RANDOM_WEIGHTS
            context.log.warning(f"EMBEDDINGS USE RANDOM WEIGHTS ({weights}): demo/test only")
            run.set_tags({"weights_warning": "RANDOM WEIGHTS"})
        run.log_params({"weights_resolved": weights})
        dropped = int(stats.get("dropped_unreadable_images", 0))
        missing = int(stats.get("dropped_missing_vectors", 0))
        return finish(
            context,
            run,
            vectors,
            upstream=upstream,
            metadata={
                **stats,
                "weights": weights,
                "backbone": "imported" if imported else config.backbone,
                "dims": int(vectors.vectors.shape[1]),
                "items": len(vectors.ids),
            },
            checks=[
                check("finite_vectors", bool(np.isfinite(vectors.vectors).all())),
                check("no_dropped_images", dropped == 0, severity="WARN", dropped=dropped),
                check("no_missing_vectors", missing == 0, "WARN", dropped_missing_vectors=missing),
            ],
        )


@dg.asset(
    dagster_type=ItemVectors,
    group_name=GROUP,
    code_version=source_hash(cluster_core.reduce),
    io_manager_key=BUNDLE,
)
def pca_embeddings(
    context: dg.AssetExecutionContext,
    pipeline: PipelineSettings,
    mlflow: MlflowTracking,
    item_embeddings: ItemVectors,
) -> dg.MaterializeResult:
    """Z-scored embeddings reduced by PCA (200 dims in the paper); defines the catalogue."""
    config = pipeline.build("pca")
    upstream = upstream_versions(context)
    with mlflow.run_for(context, params=dataclasses.asdict(config)) as run:
        reduced = cluster_core.reduce(item_embeddings, config)
        meta = {k: v for k, v in reduced.meta.items() if isinstance(v, int | float | str)}
        return finish(
            context,
            run,
            reduced,
            upstream=upstream,
            metadata={"items": len(reduced.ids), "dims": int(reduced.vectors.shape[1]), **meta},
        )


@dg.asset(
    dagster_type=VisualClusters,
    group_name=GROUP,
    io_manager_key=BUNDLE,
    code_version=source_hash(cluster_core.cluster, cluster_core.cluster_size_histogram),
    check_specs=[
        dg.AssetCheckSpec(
            "silhouette_positive",
            asset="visual_clusters",
            description="WARN when the best silhouette is <= 0: the clusters do not separate "
            "the items (degenerate embeddings, wrong weights).",
        ),
        dg.AssetCheckSpec(
            "no_giant_cluster",
            asset="visual_clusters",
            description="WARN when one cluster holds more than half of the items: the cluster "
            "conditions of the sampling guidelines then barely filter.",
        ),
    ],
)
def visual_clusters(
    context: dg.AssetExecutionContext,
    pipeline: PipelineSettings,
    mlflow: MlflowTracking,
    pca_embeddings: ItemVectors,
) -> dg.MaterializeResult:
    """k-means on the PCA vectors, restarted; the run with the best silhouette is kept."""
    config = pipeline.build("cluster")
    upstream = upstream_versions(context)
    with mlflow.run_for(context, params=dataclasses.asdict(config)) as run:
        clusters: VisualClusters = cluster_core.cluster(pca_embeddings, config)
        sizes = np.bincount(clusters.labels, minlength=clusters.k)
        silhouette = float(clusters.silhouettes[clusters.chosen])
        restarts = pd.DataFrame(
            {"restart": np.arange(len(clusters.silhouettes)), "silhouette": clusters.silhouettes}
        )
        restarts["chosen"] = restarts["restart"] == clusters.chosen
        hist = cluster_core.cluster_size_histogram(clusters.labels)
        for i, s in enumerate(clusters.silhouettes):
            run.log_metrics({"silhouette_restart": float(s)}, step=i)
        return finish(
            context,
            run,
            clusters,
            upstream=upstream,
            metadata={
                "k": clusters.k,
                "silhouette": silhouette,
                "smallest_cluster": int(sizes.min()),
                "largest_cluster": int(sizes.max()),
                "size_histogram": dg.MetadataValue.json({str(k): int(v) for k, v in hist.items()}),
            },
            tables={"restarts": markdown_table(restarts)},
            checks=[
                check("silhouette_positive", silhouette > 0, "WARN", silhouette=silhouette),
                check(
                    "no_giant_cluster",
                    int(sizes.max()) <= 0.5 * len(clusters.labels),
                    severity="WARN",
                    largest_share=float(sizes.max() / max(1, len(clusters.labels))),
                ),
            ],
        )


@dg.asset(
    dagster_type=pd.DataFrame,
    group_name=GROUP,
    code_version=source_hash(cluster_core.umap_2d, cluster_core.cluster_map_figure),
)
def cluster_map(
    context: dg.AssetExecutionContext,
    mlflow: MlflowTracking,
    storage: ArtifactStorage,
    pca_embeddings: ItemVectors,
    visual_clusters: VisualClusters,
    image_manifest: pd.DataFrame,
) -> dg.MaterializeResult:
    """UMAP 2-D map of the items coloured by cluster, with rows of thumbnails (paper Fig. 2)."""
    upstream = upstream_versions(context)
    with mlflow.run_for(context, params={"method": "umap", "seed": 0}) as run:
        coords = cluster_core.umap_2d(pca_embeddings, seed=0)
        paths = dict(zip(image_manifest["artwork_id_hash"], image_manifest["path"], strict=True))
        ids = pca_embeddings.ids

        def thumbnail(i: int):
            path = paths.get(str(ids[i]))
            return cluster_core.load_thumbnail(path) if path else None

        png = cluster_core.cluster_map_figure(coords, visual_clusters.labels, thumbnail)
        table = pd.DataFrame(
            {
                "artwork_id_hash": ids,
                "x": coords[:, 0],
                "y": coords[:, 1],
                "cluster": visual_clusters.labels,
            }
        )
        return finish(
            context,
            run,
            table,
            upstream=upstream,
            figures={"cluster_map": png},
            storage=storage,
            metadata={"items": len(table)},
        )


@dg.asset(
    dagster_type=Catalogue,
    group_name=GROUP,
    code_version=source_hash(catalogue_core.Catalogue, catalogue_core.build_catalogue),
    io_manager_key=BUNDLE,
)
def catalogue(
    context: dg.AssetExecutionContext,
    mlflow: MlflowTracking,
    item_embeddings: ItemVectors,
    visual_clusters: VisualClusters,
    inventory: pd.DataFrame,
    purchases: pd.DataFrame,
) -> dg.MaterializeResult:
    """The artworks that can be recommended: ids, artists, vectors, clusters and stock dates."""
    upstream = upstream_versions(context)
    with mlflow.run_for(context) as run:
        cat = catalogue_core.build_catalogue(item_embeddings, visual_clusters, inventory, purchases)
        return finish(
            context,
            run,
            cat,
            upstream=upstream,
            metadata={
                "items": len(cat),
                "artists": int(len(np.unique(cat.artists))),
                "clusters": int(len(np.unique(cat.clusters))),
                "one_of_a_kind": int(cat.one_of_a_kind.sum()),
                "sold_out": int(cat.sold_out().sum()),
                "dims": int(cat.features.shape[1]),
            },
        )
