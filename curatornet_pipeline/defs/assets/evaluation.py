"""Evaluation: the paper's Table 2 on both candidate protocols, and Figure 3's ablation."""

import dataclasses
import json

import dagster as dg
import pandas as pd

from curatornet_pipeline.core.data.catalogue import Catalogue
from curatornet_pipeline.core.evaluation import evaluate as eval_core
from curatornet_pipeline.core.evaluation import report as report_core
from curatornet_pipeline.core.evaluation.report import markdown_table
from curatornet_pipeline.core.experiment import grid as experiment
from curatornet_pipeline.core.types import TrainTestSplit
from curatornet_pipeline.defs import presentation
from curatornet_pipeline.defs.automation import ON_DATA_CHANGE
from curatornet_pipeline.defs.common import check, finish, upstream_versions
from curatornet_pipeline.defs.executors import ComputeResource
from curatornet_pipeline.defs.io_managers import ArtifactStorage
from curatornet_pipeline.defs.resources import PipelineSettings
from curatornet_pipeline.defs.tracking import MlflowTracking, TrackedRun
from curatornet_pipeline.defs.versioning import source_hash

GROUP = "evaluation"


def models_by_label(*inputs: dict | object) -> dict[str, dict]:
    """Model payloads of every (partitioned) model input, keyed by their Table 2 label."""
    out = {}
    for value in inputs:
        payloads = (
            value.values() if isinstance(value, dict) and "state_dict" not in value else [value]
        )
        for payload in payloads:
            v = payload["extra"]["variant"]
            variant = experiment.Variant(v["name"], v["kind"], float(v["l2"]), v["sampling"])
            out[variant.label] = payload
    return out


def _log_to_model_runs(mlflow: MlflowTracking, upstream: dict, tables: dict, grid) -> None:
    """Each model's test metrics also go to the MLflow run that trained it."""
    for key, info in upstream.items():
        label = experiment.label_of(key, grid)
        if label is None or not info.get("mlflow_run_id"):
            continue
        tracked = TrackedRun(
            mlflow.client, info["mlflow_run_id"], mlflow.experiment_id, mlflow.resolved_ui_url()
        )
        for protocol, df in tables.items():
            if label in df.index:
                tracked.log_metrics(
                    {
                        f"test_{protocol}.{m}": float(v)
                        for m, v in df.loc[label].items()
                        if not m.endswith("_se") and m != "n_users"
                    }
                )


