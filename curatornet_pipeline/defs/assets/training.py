"""Trained models, one partition per variant (model kind x L2 weight x sampling)."""

import dataclasses
import time
from dataclasses import dataclass

import dagster as dg
import numpy as np
import torch

from curatornet_pipeline import settings
from curatornet_pipeline.core import experiment
from curatornet_pipeline.core import models as models_core
from curatornet_pipeline.core import train as train_core
from curatornet_pipeline.core.plots import training_curve
from curatornet_pipeline.core.types import ItemVectors, TrainTestSplit, Triplets
from curatornet_pipeline.defs.automation import EAGER
from curatornet_pipeline.defs.common import check, finish, upstream_versions
from curatornet_pipeline.defs.resources import PROFILES, PipelineSettings
from curatornet_pipeline.defs.tracking import MlflowTracking, register_version

GROUP = "models"

#: VBPR has one vector per real user and no notion of baskets: of the
#: guidelines it uses the real-user, basket-free ones (paper, Figure 3).
VBPR_STRATEGIES = experiment.VBPR_GUIDELINES  # the paper's guidelines 4 and 3


@dataclass(frozen=True)
class Variant:
    """One trained model of Table 2 or Figure 3."""

    name: str  # partition key, e.g. "curatornet-l0.0001"
    kind: str  # "curatornet" | "vbpr"
    l2: float  # weight decay lambda
    sampling: str  # "guidelines" | "random"


def variants(profile: str | None = None) -> dict[str, Variant]:
    """The model variants of a settings profile (configuration, not code)."""
    spec = PROFILES[profile or settings.run_profile()]["models"]
    out: list[Variant] = []
    for kind in ("curatornet", "vbpr"):
        for l2 in spec[f"{kind}_l2"]:
            out.append(Variant(f"{kind}-l{l2:g}", kind, float(l2), "guidelines"))
        out.append(Variant(f"{kind}-random", kind, float(spec["ablation_l2"]), "random"))
    return {v.name: v for v in out}


model_partitions = dg.StaticPartitionsDefinition(list(variants()))


def _build(variant: Variant, features: np.ndarray, n_users: int) -> models_core.CuratorNet:
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


@dg.asset(
    dagster_type=dg.Any,
    group_name=GROUP,
    code_version="1",
    io_manager_key="model_io_manager",
    partitions_def=model_partitions,
    automation_condition=EAGER,
    ins={
        "training_set": dg.AssetIn(),
        "random_triplets": dg.AssetIn(
            "triplets", partition_mapping=dg.SpecificPartitionsPartitionMapping(["random"])
        ),
    },
    check_specs=[
        dg.AssetCheckSpec("weights_finite", asset="models"),
        dg.AssetCheckSpec("learned_something", asset="models"),
    ],
)
def models(
    context: dg.AssetExecutionContext,
    pipeline: PipelineSettings,
    mlflow: MlflowTracking,
    training_set: Triplets,
    random_triplets: Triplets,
    item_embeddings: ItemVectors,
    train_test_split: TrainTestSplit,
) -> dg.MaterializeResult:
    """CuratorNet or VBPR trained on the guidelines' triples (or on random triples)."""
    variant = variants()[context.partition_key]
    config = dataclasses.replace(pipeline.build("train", train_core.TrainConfig), l2=variant.l2)
    # guideline variants: their guidelines; random variants: as many random triples
    triples = experiment.training_triples(variant, training_set, random_triplets, config.seed)
    features = item_embeddings.vectors
    upstream = upstream_versions(context)
    params = {
        **dataclasses.asdict(config),
        **dataclasses.asdict(variant),
        "paper_guidelines": experiment.paper_guidelines_of(variant),
        "training_triples": experiment.training_counts(triples, variant.kind == "vbpr")[0],
    }
    checkpoints = settings.home_dir() / "checkpoints" / context.run.run_id / variant.name
    with mlflow.run_for(context, params=params, tags={"model_kind": variant.kind}) as run:
        torch.manual_seed(config.seed)  # the initial weights: same inputs, same model version
        model = _build(variant, features, len(train_test_split.user_ids))

        def on_epoch(stats: train_core.EpochStats) -> None:
            row = dataclasses.asdict(stats)
            run.log_metrics(
                {k: v for k, v in row.items() if k not in ("epoch", "improved")}, step=stats.epoch
            )
            context.log.info(
                f"{variant.name} epoch {stats.epoch}: loss {stats.loss:.4f} "
                f"val acc {stats.val_accuracy:.4f} ({stats.triples_per_second:.0f}/s)"
            )

        start = time.perf_counter()
        result = train_core.train(
            model, triples, triples, features, config, callback=on_epoch, checkpoint_dir=checkpoints
        )
        history = [dataclasses.asdict(h) for h in result.history]
        payload = models_core.model_payload(
            result.model,
            extra={
                "variant": dataclasses.asdict(variant),
                "train_config": dataclasses.asdict(config),
                "history": history,
                "best_epoch": result.best_epoch,
                "best_val_accuracy": result.best_val_accuracy,
                "inputs": upstream,
            },
        )
        finite = all(bool(np.isfinite(v.numpy()).all()) for v in payload["state_dict"].values())
        curve = training_curve(history, f"{variant.name}")
        mat = finish(
            context,
            run,
            payload,
            upstream=upstream,
            version_of={k: v.numpy() for k, v in payload["state_dict"].items()},
            metadata={
                "kind": variant.kind,
                "l2": variant.l2,
                "sampling": variant.sampling,
                "epochs_run": len(history),
                "best_epoch": result.best_epoch,
                "best_val_accuracy": float(result.best_val_accuracy),
                "training_seconds": float(time.perf_counter() - start),
                "triples_per_second": float(result.triples_per_second),
                "training_triples": int((~triples.is_validation).sum()),
            },
            figures={"training_curve": curve},
            checks=[
                check("weights_finite", finite),
                check(
                    "learned_something",
                    result.best_val_accuracy > 0.5,
                    severity="WARN",
                    best_val_accuracy=float(result.best_val_accuracy),
                ),
            ],
        )
        model_file = checkpoints / "model.pt"
        models_core.save_model(model_file, result.model, payload["extra"])
        run.log_file(model_file, "model")
        if variant.sampling == "guidelines":
            version, promoted = register_version(
                run,
                variant.kind,
                "model/model.pt",
                "best_val_accuracy",
                float(result.best_val_accuracy),
            )
            context.log.info(f"registered {variant.kind} v{version}; champion: {promoted}")
        return mat
