"""What the Dagster UI shows on an asset's page: typed tables, short ids, lineage with links.

Tables are ``MetadataValue.table`` with a typed ``TableSchema`` (rendered inline on
the asset's page, no dialog). Links inside the UI are same-origin paths
(``/assets/...``, ``/runs/...``), so they work behind any host and port.
"""

import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from curatornet_pipeline.lineage import trace

SHORT = 8  # characters of an id or a data version shown


def short(value: Any, n: int = SHORT) -> str:
    """The first ``n`` characters of an id or a hash."""
    return str(value)[:n]


#: Table 2's columns on the asset's page, so that it fits a laptop's screen; every metric
#: is in the report's CSV and markdown (MLflow artifacts ``reports/``).
HEADLINE = {"auc": "AUC", "recall@20": "R@20", "recall@100": "R@100", "ndcg@100": "nDCG@100"}


def _mean_se(mean: Any, se: Any) -> str:
    """``.7570 ± .0091``, as in the report's markdown (the width fits a laptop's screen)."""

    def short(value: Any) -> str:
        return f"{float(value):.4f}".removeprefix("0")

    if not np.isfinite(float(mean)):
        return "–"
    return short(mean) + (f" ± {short(se)}" if np.isfinite(float(se)) else "")


def table2_value(table: pd.DataFrame) -> dg.MetadataValue:
    """Table 2 (one protocol): method, users, and the headline metrics as mean ± standard
    error over test users."""
    metrics = [m for m in HEADLINE if m in table.columns]
    columns = [
        dg.TableColumn("method", "string", description="model or reference method"),
        dg.TableColumn("users", "int", description="test users evaluated"),
        *(
            dg.TableColumn(HEADLINE[m], "string", description=f"mean {m} ± standard error")
            for m in metrics
        ),
    ]
    records = [
        dg.TableRecord(
            {
                "method": str(method),
                "users": int(row["n_users"]),
                **{HEADLINE[m]: _mean_se(row[m], row.get(f"{m}_se", np.nan)) for m in metrics},
            }
        )
        for method, row in table.iterrows()
    ]
    return dg.MetadataValue.table(records, dg.TableSchema(columns))


def table2_metadata(tables: Mapping[str, pd.DataFrame]) -> dict[str, dg.MetadataValue]:
    """``table2_<protocol>`` for each protocol (what the page shows), and ``table2``: every
    metric of every protocol as numbers, {protocol: {method: {column: value}}}, which
    ``curatornet lineage`` reads."""

    def number(value: Any) -> float | None:
        return float(value) if np.isfinite(float(value)) else None

    every = {
        p: {str(m): {c: number(v) for c, v in row.items()} for m, row in t.iterrows()}
        for p, t in tables.items()
    }
    return {
        **{f"table2_{p}": table2_value(t) for p, t in tables.items()},
        "table2": dg.MetadataValue.json(every),
    }


def recommendations_value(table: pd.DataFrame) -> dg.MetadataValue:
    """Sample recommendations with short user and artwork ids (full ids in the asset's table)."""
    columns = [
        dg.TableColumn("user", "string", description="test user (id prefix)"),
        dg.TableColumn("rank", "int"),
        dg.TableColumn("artwork", "string", description="recommended artwork (id prefix)"),
        dg.TableColumn("score", "float"),
        dg.TableColumn(
            "because", "string", description="liked artwork contributing most to the score"
        ),
        dg.TableColumn(
            "contribution", "float", description="score minus the score without that liked item"
        ),
        dg.TableColumn("similarity", "float", description="cosine of the two item vectors"),
        dg.TableColumn("same_artist", "bool"),
        dg.TableColumn("same_cluster", "bool"),
        dg.TableColumn("hit", "bool", description="in the user's hidden test basket"),
    ]
    records = [
        dg.TableRecord(
            {
                "user": short(r["user_id"]),
                "rank": int(r["rank"]),
                "artwork": short(r["item_id"]),
                "score": round(float(r["score"]), 4),
                "because": short(r["because"]),
                "contribution": round(float(r["contribution"]), 4) if "contribution" in r else None,
                "similarity": round(float(r["similarity"]), 4),
                "same_artist": bool(r["same_artist"]),
                "same_cluster": bool(r["same_cluster"]),
                "hit": bool(r.get("in_hidden_basket", False)),
            }
        )
        for r in table.to_dict(orient="records")
    ]
    return dg.MetadataValue.table(records, dg.TableSchema(columns))


# ----------------------------------------------------------------------------- lineage


def materialization_path(asset: str, partition: str | None, timestamp: float) -> str:
    """Same-origin Dagster UI path of one materialization in the asset's events view."""
    query = {"view": "events", "time": str(int(timestamp * 1000))}
    if partition:
        query["partition"] = partition
    return f"/assets/{asset}?{urllib.parse.urlencode(query)}"


def _walk(node: Any) -> list:
    out, todo, seen = [], [node], set()
    while todo:
        n = todo.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        out.append(n)
        todo.extend(n.inputs)
    return out


