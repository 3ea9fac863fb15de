"""Trained models: CuratorNet and VBPR per weight decay on the guidelines, and on random triples.

Three assets, so that each reads exactly the triplet partitions it trains on:

- ``curatornet_models``: one partition per weight decay (Table 2), the six guidelines;
- ``vbpr_models``: one partition per weight decay, the two guidelines VBPR can use;
- ``random_sampling_models``: each family once, on uniformly sampled triples (Figure 3).

The weight-decay partitions are dynamic: the grid is data (the ``models``
settings), added to the instance by ``curatornet run`` or by hand in the UI.
"""

import dataclasses
import os
import time

import dagster as dg

from curatornet_pipeline.core.data.catalogue import Catalogue
from curatornet_pipeline.core.evaluation.plots import training_curve
from curatornet_pipeline.core.evaluation.report import timeline
from curatornet_pipeline.core.experiment import grid as experiment
from curatornet_pipeline.core.models import networks as models_core
from curatornet_pipeline.core.sampling import triples as sampling_core
from curatornet_pipeline.core.split import validation as validation_core
from curatornet_pipeline.core.training import batching as batching_core
from curatornet_pipeline.core.training import fit as fit_core
from curatornet_pipeline.core.training import train as train_core
from curatornet_pipeline.core.types import TrainTestSplit, Triplets
from curatornet_pipeline.defs import crash
from curatornet_pipeline.defs.automation import ON_DATA_CHANGE
from curatornet_pipeline.defs.common import check, finish, upstream_versions
from curatornet_pipeline.defs.executors import ComputeResource
from curatornet_pipeline.defs.io_managers import ArtifactStorage
from curatornet_pipeline.defs.resources import PipelineSettings
from curatornet_pipeline.defs.tracking import MlflowTracking
from curatornet_pipeline.defs.versioning import source_hash
from curatornet_pipeline.kernels import gemm_backend
from curatornet_pipeline.kernels import kernels as cpu_kernels

GROUP = "models"
MODEL_IO = "model_io_manager"

curatornet_variants = dg.DynamicPartitionsDefinition(name="curatornet_variants")
vbpr_variants = dg.DynamicPartitionsDefinition(name="vbpr_variants")
random_sampling_families = dg.StaticPartitionsDefinition(list(experiment.FAMILY_STRATEGIES))
PARTITIONS = {"curatornet": curatornet_variants, "vbpr": vbpr_variants}
#: A random-sampling model reads the ``random`` partition and, for its size, the guideline
#: partitions of the model it is compared with (size-matched ablation, Figure 3).
RANDOM_SAMPLING_MAPPING = dg.StaticPartitionMapping(
    {
        strategy: [
            f
            for f in experiment.KINDS
            if strategy
            in experiment.triplet_partitions_for(
                experiment.random_variant(f, experiment.ModelGrid())
            )
        ]
        for strategy in (experiment.RANDOM_STRATEGY, *experiment.GUIDELINE_STRATEGIES)
    }
)

CODE_VERSION = source_hash(
    models_core,
    train_core,
    batching_core,
    experiment,
    fit_core,
    sampling_core.merge_triplets,
    validation_core,
)
#: A crash (killed worker, lost node) is worth a retry: training resumes from its checkpoint.
RETRY = dg.RetryPolicy(max_retries=1, delay=5)


def add_grid_partitions(instance: dg.DagsterInstance, grid: experiment.ModelGrid) -> None:
    """Register the grid's weight decays as partitions (existing ones are kept)."""
    for family, partitions in PARTITIONS.items():
        keys = [experiment.l2_key(l2) for l2 in grid.l2_grid(family)]
        missing = [k for k in keys if not instance.has_dynamic_partition(partitions.name, k)]
        if missing:
            instance.add_dynamic_partitions(partitions.name, missing)


def _checks(asset: str) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            "weights_finite",
            asset=asset,
            blocking=True,
            description="Every weight is finite; a diverged model stops evaluation.",
        ),
        dg.AssetCheckSpec(
            "beats_chance",
            asset=asset,
            description="WARN when the validation AUC of the held-out baskets is not above "
            "0.5: the model ranks them no better than chance.",
        ),
    ]


def _params(pipeline: PipelineSettings, variant, config, triples, key: str) -> dict:
    """The MLflow params of a training run: settings, variant, and the machine's kernels."""
    return {
        **dataclasses.asdict(config),
        **dataclasses.asdict(variant),
        "checkpoint_key": key,
        "profile": pipeline.profile,
        "paper_guidelines": experiment.paper_guidelines_of(variant),
        "training_triples": experiment.training_counts(triples, variant.kind == "vbpr")[0],
        "cpu_gemm": gemm_backend(),  # the float32 CPU products' backend (kernels/gemm.py)
        "cpu_kernels": cpu_kernels(),  # pooling and margins: fused or torch (kernels/fused.py)
        # idle OpenMP workers' spin, set by the package before torch loads (its __init__)
        "openmp_spincount": os.environ.get("GOMP_SPINCOUNT", "runtime default"),
    }


def _epoch_logger(context: dg.AssetExecutionContext, run, name: str):
    """Each epoch's figures to the MLflow run (step = epoch) and one line to the Dagster log."""

    def on_epoch(stats: train_core.EpochStats) -> None:
        row = dataclasses.asdict(stats)
        row.update(row.pop("metrics"))  # the evaluator's figures, flat
        run.log_metrics(
            {k: v for k, v in row.items() if k not in ("epoch", "improved")}, step=stats.epoch
        )
        context.log.info(
            f"{name} epoch {stats.epoch}: loss {stats.loss:.4f} "
            f"val AUC {stats.metrics.get('val_auc', float('nan')):.4f} "
            f"val acc {stats.val_accuracy:.4f} ({stats.triples_per_second:.0f}/s)"
        )

    return on_epoch


