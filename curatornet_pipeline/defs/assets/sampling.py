"""Train/test split and triple sampling, one partition per strategy."""

import dataclasses

import dagster as dg
import numpy as np
import pandas as pd

from curatornet_pipeline.core import sampling as sampling_core
from curatornet_pipeline.core import split as split_core
from curatornet_pipeline.core.types import (
    GUIDELINE_STRATEGIES,
    STRATEGIES,
    STRATEGY_INFO,
    ItemVectors,
    TrainTestSplit,
    Triplets,
    VisualClusters,
)
from curatornet_pipeline.defs.automation import EAGER
from curatornet_pipeline.defs.common import check, finish, markdown_table, upstream_versions
from curatornet_pipeline.defs.resources import PipelineSettings
from curatornet_pipeline.defs.tracking import MlflowTracking

GROUP = "sampling"
BUNDLE = "bundle_io_manager"
strategy_partitions = dg.StaticPartitionsDefinition(list(STRATEGIES))


@dg.asset(
    dagster_type=TrainTestSplit,
    group_name=GROUP,
    code_version="1",
    io_manager_key=BUNDLE,
    check_specs=[dg.AssetCheckSpec("test_baskets_are_last", asset="train_test_split")],
)
def train_test_split(
    context: dg.AssetExecutionContext,
    mlflow: MlflowTracking,
    purchases: pd.DataFrame,
    pca_embeddings: ItemVectors,
) -> dg.MaterializeResult:
    """Baskets per user; the last basket of every user with two or more is hidden for testing."""
    upstream = upstream_versions(context)
    with mlflow.run_for(context, params={"rule": "last basket of users with >= 2 baskets"}) as run:
        split = split_core.split_train_test(purchases, pca_embeddings.ids)
        # Every hidden basket is strictly later than all of the user's training baskets.
        last_train = np.array(
            [
                split.basket_timestamps[split.user_basket_offsets[u + 1] - 1]
                for u in split.test_users
            ],
            dtype=np.int64,
        )
        ordered = bool((last_train < split.test_timestamps).all()) if len(last_train) else True
        counts = {k: v for k, v in split.meta.items() if isinstance(v, int | float)}
        return finish(
            context,
            run,
            split,
            upstream=upstream,
            metadata={
                "users": len(split.user_ids),
                "test_users": len(split.test_users),
                "training_baskets": len(split.basket_timestamps),
                "hidden_items": len(split.test_items),
                **counts,
            },
            checks=[check("test_baskets_are_last", ordered)],
        )


def _context(split, clusters, pca, inventory) -> sampling_core.SamplingContext:
    artist_by_id = dict(zip(inventory["artwork_id_hash"], inventory["artist_id_hash"], strict=True))
    artists = pd.Series([artist_by_id[str(i)] for i in pca.ids])
    artist_codes = pd.factorize(artists)[0].astype(np.int32)
    return sampling_core.build_context(split, artist_codes, clusters.labels, pca.vectors)


