"""Train/test split and triple sampling, one partition per strategy."""

import dataclasses

import dagster as dg
import numpy as np
import pandas as pd

from curatornet_pipeline.core.data.catalogue import Catalogue
from curatornet_pipeline.core.evaluation.report import markdown_table
from curatornet_pipeline.core.sampling import checks as checks_core
from curatornet_pipeline.core.sampling import context as sampling_context
from curatornet_pipeline.core.sampling import strategies as strategies_core
from curatornet_pipeline.core.sampling import triples as sampling_core
from curatornet_pipeline.core.split import baskets as split_core
from curatornet_pipeline.core.split import validation as validation_core
from curatornet_pipeline.core.types import (
    STRATEGIES,
    STRATEGY_INFO,
    ItemVectors,
    TrainTestSplit,
    Triplets,
)
from curatornet_pipeline.defs.automation import ON_DATA_CHANGE
from curatornet_pipeline.defs.common import check, finish, upstream_versions
from curatornet_pipeline.defs.resources import PipelineSettings
from curatornet_pipeline.defs.tracking import MlflowTracking
from curatornet_pipeline.defs.versioning import source_hash

GROUP = "sampling"
BUNDLE = "bundle_io_manager"
strategy_partitions = dg.StaticPartitionsDefinition(list(STRATEGIES))


def _triplets_check(name: str, description: str, blocking: bool = False) -> dg.AssetCheckSpec:
    """A check of one ``triplets`` partition; each result names its strategy partition in
    its description and metadata (:func:`_result`).

    Not a partitioned check (``AssetCheckSpec(partitions_def=...)``, a preview in Dagster
    1.13): with it, a failed blocking check on one strategy no longer kept the automation
    from requesting the models that read it (``tests/test_pipeline.py::
    test_failing_blocking_check_stops_the_models``)."""
    return dg.AssetCheckSpec(
        name,
        asset="triplets",
        blocking=blocking,
        description=f"{description} Each result names its strategy partition.",
    )


def _result(name: str, passed: bool, strategy: str, severity: str = "ERROR", **metadata):
    """A check result of the ``strategy`` partition of ``triplets``, saying so."""
    return check(name, passed, severity, f"partition {strategy}", partition=strategy, **metadata)


@dg.asset(
    dagster_type=TrainTestSplit,
    group_name=GROUP,
    code_version=source_hash(split_core),
    io_manager_key=BUNDLE,
)
def train_test_split(
    context: dg.AssetExecutionContext,
    mlflow: MlflowTracking,
    purchases: pd.DataFrame,
    catalogue: Catalogue,
) -> dg.MaterializeResult:
    """Baskets per user; the last basket of every user with two or more is hidden for testing."""
    upstream = upstream_versions(context)
    with mlflow.run_for(context, params={"rule": "last basket of users with >= 2 baskets"}) as run:
        split = split_core.split_train_test(purchases, catalogue.ids)
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
        )


@dg.asset(
    dagster_type=TrainTestSplit,
    group_name=GROUP,
    code_version=source_hash(validation_core.holdout_validation),
    io_manager_key=BUNDLE,
    automation_condition=ON_DATA_CHANGE,
)
def validation_split(
    context: dg.AssetExecutionContext,
    pipeline: PipelineSettings,
    mlflow: MlflowTracking,
    train_test_split: TrainTestSplit,
) -> dg.MaterializeResult:
    """The last training basket of users with enough training baskets, held out for validation.

    Its training baskets are what triples are sampled from (the held-out ones feed no
    triple); its ``test_*`` arrays are the held-out baskets, ranked after every epoch like
    the test set (``core/split/validation.py``) to choose the best epoch, stop early and pick the
    champion's weight decay.
    """
    config = pipeline.build("validation")
    upstream = upstream_versions(context)
    with mlflow.run_for(context, params=dataclasses.asdict(config)) as run:
        _, held_out = validation_core.holdout_validation(train_test_split, config)
        info = held_out.meta["validation_of"]
        return finish(
            context,
            run,
            held_out,
            upstream=upstream,
            metadata={
                "validation_users": info["validation_users"],
                "validation_purchases": info["validation_purchases"],
                "training_baskets_left": len(held_out.basket_timestamps),
                "config": dg.MetadataValue.json(dataclasses.asdict(config)),
            },
        )


@dg.asset(
    dagster_type=Triplets,
    group_name=GROUP,
    code_version=source_hash(sampling_core, strategies_core, sampling_context, checks_core),
    io_manager_key=BUNDLE,
    partitions_def=strategy_partitions,
    automation_condition=ON_DATA_CHANGE,
    check_specs=[
        _triplets_check(
            "strategy_invariants",
            "Every triple obeys its guideline's definition (positive in or out of the profile, "
            "negative outside it, artist and cluster conditions).",
            blocking=True,
        ),
        _triplets_check(
            "no_hidden_basket_items",
            "Leakage: no test-basket item of its user appears in a profile or as a positive. "
            "Blocks training.",
            blocking=True,
        ),
        _triplets_check(
            "no_validation_basket_items",
            "Leakage: no held-out validation item of its user appears in a profile or as a "
            "positive, so the validation ranking is honest. Blocks training.",
            blocking=True,
        ),
        _triplets_check(
            "target_reached", "WARN when the strategy produced under 90% of the requested triples."
        ),
    ],
)
def triplets(
    context: dg.AssetExecutionContext,
    pipeline: PipelineSettings,
    mlflow: MlflowTracking,
    train_test_split: TrainTestSplit,
    validation_split: TrainTestSplit,
    catalogue: Catalogue,
    pca_embeddings: ItemVectors,
) -> dg.MaterializeResult:
    """Training triples of one sampling strategy (the paper's guidelines, or random), drawn
    from the training baskets left after the validation hold-out."""
    strategy = context.partition_key
    config = pipeline.build("sampling")
    upstream = upstream_versions(context)
    params = {**dataclasses.asdict(config), **STRATEGY_INFO[strategy].params()}
    with mlflow.run_for(context, params=params) as run:
        ctx = sampling_core.catalogue_context(
            validation_core.training_split(train_test_split, validation_split),
            catalogue,
            pca_embeddings,
            config,
        )
        result: Triplets = sampling_core.sample_strategy(ctx, strategy, config)
        violations = checks_core.verify_strategy(result, ctx, strategy)
        leaks = checks_core.hidden_item_leaks(result, train_test_split)
        validation_leaks = checks_core.hidden_item_leaks(result, validation_split)
        meta = result.meta
        hist = sampling_core.profile_size_histogram(result, training_only=False)
        hist_df = pd.DataFrame({"profile_size": list(hist), "triples": list(hist.values())})
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
                _result(
                    "strategy_invariants", not violations, strategy, violations=violations[:10]
                ),
                _result("no_hidden_basket_items", leaks == 0, strategy, leaks=leaks),
                _result(
                    "no_validation_basket_items",
                    validation_leaks == 0,
                    strategy,
                    leaks=validation_leaks,
                ),
                _result(
                    "target_reached",
                    produced >= 0.9 * target,
                    strategy,
                    severity="WARN",
                    produced=produced,
                    target=target,
                ),
            ],
        )