def train_variant(
    context: dg.AssetExecutionContext,
    pipeline: PipelineSettings,
    mlflow: MlflowTracking,
    storage: ArtifactStorage,
    variant: experiment.Variant,
    triplets: Triplets | dict[str, Triplets],
    catalogue: Catalogue,
    validation_split: TrainTestSplit,
) -> dg.MaterializeResult:
    """Train one variant on the triplet partitions it reads (core/training/fit.py); resume from its
    checkpoint. ``val_auc`` of the held-out baskets picks the best epoch and drives early
    stopping (``train.monitor``), and the champion compares it."""
    parts = triplets if isinstance(triplets, dict) else {variant.strategies[0]: triplets}
    config = dataclasses.replace(pipeline.build("train"), l2=variant.l2)
    validation_config = pipeline.build("validation")
    triples = fit_core.variant_triples(variant, parts, config.seed)
    upstream = upstream_versions(context)
    settings = {**dataclasses.asdict(config), "validation": dataclasses.asdict(validation_config)}
    key = crash.checkpoint_key(upstream, settings, CODE_VERSION)
    checkpoints = storage.checkpoint_dir(context, key)
    crash.end_orphaned_mlflow_runs(mlflow, context)
    params = _params(pipeline, variant, config, triples, key)
    with mlflow.run_for(context, params=params, tags={"model_kind": variant.family}) as run:
        evaluator = validation_core.make_evaluator(
            validation_split, catalogue.features, validation_config, timeline(catalogue)
        )
        resumed_from = crash.checkpoint_epochs(checkpoints / train_core.CHECKPOINT_NAME)
        if resumed_from:  # only a run that resumed says so
            context.log.info(f"{variant.name}: resuming after epoch {resumed_from}")
            run.set_tags({"resumed_from_epoch": str(resumed_from + 1)})
        start = time.perf_counter()
        try:
            result = fit_core.fit(
                variant, triples, catalogue.features, len(validation_split.user_ids), config,
                evaluator, _epoch_logger(context, run, variant.name), checkpoints,
            )  # fmt: skip
        except (KeyboardInterrupt, dg.DagsterExecutionInterruptedError) as exc:
            # a cancel (Dagster interrupts the step), not a crash: RETRY is not for it
            raise dg.Failure(
                f"{variant.name}: training canceled; its checkpoint stays for the next run",
                allow_retries=False,
            ) from exc
        model = fit_core.payload(result, variant, config, upstream)
        summary = fit_core.summary(result, variant, triples)
        mat = finish(
            context, run, model, upstream=upstream, storage=storage,
            version_of={k: v.numpy() for k, v in model["state_dict"].items()},
            metadata={**summary, "training_seconds": float(time.perf_counter() - start)},
            figures={"training_curve": training_curve(model["extra"]["history"], variant.name)},
            checks=[
                check("weights_finite", fit_core.weights_finite(model)),
                check("beats_chance", summary["best_val_auc"] > 0.5, severity="WARN",
                      best_val_auc=summary["best_val_auc"]),
            ],
        )  # fmt: skip
        model_file = storage.scratch_file(context, "model.pt")
        models_core.save_model(model_file, result.model, model["extra"])
        run.log_file(model_file, "model")
        # registration (pyfunc) and the champion rule: the `champion` asset (assets/registry.py)
    storage.clean_checkpoints(context)
    return mat


def _model_asset(name: str, partitions_def, mapping, description: str, variant_of):
    """A training asset; ``variant_of(partition key, settings)`` names the variant it trains."""

    @dg.asset(
        name=name,
        dagster_type=dg.Any,
        group_name=GROUP,
        code_version=CODE_VERSION,
        io_manager_key=MODEL_IO,
        partitions_def=partitions_def,
        automation_condition=ON_DATA_CHANGE,
        retry_policy=RETRY,
        ins={"triplets": dg.AssetIn(partition_mapping=mapping)},
        check_specs=_checks(name),
        description=description,
    )
    def _asset(
        context: dg.AssetExecutionContext,
        pipeline: PipelineSettings,
        mlflow: MlflowTracking,
        compute: ComputeResource,  # sets torch threads to the step budget
        storage: ArtifactStorage,
        triplets: dict,
        catalogue: Catalogue,
        validation_split: TrainTestSplit,
    ) -> dg.MaterializeResult:
        variant = variant_of(context.partition_key, pipeline)
        return train_variant(
            context, pipeline, mlflow, storage, variant, triplets, catalogue, validation_split
        )

    return _asset


def _guideline_asset(family: str):
    strategies = experiment.FAMILY_STRATEGIES[family]
    return _model_asset(
        f"{family}_models",
        PARTITIONS[family],
        dg.SpecificPartitionsPartitionMapping(list(strategies)),
        f"{experiment.FAMILY_LABELS[family]} trained on the triples of "
        f"{', '.join(strategies)}; one partition per weight decay (Table 2).",
        lambda key, _: experiment.guideline_variant(family, experiment.l2_from_key(key)),
    )


curatornet_models = _guideline_asset("curatornet")
vbpr_models = _guideline_asset("vbpr")
random_sampling_models = _model_asset(
    "random_sampling_models",
    random_sampling_families,
    RANDOM_SAMPLING_MAPPING,
    "CuratorNet and VBPR on uniformly sampled triples, at the ablation's weight decay (Fig. 3).",
    lambda key, pipeline: experiment.random_variant(key, pipeline.grid()),
)