@dg.asset(
    dagster_type=Triplets,
    group_name=GROUP,
    code_version="1",
    io_manager_key=BUNDLE,
    partitions_def=strategy_partitions,
    automation_condition=EAGER,
    check_specs=[
        dg.AssetCheckSpec("strategy_invariants", asset="triplets"),
        dg.AssetCheckSpec("no_hidden_basket_items", asset="triplets"),
        dg.AssetCheckSpec("target_reached", asset="triplets"),
    ],
)
def triplets(
    context: dg.AssetExecutionContext,
    pipeline: PipelineSettings,
    mlflow: MlflowTracking,
    train_test_split: TrainTestSplit,
    visual_clusters: VisualClusters,
    pca_embeddings: ItemVectors,
    inventory: pd.DataFrame,
) -> dg.MaterializeResult:
    """Training and validation triples of one sampling strategy (the paper's guidelines, or random)."""
    strategy = context.partition_key
    config = pipeline.build("sampling", sampling_core.SamplingConfig)
    upstream = upstream_versions(context)
    params = {**dataclasses.asdict(config), **STRATEGY_INFO[strategy].params()}
    with mlflow.run_for(context, params=params) as run:
        ctx = _context(train_test_split, visual_clusters, pca_embeddings, inventory)
        result: Triplets = sampling_core.sample_strategy(ctx, strategy, config)
        violations = sampling_core.verify_strategy(result, ctx, strategy)
        leaks = sampling_core.hidden_item_leaks(result, train_test_split)
        meta = result.meta
        sizes = np.diff(result.profile_offsets)[result.profile]
        hist = (
            np.histogram(sizes, bins=[1, 2, 3, 5, 10, 20, 50, 100, 1000])[0] if len(sizes) else []
        )
        hist_df = pd.DataFrame(
            {
                "profile_size": ["1", "2", "3-4", "5-9", "10-19", "20-49", "50-99", "100+"],
                "triples": list(hist) or [0] * 8,
            }
        )
        produced = int((~result.is_validation).sum())
        target = int(meta.get("target", config.n_per_strategy))
        return finish(
            context,
            run,
            result,
            upstream=upstream,
            metadata={
                "triples": produced,
                "validation_triples": int(result.is_validation.sum()),
                "target": target,
                "rejected_duplicates": int(meta.get("rejected_duplicates", 0)),
                "users_covered": int(len(np.unique(result.user[result.user >= 0]))),
                "items_covered": int(
                    len(np.unique(np.concatenate([result.positive, result.negative])))
                ),
                "profiles": len(result.profile_offsets) - 1,
                "seed": config.seed,
                "paper_guideline": str(STRATEGY_INFO[strategy].paper_guideline or "none"),
                "config": dg.MetadataValue.json(dataclasses.asdict(config)),
            },
            tables={"profile_sizes": markdown_table(hist_df)},
            checks=[
                check("strategy_invariants", not violations, violations=violations[:10]),
                check("no_hidden_basket_items", leaks == 0, leaks=leaks),
                check(
                    "target_reached",
                    produced >= 0.9 * target,
                    severity="WARN",
                    produced=produced,
                    target=target,
                ),
            ],
        )


def _union(context, mlflow, parts: dict[str, Triplets], name: str) -> dg.MaterializeResult:
    upstream = upstream_versions(context)
    with mlflow.run_for(context, params={"strategies": sorted(parts), "set": name}) as run:
        merged = sampling_core.merge_triplets(parts)
        per_strategy = pd.DataFrame(
            {
                "strategy": [STRATEGIES[s] for s in np.unique(merged.strategy)],
                "training": [
                    int(((merged.strategy == s) & ~merged.is_validation).sum())
                    for s in np.unique(merged.strategy)
                ],
                "validation": [
                    int(((merged.strategy == s) & merged.is_validation).sum())
                    for s in np.unique(merged.strategy)
                ],
            }
        )
        unique = len(np.unique(merged.hash)) == len(merged.hash)
        return finish(
            context,
            run,
            merged,
            upstream=upstream,
            metadata={
                "triples": int((~merged.is_validation).sum()),
                "validation_triples": int(merged.is_validation.sum()),
                "rejected_cross_strategy": int(merged.meta.get("rejected_duplicates", 0)),
            },
            tables={"per_strategy": markdown_table(per_strategy)},
            checks=[check("disjoint", unique)],
        )


@dg.asset(
    dagster_type=Triplets,
    group_name=GROUP,
    code_version="1",
    io_manager_key=BUNDLE,
    ins={
        "triplets": dg.AssetIn(
            partition_mapping=dg.SpecificPartitionsPartitionMapping(list(GUIDELINE_STRATEGIES))
        )
    },
    automation_condition=EAGER,
    check_specs=[dg.AssetCheckSpec("disjoint", asset="training_set")],
)
def training_set(
    context: dg.AssetExecutionContext, mlflow: MlflowTracking, triplets: dict
) -> dg.MaterializeResult:
    """The disjoint union of the six guidelines' triples (training and validation)."""
    parts = triplets if isinstance(triplets, dict) else {GUIDELINE_STRATEGIES[0]: triplets}
    return _union(
        context, mlflow, {k: parts[k] for k in GUIDELINE_STRATEGIES if k in parts}, "guidelines"
    )
