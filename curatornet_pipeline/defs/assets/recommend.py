"""Sample recommendations with explanations: what the served model shows a few test users."""

import dagster as dg
import numpy as np
import pandas as pd

from curatornet_pipeline.core import models as models_core
from curatornet_pipeline.core import recommend as rec_core
from curatornet_pipeline.core.cluster import load_thumbnail
from curatornet_pipeline.core.scorers import CuratorNetScorer
from curatornet_pipeline.core.types import ItemVectors, TrainTestSplit, VisualClusters
from curatornet_pipeline.defs import presentation
from curatornet_pipeline.defs.assets.training import variants
from curatornet_pipeline.defs.automation import EAGER
from curatornet_pipeline.defs.common import check, finish, upstream_versions
from curatornet_pipeline.defs.tracking import MlflowTracking

GROUP = "evaluation"
N_USERS = 4  # test users shown
TOP = 10  # recommendations per user
#: The guideline-trained CuratorNet variants; the best by validation accuracy is shown.
CURATORNET_PARTITIONS = [
    v.name for v in variants().values() if v.kind == "curatornet" and v.sampling == "guidelines"
]


def _best(models: dict) -> tuple[str, dict]:
    """The variant with the best validation accuracy, as the registry's champion rule."""
    name = max(models, key=lambda n: float(models[n]["extra"].get("best_val_accuracy", 0.0)))
    return name, models[name]


def _training_items(split: TrainTestSplit, user: int) -> np.ndarray:
    b0, b1 = split.user_basket_offsets[user], split.user_basket_offsets[user + 1]
    lo, hi = split.basket_item_offsets[b0], split.basket_item_offsets[b1]
    return np.unique(split.basket_items[lo:hi])


def sample(
    recommender: rec_core.Recommender, split: TrainTestSplit, n_users: int, k: int
) -> list[tuple[str, list[str], list[rec_core.Recommendation], set[str], int]]:
    """(user id, profile ids, top-k, hidden basket ids, time) of evenly spaced test users.

    Each user is served at the time of the hidden purchase, from the stock on sale then.
    """
    ids = recommender.catalogue.ids
    picks = np.unique(np.linspace(0, len(split.test_users) - 1, n_users).astype(int))
    out = []
    for t in picks[: len(split.test_users)]:
        user = int(split.test_users[t])
        profile = [str(i) for i in ids[_training_items(split, user)]]
        hidden = split.test_items[split.test_item_offsets[t] : split.test_item_offsets[t + 1]]
        at = int(split.test_timestamps[t])
        recs = recommender.recommend(profile, k=k, in_stock_only=True, at=at)
        out.append((str(split.user_ids[user]), profile, recs, {str(i) for i in ids[hidden]}, at))
    return out


def _invariants(catalogue: rec_core.Catalogue, shown: list) -> tuple[bool, bool]:
    """(no profile or sold-out item recommended, every explanation is a profile item)."""
    position = {item: i for i, item in enumerate(catalogue.ids.tolist())}
    clean = explained = True
    for _, profile, recs, _, at in shown:
        sold = catalogue.sold_out(at)
        liked = set(profile)
        clean &= all(r.item_id not in liked and not sold[position[r.item_id]] for r in recs)
        explained &= all(r.because in liked for r in recs)
    return clean, explained


@dg.asset(
    dagster_type=pd.DataFrame,
    group_name=GROUP,
    code_version="1",
    automation_condition=EAGER,
    ins={
        "models": dg.AssetIn(
            partition_mapping=dg.SpecificPartitionsPartitionMapping(CURATORNET_PARTITIONS)
        )
    },
    check_specs=[
        dg.AssetCheckSpec("excludes_profile_and_sold_out", asset="sample_recommendations"),
        dg.AssetCheckSpec("explained_by_profile_items", asset="sample_recommendations"),
    ],
)
def sample_recommendations(
    context: dg.AssetExecutionContext,
    mlflow: MlflowTracking,
    models: dict,
    item_embeddings: ItemVectors,
    visual_clusters: VisualClusters,
    train_test_split: TrainTestSplit,
    image_manifest: pd.DataFrame,
    inventory: pd.DataFrame,
    purchases: pd.DataFrame,
) -> dg.MaterializeResult:
    """Top-10 CuratorNet recommendations of a few test users, each explained by a liked item."""
    if not isinstance(models, dict):
        models = {context.asset_partition_keys_for_input("models")[0]: models}
    upstream = upstream_versions(context)
    variant, payload = _best(models)
    with mlflow.run_for(context, params={"variant": variant, "users": N_USERS, "k": TOP}) as run:
        model, _ = models_core.model_from_payload(payload, source=f"models[{variant}]")
        catalogue = rec_core.build_catalogue(item_embeddings, visual_clusters, inventory, purchases)
        recommender = rec_core.Recommender(CuratorNetScorer(model, catalogue.features), catalogue)
        shown = sample(recommender, train_test_split, N_USERS, TOP)
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
        clean, explained = _invariants(catalogue, shown)
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
            checks=[
                check("excludes_profile_and_sold_out", clean),
                check("explained_by_profile_items", explained),
            ],
        )
