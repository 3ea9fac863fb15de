"""Sample recommendations with explanations: what the served model shows a few test users."""

import dagster as dg
import numpy as np
import pandas as pd

from curatornet_pipeline.core.data.catalogue import Catalogue
from curatornet_pipeline.core.experiment import grid as experiment
from curatornet_pipeline.core.models import networks as models_core
from curatornet_pipeline.core.models.scorers import CuratorNetScorer
from curatornet_pipeline.core.recommend import recommender as rec_core
from curatornet_pipeline.core.types import TrainTestSplit
from curatornet_pipeline.core.visual.cluster import load_thumbnail
from curatornet_pipeline.defs import presentation
from curatornet_pipeline.defs.automation import ON_DATA_CHANGE
from curatornet_pipeline.defs.common import check, finish, upstream_versions
from curatornet_pipeline.defs.executors import ComputeResource
from curatornet_pipeline.defs.io_managers import ArtifactStorage
from curatornet_pipeline.defs.tracking import MlflowTracking
from curatornet_pipeline.defs.versioning import source_hash

GROUP = "evaluation"
N_USERS = 4  # test users shown
TOP = 10  # recommendations per user


def _best(models: dict) -> tuple[str, dict]:
    """The variant whose held-out validation baskets rank best, as the champion's choice."""
    name = max(models, key=lambda n: np.nan_to_num(experiment.validation_auc(models[n]), nan=-1))
    return name, models[name]


@dg.asset(
    dagster_type=pd.DataFrame,
    group_name=GROUP,
    code_version=source_hash(rec_core.Recommender, rec_core.sample_test_users),
    automation_condition=ON_DATA_CHANGE,
    check_specs=[
        dg.AssetCheckSpec(
            "excludes_profile_and_sold_out",
            asset="sample_recommendations",
            description="No recommended artwork is in the user's profile or sold out at the "
            "time of the request.",
        ),
        dg.AssetCheckSpec(
            "explained_by_profile_items",
            asset="sample_recommendations",
            description="Every recommendation's explanation names an artwork the user liked.",
        ),
    ],
)
def sample_recommendations(
    context: dg.AssetExecutionContext,
    mlflow: MlflowTracking,
    compute: ComputeResource,  # sets torch threads to the step budget
    storage: ArtifactStorage,
    curatornet_models: dict,
    catalogue: Catalogue,
    train_test_split: TrainTestSplit,
    image_manifest: pd.DataFrame,
) -> dg.MaterializeResult:
    """Top-10 CuratorNet recommendations of a few test users, each explained by a liked item."""
    models = curatornet_models
    if "state_dict" in models:  # a single partition loads as the payload itself
        models = {context.asset_partition_keys_for_input("curatornet_models")[0]: models}
    upstream = upstream_versions(context)
    variant, payload = _best(models)
    with mlflow.run_for(context, params={"variant": variant, "users": N_USERS, "k": TOP}) as run:
        model, _ = models_core.model_from_payload(payload, source=f"models[{variant}]")
        recommender = rec_core.Recommender(CuratorNetScorer(model, catalogue.features), catalogue)
        shown = rec_core.sample_test_users(recommender, train_test_split, N_USERS, TOP)
        frames = [
            rec_core.recommendations_frame(recs).assign(
                user_id=user, at=at, in_hidden_basket=lambda d, h=hidden: d["item_id"].isin(h)
            )
            for user, _, recs, hidden, at in shown
        ]
        table = pd.concat(frames, ignore_index=True).assign(model=variant)
        paths = dict(zip(image_manifest["artwork_id_hash"], image_manifest["path"], strict=True))

        def thumbnail(item: str) -> np.ndarray | None:
            return load_thumbnail(paths[item], size=64) if item in paths else None

        png = rec_core.recommendations_figure(
            [(f"user {u[:8]}", p, r) for u, p, r, _, _ in shown], thumbnail, per_row=TOP
        )
        clean, explained = rec_core.sample_invariants(catalogue, shown)
        return finish(
            context,
            run,
            table,
            upstream=upstream,
            metadata={
                "model": variant,
                "users": len(shown),
                "hits": int(table["in_hidden_basket"].sum()),
                "same_artist_share": float(table["same_artist"].mean()) if len(table) else 0.0,
                "same_cluster_share": float(table["same_cluster"].mean()) if len(table) else 0.0,
                "recommendations": presentation.recommendations_value(table),
            },
            figures={"sample_recommendations": png},
            storage=storage,
            checks=[
                check("excludes_profile_and_sold_out", clean),
                check("explained_by_profile_items", explained),
            ],
        )
