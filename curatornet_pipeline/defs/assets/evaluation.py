"""Evaluation: the paper's Table 2 on both candidate protocols, and Figure 3's ablation."""

import dataclasses
import json

import dagster as dg
import numpy as np
import pandas as pd
from upath import UPath

from curatornet_pipeline import settings
from curatornet_pipeline.core import evaluate as eval_core
from curatornet_pipeline.core import metrics as metrics_core
from curatornet_pipeline.core import models as models_core
from curatornet_pipeline.core import scorers
from curatornet_pipeline.core.types import ItemVectors, TrainTestSplit
from curatornet_pipeline.defs import presentation
from curatornet_pipeline.defs.assets.training import variants
from curatornet_pipeline.defs.automation import EAGER
from curatornet_pipeline.defs.common import check, finish, markdown_table, upstream_versions
from curatornet_pipeline.defs.resources import PROFILES, PipelineSettings
from curatornet_pipeline.defs.tracking import MlflowTracking

GROUP = "evaluation"
PROTOCOLS = ("unbought", "in_stock")


def label(name: str) -> str:
    """Table 2 row label of a model variant, e.g. 'CuratorNet (1e-04)'."""
    v = variants().get(name)
    if v is None:
        return {"visrank": "VisRank", "random": "Random", "oracle": "Oracle"}.get(name, name)
    kind = {"curatornet": "CuratorNet", "vbpr": "VBPR"}[v.kind]
    return f"{kind} (random sampling)" if v.sampling == "random" else f"{kind} ({v.l2:g})"


def build_scorers(models: dict, features: np.ndarray, split: TrainTestSplit) -> dict:
    """Every model partition plus VisRank, Random and Oracle, behind one interface."""
    out = {}
    for name, payload in sorted(models.items()):
        model, _ = models_core.model_from_payload(payload)
        cls = scorers.CuratorNetScorer if model.kind == "curatornet" else scorers.VBPRScorer
        out[name] = cls(model, features)
    out["visrank"] = scorers.VisRankScorer(features)
    out["random"] = scorers.RandomScorer(split.n_items, seed=0)
    out["oracle"] = scorers.OracleScorer(split, seed=0)
    return out


def _write_reports(table: pd.DataFrame, markdown: str, protocol: str) -> dict[str, str]:
    folder = UPath(settings.storage_uri()) / "reports"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for ext, text in (
        ("csv", table.to_csv()),
        ("json", table.to_json(orient="index", indent=1)),
        ("md", markdown),
    ):
        path = folder / f"table2_{protocol}.{ext}"
        path.write_text(text)
        paths[ext] = str(path)
    return paths


@dg.asset(
    dagster_type=pd.DataFrame,
    group_name=GROUP,
    code_version="1",
    automation_condition=EAGER,
    check_specs=[
        dg.AssetCheckSpec("oracle_is_perfect", asset="evaluation_report"),
        dg.AssetCheckSpec("random_near_half_auc", asset="evaluation_report"),
    ],
)
def evaluation_report(
    context: dg.AssetExecutionContext,
    pipeline: PipelineSettings,
    mlflow: MlflowTracking,
    models: dict,
    item_embeddings: ItemVectors,
    train_test_split: TrainTestSplit,
    inventory: pd.DataFrame,
    purchases: pd.DataFrame,
) -> dg.MaterializeResult:
    """Table 2: every model variant, VisRank, Random and Oracle on both candidate protocols."""
    config = pipeline.build("evaluation", eval_core.EvalConfig)
    upstream = upstream_versions(context)
    models = (
        models
        if isinstance(models, dict)
        else {context.asset_partition_keys_for_input("models")[0]: models}
    )
    with mlflow.run_for(context, params=dataclasses.asdict(config)) as run:
        timeline = eval_core.build_timeline(item_embeddings.ids, inventory, purchases)
        methods = build_scorers(models, item_embeddings.vectors, train_test_split)
        per_user, tables, md, paths = [], {}, {}, {}
        for protocol in PROTOCOLS:
            cfg = dataclasses.replace(config, protocol=protocol)
            results = {
                label(n): eval_core.evaluate(s, train_test_split, cfg, timeline)
                for n, s in methods.items()
            }
            for name, r in results.items():
                per_user.append(r.per_user.assign(method=name, protocol=protocol))
            tables[protocol] = eval_core.table2(results)
            md[protocol] = eval_core.table2_markdown(tables[protocol], protocol)
            paths[protocol] = _write_reports(tables[protocol], md[protocol], protocol)
            run.log_text(md[protocol], f"reports/table2_{protocol}.md")
            run.log_text(tables[protocol].to_csv(), f"reports/table2_{protocol}.csv")
        primary = tables[config.protocol]
        (UPath(settings.storage_uri()) / "reports" / "table2.md").write_text(md[config.protocol])
        _log_to_model_runs(mlflow, upstream, primary, config.protocol)
        oracle, rand = primary.loc["Oracle"], primary.loc["Random"]
        ks = config.ks
        perfect = all(
            abs(oracle[m] - 1.0) < 1e-9
            for m in ["auc", *[f"recall@{k}" for k in ks], *[f"ndcg@{k}" for k in ks]]
        )
        near_half = abs(rand["auc"] - 0.5) <= max(0.05, 4 * rand["auc_se"])
        by_method = {
            m: {k: float(v) for k, v in row.items() if isinstance(v, float | int)}
            for m, row in primary.to_dict(orient="index").items()
        }
        metrics = {
            f"{m}.{k}": v
            for m, row in by_method.items()
            for k, v in row.items()
            if not k.endswith("_se")
        }
        return finish(
            context,
            run,
            pd.concat(per_user, ignore_index=True),
            upstream=upstream,
            version_of=primary,
            metadata={
                "protocol": config.protocol,
                "ndcg": config.ndcg,
                "test_users": int(primary["n_users"].max()),
                **presentation.report_metadata(
                    context.instance, tables, upstream, label, mlflow.experiment_id
                ),
            },
            metrics=metrics,
            checks=[
                check("oracle_is_perfect", perfect),
                check("random_near_half_auc", near_half, auc=float(rand["auc"])),
            ],
        )


