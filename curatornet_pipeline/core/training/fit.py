"""The training stage of one model variant: the function the graph's model assets and
``curatornet reproduce`` both call (:func:`fit`), with the triples it trains on
(:func:`variant_triples`) and the fresh model it starts from (:func:`build_model`)."""

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from curatornet_pipeline.core.experiment.grid import (
    RANDOM_STRATEGY,
    Variant,
    guideline_strategies,
    training_triples,
    triplet_partitions_for,
)
from curatornet_pipeline.core.models import networks as models_core
from curatornet_pipeline.core.sampling.triples import merge_triplets
from curatornet_pipeline.core.training import train as train_core
from curatornet_pipeline.core.types import Triplets


def build_model(
    variant: Variant, features: np.ndarray, n_users: int
) -> models_core.CuratorNet | models_core.VBPR:
    """A fresh model of the variant's kind, its input scaler fitted to ``features``."""
    if variant.kind == "curatornet":
        model = models_core.CuratorNet(models_core.CuratorNetConfig(input_dim=features.shape[1]))
    else:
        model = models_core.VBPR(
            models_core.VBPRConfig(
                n_users=n_users, n_items=len(features), input_dim=features.shape[1]
            )
        )
    model.fit_scaler(features)
    return model


def variant_triples(variant: Variant, parts: Mapping[str, Triplets], seed: int) -> Triplets:
    """The triples ``variant`` trains on, from the partitions :func:`triplet_partitions_for`
    names: the disjoint union of its guidelines, or as many random triples (size-matched)."""
    missing = set(triplet_partitions_for(variant)) - set(parts)
    if missing:
        raise ValueError(f"{variant.name}: triplet partitions {sorted(missing)} were not loaded")
    guided = {s: parts[s] for s in guideline_strategies(variant.kind)}
    union = merge_triplets(guided) if len(guided) > 1 else next(iter(guided.values()))
    return training_triples(variant, union, parts.get(RANDOM_STRATEGY), seed)


def fit(
    variant: Variant,
    triples: Triplets,
    features: np.ndarray,
    n_users: int,
    config: train_core.TrainConfig,
    evaluator: Callable | None = None,
    callback: Callable[[train_core.EpochStats], None] | None = None,
    checkpoint_dir: Path | None = None,
) -> train_core.TrainResult:
    """Train one variant. Seeds the initial weights with ``config.seed``; the
    result's model holds the weights of its best epoch (``config.monitor``)."""
    import torch

    torch.manual_seed(config.seed)  # the initial weights: same inputs, same model version
    model = build_model(variant, features, n_users)
    config = dataclasses.replace(config, l2=variant.l2)
    return train_core.train(
        model, triples, triples, features, config, callback, checkpoint_dir, evaluator=evaluator
    )


def payload(
    result: train_core.TrainResult,
    variant: Variant,
    config: train_core.TrainConfig,
    inputs: Mapping | None = None,
) -> dict:
    """What a trained model asset holds: its weights and what made them (the variant, the
    settings, every epoch, the best one and its validation figures, the inputs' versions)."""
    return models_core.model_payload(
        result.model,
        extra={
            "variant": {**dataclasses.asdict(variant), "name": variant.name},
            "train_config": dataclasses.asdict(config),
            "history": [dataclasses.asdict(h) for h in result.history],
            "best_epoch": result.best_epoch,
            "best_val_accuracy": result.best_val_accuracy,
            "monitor": result.monitor,
            "best_validation": result.best_metrics,
            "inputs": dict(inputs or {}),
        },
    )


def summary(result: train_core.TrainResult, variant: Variant, triples: Triplets) -> dict:
    """The figures a trained variant is shown and compared by."""
    best = result.best_metrics
    return {
        "variant": variant.name,
        "kind": variant.family,
        "l2": variant.l2,
        "sampling": variant.sampling,
        "trained_on": ", ".join(variant.strategies),
        "epochs_run": len(result.history),
        "best_epoch": result.best_epoch,
        "best_val_accuracy": float(result.best_val_accuracy),
        "monitor": result.monitor,
        "best_val_auc": float(best.get("val_auc", float("nan"))),
        "best_val_recall@100": float(best.get("val_recall@100", float("nan"))),
        "triples_per_second": float(result.triples_per_second),
        "training_triples": int((~triples.is_validation).sum()),
    }


def weights_finite(model_payload: dict) -> bool:
    """Whether every weight of a payload is a finite number."""
    import torch

    return all(bool(torch.isfinite(v).all()) for v in model_payload["state_dict"].values())