def model_lineage(
    instance: dg.DagsterInstance, upstream: Mapping[str, Mapping[str, Any]], labels: Any
) -> list[dict[str, Any]]:
    """For each model input (``labels(key)`` names its Table 2 row, None: not a model): its
    MLflow run and the triplet partitions, clusters and embeddings it was trained from
    (data version, Dagster run, UI path of each)."""
    rows = []
    for key in sorted(upstream):
        method = labels(key)
        if method is None:
            continue
        info = upstream[key]
        asset, _, partition = key.rstrip("]").partition("[")
        node = trace(
            instance, asset, partition or None, info.get("data_version"), info.get("dagster_run_id")
        )
        if node is None:
            continue
        found: dict[str, list] = {"triplets": [], "visual_clusters": [], "item_embeddings": []}
        for n in _walk(node):
            if n.asset in found:
                found[n.asset].append(n)

        def describe(n: Any) -> dict[str, Any]:
            return {
                "partition": n.partition,
                "data_version": n.data_version,
                "run_id": n.run_id,
                "path": materialization_path(n.asset, n.partition, n.timestamp),
            }

        rows.append(
            {
                "method": method,
                "model": key,
                "model_version": node.data_version,
                "model_path": materialization_path(asset, partition or None, node.timestamp),
                "mlflow_run_id": str(node.metadata.get("mlflow_run_id", "")),
                **{
                    asset: [describe(n) for n in sorted(nodes, key=lambda n: n.partition or "")]
                    for asset, nodes in found.items()
                },
            }
        )
    return rows


def lineage_value(rows: Sequence[Mapping[str, Any]]) -> dg.MetadataValue:
    """One row per model: run, triplet partitions, clusters and embeddings with data versions.

    Short cells (``s1@4e043934``: a strategy by its number) keep the table, and with it the
    metadata column, narrow enough for Table 2 to fit a 1600-pixel screen; ``lineage_links``
    has the full names, with links."""

    def versions(items: Sequence[Mapping[str, Any]], with_partition: bool) -> str:
        return ", ".join(
            (f"{i['partition'].split('_')[0]}@" if with_partition else "")
            + short(i["data_version"])
            for i in items
        )

    columns = [
        dg.TableColumn("method", "string"),
        dg.TableColumn("model", "string", description="the model asset's partition @ version"),
        dg.TableColumn("mlflow_run", "string", description="MLflow run id of the training"),
        dg.TableColumn("triplets", "string", description="triplet partitions @ data version"),
        dg.TableColumn("clusters", "string", description="visual_clusters' data version"),
        dg.TableColumn("embeddings", "string", description="item_embeddings' data version"),
    ]
    records = [
        dg.TableRecord(
            {
                "method": r["method"],
                "model": f"{r['model'].rstrip(']').partition('[')[2]}@{short(r['model_version'])}",
                "mlflow_run": short(r["mlflow_run_id"]),
                "triplets": versions(r["triplets"], True),
                "clusters": versions(r["visual_clusters"], False),
                "embeddings": versions(r["item_embeddings"], False),
            }
        )
        for r in rows
    ]
    return dg.MetadataValue.table(records, dg.TableSchema(columns))


def lineage_markdown(rows: Sequence[Mapping[str, Any]], mlflow_run_url: Any) -> str:
    """The same lineage with links: each model, its MLflow run, and each input's
    materialization (same-origin Dagster paths)."""
    lines = [
        "**Lineage of each model row of Table 2** (links open the exact materializations)",
        "",
        "| method | model | MLflow run | triplets | visual_clusters | item_embeddings |",
        "|---|---|---|---|---|---|",
    ]

    def links(items: Sequence[Mapping[str, Any]]) -> str:
        return ", ".join(
            f"[{(i['partition'] + ' ') if i['partition'] else ''}{short(i['data_version'])}]"
            f"({i['path']})"
            for i in items
        )

    for r in rows:
        run = r["mlflow_run_id"]
        lines.append(
            f"| {r['method']} | [{r['model']}]({r['model_path']}) | "
            f"[{short(run)}]({mlflow_run_url(run)}) | {links(r['triplets'])} | "
            f"{links(r['visual_clusters'])} | {links(r['item_embeddings'])} |"
        )
    return "\n".join(lines) + "\n"


def report_metadata(
    instance: dg.DagsterInstance,
    tables: Mapping[str, pd.DataFrame],
    upstream: Mapping[str, Mapping[str, Any]],
    labels: Any,
    experiment_id: str,
) -> dict[str, dg.MetadataValue]:
    """The evaluation report's page: Table 2 per protocol, then each model's lineage."""
    from curatornet_pipeline import settings
    from curatornet_pipeline.defs.tracking import run_link

    rows = model_lineage(instance, upstream, labels)
    ui = settings.mlflow_ui_address()
    return {
        **table2_metadata(tables),
        "lineage": lineage_value(rows),
        "lineage_links": dg.MetadataValue.md(
            lineage_markdown(rows, lambda run: run_link(ui, experiment_id, run))
        ),
    }