def _log_to_model_runs(
    mlflow: MlflowTracking, upstream: dict, table: pd.DataFrame, protocol: str
) -> None:
    """Each model's test metrics also go to the MLflow run that trained it."""
    from curatornet_pipeline.defs.tracking import TrackedRun

    for key, info in upstream.items():
        if not key.startswith("models[") or not info.get("mlflow_run_id"):
            continue
        name = label(key[len("models[") : -1])
        if name not in table.index:
            continue
        row = table.loc[name]
        tracked = TrackedRun(
            mlflow.client, info["mlflow_run_id"], mlflow.experiment_id, mlflow.resolved_ui_url()
        )
        tracked.log_metrics(
            {
                f"test_{protocol}.{m}": float(v)
                for m, v in row.items()
                if not m.endswith("_se") and m != "n_users"
            }
        )


@dg.asset(
    dagster_type=pd.DataFrame,
    group_name=GROUP,
    code_version="1",
    automation_condition=EAGER,
    check_specs=[dg.AssetCheckSpec("both_families_compared", asset="sampling_ablation")],
)
def sampling_ablation(
    context: dg.AssetExecutionContext,
    pipeline: PipelineSettings,
    mlflow: MlflowTracking,
    evaluation_report: pd.DataFrame,
) -> dg.MaterializeResult:
    """Figure 3: guidelines vs uniform random sampling, per-user AUC, paired t-test."""
    config = pipeline.build("evaluation", eval_core.EvalConfig)
    l2 = PROFILES[pipeline.profile]["models"]["ablation_l2"]
    upstream = upstream_versions(context)
    with mlflow.run_for(context, params={"protocol": config.protocol, "l2": l2}) as run:
        df = evaluation_report[evaluation_report["protocol"] == config.protocol]

        def result(name: str) -> eval_core.EvalResult:
            rows = df[df["method"] == label(name)]
            summary = metrics_core.summarize({"auc": rows["auc"].to_numpy()})
            return eval_core.EvalResult(
                per_user=rows,
                summary=summary,
                protocol=config.protocol,
                n_users=len(rows),
                skipped=0,
            )

        pairs = {}
        for family, kind in (("CuratorNet", "curatornet"), ("VBPR", "vbpr")):
            guided, uniform = f"{kind}-l{l2:g}", f"{kind}-random"
            if label(guided) in set(df["method"]) and label(uniform) in set(df["method"]):
                pairs[family] = (result(guided), result(uniform))
        tests = {f: eval_core.paired_comparison(a, b, "auc") for f, (a, b) in pairs.items()}
        table = pd.DataFrame(tests).T.reset_index(names="model")
        png = eval_core.ablation_figure(pairs) if pairs else b""
        return finish(
            context,
            run,
            table,
            upstream=upstream,
            metadata={
                "protocol": config.protocol,
                "tests": dg.MetadataValue.json(json.loads(table.to_json(orient="records"))),
            },
            metrics={
                f"{f}.{k}": float(v)
                for f, t in tests.items()
                for k, v in t.items()
                if isinstance(v, int | float)
            },
            figures={"sampling_ablation": png} if png else {},
            tables={"paired_t_tests": markdown_table(table)},
            checks=[check("both_families_compared", len(pairs) == 2, families=list(pairs))],
        )
