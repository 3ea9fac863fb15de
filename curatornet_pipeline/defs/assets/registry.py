"""The registered model: the best CuratorNet of the report, as a pyfunc, and the champion rule."""

import dataclasses
import math
import tempfile
from pathlib import Path

import dagster as dg
import pandas as pd

from curatornet_pipeline import registry
from curatornet_pipeline.core.data.catalogue import Catalogue
from curatornet_pipeline.core.evaluation import evaluate as eval_core
from curatornet_pipeline.core.evaluation import report as report_core
from curatornet_pipeline.core.experiment import grid as experiment
from curatornet_pipeline.core.models import networks as models_core
from curatornet_pipeline.core.models.scorers import CuratorNetScorer
from curatornet_pipeline.core.types import TrainTestSplit
from curatornet_pipeline.defs.automation import ON_DATA_CHANGE
from curatornet_pipeline.defs.common import check, finish, upstream_versions
from curatornet_pipeline.defs.resources import PipelineSettings
from curatornet_pipeline.defs.tracking import MlflowTracking
from curatornet_pipeline.defs.versioning import source_hash

GROUP = "models"


def _variant(partition: str) -> experiment.Variant:
    return experiment.guideline_variant("curatornet", experiment.l2_from_key(partition))


def _test_auc(report: pd.DataFrame, protocol: str, partition: str) -> float:
    name = _variant(partition).label
    rows = report[(report["protocol"] == protocol) & (report["method"] == name)]
    if rows.empty:
        raise ValueError(f"evaluation_report has no rows for {name} ({protocol})")
    return float(rows[registry.METRIC].mean())


def _champion_weights(client, version, folder: Path) -> Path | None:
    """The champion's model file: the pyfunc's weights (or an older bare ``model/model.pt``)."""
    from mlflow.exceptions import MlflowException

    for path in (f"{registry.ARTIFACT_DIR}/artifacts", "model"):
        try:
            local = Path(client.download_artifacts(version.run_id, path, str(folder)))
        except (MlflowException, OSError):
            continue
        files = sorted(local.glob("*.pt"))
        if files:
            return files[0]
    return None


@dg.asset(
    dagster_type=pd.DataFrame,
    group_name=GROUP,
    code_version=source_hash(registry, eval_core.evaluate),
    automation_condition=ON_DATA_CHANGE,
    check_specs=[
        dg.AssetCheckSpec(
            "alias_matches_run_tags",
            asset="champion",
            description="Exactly one MLflow run carries champion=True: the alias's version's run.",
        )
    ],
)
def champion(
    context: dg.AssetExecutionContext,
    pipeline: PipelineSettings,
    mlflow: MlflowTracking,
    evaluation_report: pd.DataFrame,
    curatornet_models: dict,
    catalogue: Catalogue,
    train_test_split: TrainTestSplit,
) -> dg.MaterializeResult:
    """Registers the CuratorNet whose weight decay ranks the validation baskets best (the
    test set chooses nothing); it becomes champion only if it beats the current one
    re-scored on the same test split, the deployment gate."""
    from curatornet_pipeline.mlflow_model import log_recommender

    models = curatornet_models
    if "state_dict" in models:  # a single partition loads as the payload itself
        models = {context.asset_partition_keys_for_input("curatornet_models")[0]: models}
    config = pipeline.build("evaluation")
    upstream = upstream_versions(context)
    scores = {n: _test_auc(evaluation_report, config.protocol, n) for n in models}
    validation = {n: experiment.validation_auc(payload) for n, payload in models.items()}
    # selection on validation AUC; models trained before the validation hold-out have none
    chooser = scores if any(math.isnan(v) for v in validation.values()) else validation
    best = max(chooser, key=chooser.__getitem__)
    trained = upstream.get(f"curatornet_models[{best}]", {})
    variant = _variant(best)
    client = mlflow.client
    selected_on = "val_auc" if chooser is validation else f"test {registry.METRIC}"
    selection = registry.Selection(
        chosen=best, scores=chooser, selected_on=selected_on, label=variant.label
    )
    with mlflow.run_for(
        context,
        params={
            "metric": registry.METRIC,
            "selected_on": selected_on,
            **dataclasses.asdict(config),
        },
    ) as run:
        registry.ensure_registered_model(client)
        version = registry.find_version(
            client, registry.MODEL_NAME, trained.get("data_version", "")
        )
        if version is None:
            with tempfile.TemporaryDirectory() as tmp:
                model_file = Path(tmp) / "model.pt"
                net, extra = models_core.model_from_payload(models[best])
                models_core.save_model(model_file, net, extra)
                source = log_recommender(
                    client, trained["mlflow_run_id"], model_file, catalogue, catalogue.ids[:2]
                )
            version = client.create_model_version(
                registry.MODEL_NAME,
                source,
                run_id=trained["mlflow_run_id"],
                tags={
                    "variant": variant.name,
                    "lambda": f"{variant.l2:g}",
                    "sampling": variant.sampling,
                    "model_kind": variant.family,
                    "dagster.asset_key": "curatornet_models",
                    "dagster.partition_key": best,
                    "dagster.run_id": trained.get("dagster_run_id", ""),
                    "data_version": trained.get("data_version", ""),
                },
            )
        timeline = report_core.timeline(catalogue)
        features = catalogue.features

        def score_version(mv) -> float | None:
            with tempfile.TemporaryDirectory() as tmp:
                path = _champion_weights(client, mv, Path(tmp))
                if path is None:
                    return None
                net, _ = models_core.load_model(path)
            if net.kind != "curatornet" or net.config.input_dim != features.shape[1]:
                return None
            scorer = CuratorNetScorer(net, features)
            result = eval_core.evaluate(scorer, train_test_split, config, timeline)
            return float(result.summary[registry.METRIC][0])

        decision = registry.apply_rule(
            client,
            version,
            scores[best],
            score_version,
            protocol=config.protocol,
            extra_tags={"evaluated_by_dagster_run": context.run.run_id},
            selection=selection,
        )
        client.set_tag(trained["mlflow_run_id"], "registered_version", version.version)
        holder = registry.current_champion(client)
        flagged = registry.champion_runs(client)
        consistent = [r.info.run_id for r in flagged] == ([holder.run_id] if holder else [])
        context.log.info(
            f"{registry.MODEL_NAME} v{version.version} ({variant.name}): {decision.reason}"
        )
        table = pd.DataFrame(
            [
                {
                    "version": str(version.version),
                    "variant": variant.name,
                    "val_auc": validation[best],
                    "test_auc": decision.candidate,
                    "champion_version": decision.champion_version or "",
                    "champion_test_auc": float("nan")
                    if decision.champion is None
                    else decision.champion,
                    "promoted": decision.promote,
                    "champion_now": str(holder.version) if holder else "",
                }
            ]
        )
        return finish(
            context,
            run,
            table,
            upstream=upstream,
            metadata={
                "registered_version": dg.MetadataValue.text(str(version.version)),
                "variant": variant.name,
                "selected_on": selected_on,
                "validation_auc": dg.MetadataValue.json(validation),
                "val_auc": validation[best],
                "test_auc": decision.candidate,
                "decision": dg.MetadataValue.md(
                    registry.describe(decision, selection, config.protocol)
                ),
                "champion_version": dg.MetadataValue.text(str(holder.version) if holder else ""),
            },
            checks=[check("alias_matches_run_tags", consistent)],
        )