@dg.asset(
    dagster_type=pd.DataFrame,
    group_name=GROUP,
    code_version=source_hash(report_core, eval_core),
    automation_condition=ON_DATA_CHANGE,
    check_specs=[
        dg.AssetCheckSpec(
            "oracle_is_perfect",
            asset="evaluation_report",
            description="The Oracle (knows the hidden baskets) must score AUC = nDCG = 1 and "
            "full recall at the largest k: anything else is a bug in the metrics or the split.",
        ),
        dg.AssetCheckSpec(
            "random_near_half_auc",
            asset="evaluation_report",
            description="The Random scorer's AUC must be 0.5 within 4 standard errors.",
        ),
    ],
)
def evaluation_report(
    context: dg.AssetExecutionContext,
    pipeline: PipelineSettings,
    mlflow: MlflowTracking,
    compute: ComputeResource,  # sets torch threads to the step budget
    storage: ArtifactStorage,
    curatornet_models: dict,
    vbpr_models: dict,
    random_sampling_models: dict,
    catalogue: Catalogue,
    train_test_split: TrainTestSplit,
) -> dg.MaterializeResult:
    """Table 2: every model variant, VisRank, Random and Oracle on both candidate protocols."""
    config = pipeline.build("evaluation")
    upstream = upstream_versions(context)
    models = models_by_label(curatornet_models, vbpr_models, random_sampling_models)
    with mlflow.run_for(context, params=dataclasses.asdict(config)) as run:
        methods = report_core.build_scorers(models, catalogue.features, train_test_split)
        result = report_core.table2(
            methods, train_test_split, config, report_core.timeline(catalogue)
        )
        files = {}
        for protocol, table in result.tables.items():
            for ext, text in (("csv", table.to_csv()), ("md", result.markdown[protocol])):
                name = f"reports/table2_{protocol}.{ext}"
                files[name] = storage.write_text(name, text)
                run.log_text(text, name)
        primary = result.tables[config.protocol]
        storage.write_text("reports/table2.md", result.markdown[config.protocol])
        _log_to_model_runs(mlflow, upstream, result.tables, pipeline.grid())
        wrong = report_core.oracle_failures(primary, config.ks)
        rand = primary.loc[report_core.REFERENCES["random"]]
        near_half = abs(rand["auc"] - 0.5) <= max(0.05, 4 * rand["auc_se"])
        metrics = {
            f"{method}.{m}": float(v)
            for method, row in primary.to_dict(orient="index").items()
            for m, v in row.items()
            if isinstance(v, float | int) and not m.endswith("_se")
        }
        return finish(
            context,
            run,
            result.per_user,
            upstream=upstream,
            version_of=primary,
            run_link_inline=False,  # Table 2 fits a laptop's screen (common.finish)
            metadata={
                "protocol": config.protocol,
                "ndcg": config.ndcg,
                "test_users": int(primary["n_users"].max()),
                "profile": pipeline.profile,
                **presentation.report_metadata(
                    context.instance,
                    result.tables,
                    upstream,
                    lambda key: experiment.label_of(key, pipeline.grid()),
                    mlflow.experiment_id,
                ),
            },
            metrics=metrics,
            checks=[
                check("oracle_is_perfect", not wrong, imperfect=wrong),
                check("random_near_half_auc", near_half, auc=float(rand["auc"])),
            ],
        )


@dg.asset(
    dagster_type=pd.DataFrame,
    group_name=GROUP,
    code_version=source_hash(report_core.ablation, eval_core.paired_comparison),
    automation_condition=ON_DATA_CHANGE,
    check_specs=[
        dg.AssetCheckSpec(
            "both_families_compared",
            asset="sampling_ablation",
            description="Both CuratorNet and VBPR have a guideline and a random-sampling model "
            "at the ablation's weight decay.",
        )
    ],
)
def sampling_ablation(
    context: dg.AssetExecutionContext,
    pipeline: PipelineSettings,
    mlflow: MlflowTracking,
    storage: ArtifactStorage,
    evaluation_report: pd.DataFrame,
) -> dg.MaterializeResult:
    """Figure 3: guidelines vs uniform random sampling, per-user AUC, paired t-tests."""
    grid = pipeline.grid()
    upstream = upstream_versions(context)
    with mlflow.run_for(context, params={"l2": grid.ablation_l2}) as run:
        protocols = tuple(
            p for p in report_core.PROTOCOLS if p in set(evaluation_report["protocol"])
        )
        tests, pairs = report_core.ablation(evaluation_report, grid, protocols)
        figures = {
            f"sampling_ablation_{p}": eval_core.ablation_figure(pairs[p])
            for p in protocols
            if pairs[p]
        }
        families = sorted(set(tests["model"])) if len(tests) else []
        return finish(
            context,
            run,
            tests,
            upstream=upstream,
            metadata={
                "protocols": ", ".join(protocols),
                "tests": dg.MetadataValue.json(json.loads(tests.to_json(orient="records"))),
            },
            metrics={
                f"{r['model']}.{r['protocol']}.{k}": float(r[k])
                for _, r in tests.iterrows()
                for k in ("mean_diff", "pvalue", "statistic")
            },
            figures=figures,
            storage=storage,
            tables={"paired_t_tests": markdown_table(tests)},
            checks=[check("both_families_compared", len(families) == 2, families=families)],
        )
