"""Where did this number come from? Walk a metric back to the raw files.

Every asset records, in its materialization metadata, the exact data version,
Dagster run and MLflow run of each input it read (each *partition* of a
partitioned input: Dagster's own provenance keeps one combined version per
upstream asset). Lineage starts at the evaluation report and follows those
records down: report -> model -> training set -> each triplet partition ->
clusters -> embeddings -> raw files.
"""

import json
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from curatornet_pipeline.core.experiment.grid import MODEL_ASSETS, ModelGrid, label_of
from curatornet_pipeline.profiles import PROFILES

#: The tag Dagster writes a materialization's data version under.
DATA_VERSION_TAG = "dagster/data_version"

_MODEL_SHOWN = (
    "variant", "trained_on", "l2", "sampling", "epochs_run", "best_epoch", "best_val_accuracy",
    "best_val_auc", "training_triples", "triples_per_second", "mlflow_run_id",
)  # fmt: skip
#: Metadata entries worth showing for each asset, in order.
SHOWN = {
    "evaluation_report": ("protocol", "mlflow_run_id"),
    **dict.fromkeys(MODEL_ASSETS, _MODEL_SHOWN),
    "triplets": ("triples", "target", "seed", "rejected_duplicates", "config"),
    "train_test_split": ("users", "test_users", "hidden_items"),
    "validation_split": ("validation_users", "validation_purchases", "config"),
    "visual_clusters": ("k", "silhouette"),
    "pca_embeddings": ("dims",),
    "item_embeddings": ("backbone", "weights", "dims", "items", "source"),
    "image_manifest": ("images", "source", "total_megabytes"),
    "inventory": ("file", "file_sha256", "items", "artists"),
    "purchases": ("file", "file_sha256", "purchases", "users", "baskets"),
}


@dataclass
class Node:
    """One materialization in the chain."""

    asset: str
    partition: str | None
    data_version: str
    run_id: str
    timestamp: float
    metadata: dict[str, Any]
    inputs: list["Node"] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.asset + (f"[{self.partition}]" if self.partition else "")


def _value(entry: Any) -> Any:
    return getattr(entry, "value", entry)


def _find(
    instance: dg.DagsterInstance,
    asset: str,
    partition: str | None,
    data_version: str | None,
    run_id: str | None,
):
    """The materialization of ``asset[partition]`` with that version (newest if None)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey(asset), asset_partitions=[partition] if partition else None
        ),
        limit=200,
    ).records
    for record in records:
        mat = record.asset_materialization
        version = (mat.tags or {}).get(DATA_VERSION_TAG)
        if (data_version is None or version == data_version) and (
            run_id is None or record.run_id == run_id
        ):
            return record
    return None


def _split_label(label: str) -> tuple[str, str | None]:
    if label.endswith("]") and "[" in label:
        asset, partition = label[:-1].split("[", 1)
        return asset, partition
    return label, None


_ORDER = (
    *MODEL_ASSETS, "triplets", "validation_split", "catalogue", "train_test_split",
    "visual_clusters", "pca_embeddings", "item_embeddings", "image_manifest", "purchases",
    "inventory",
)  # fmt: skip


def _priority(label: str) -> tuple[int, str]:
    asset = _split_label(label)[0]
    return (_ORDER.index(asset) if asset in _ORDER else -1, label)


def trace(
    instance: dg.DagsterInstance,
    asset: str,
    partition: str | None = None,
    data_version: str | None = None,
    run_id: str | None = None,
    _memo: dict | None = None,
) -> Node | None:
    """The lineage tree of one materialization (the newest one if no version is given)."""
    memo = _memo if _memo is not None else {}
    key = (asset, partition, data_version, run_id)
    if key in memo:
        return memo[key]
    record = _find(instance, asset, partition, data_version, run_id)
    if record is None:
        return None
    mat = record.asset_materialization
    metadata = {k: _value(v) for k, v in mat.metadata.items()}
    node = Node(
        asset,
        partition,
        (mat.tags or {}).get(DATA_VERSION_TAG, ""),
        record.run_id,
        record.timestamp,
        metadata,
    )
    memo[key] = node
    inputs = metadata.get("input_versions") or {}
    for label in sorted(inputs, key=_priority):
        info = inputs[label]
        up_asset, up_partition = _split_label(label)
        child = trace(
            instance,
            up_asset,
            up_partition,
            info.get("data_version"),
            info.get("dagster_run_id"),
            memo,
        )
        if child is not None:
            node.inputs.append(child)
    return node


def _table2_rows(report: Node) -> dict[str, dict]:
    """Table 2 of the report's main protocol, by method, as numbers."""
    protocol = report.metadata.get("protocol", "unbought")
    every = report.metadata.get("table2")
    if every is not None:
        return dict((json.loads(every) if isinstance(every, str) else every)[protocol])
    # reports made before: a typed table of numbers, or before it a JSON entry
    table = report.metadata.get(f"table2_{protocol}")
    if table is not None:
        return {r.data["method"]: dict(r.data) for r in getattr(table, "records", [])}
    legacy = report.metadata.get("metrics_by_method") or {}
    return json.loads(legacy) if isinstance(legacy, str) else dict(legacy)


def render(
    node: Node, depth: int = 0, only_model: str | None = None, _printed: set | None = None
) -> list[str]:
    """Indented text lines, one block per materialization; repeats are referenced."""
    import datetime as _dt

    printed = _printed if _printed is not None else set()
    when = _dt.datetime.fromtimestamp(node.timestamp, _dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    pad = "  " * depth
    head = (
        f"{pad}<- {node.label}  version {node.data_version}  dagster run "
        f"{node.run_id[:8]}  {when} UTC"
    )
    if id(node) in printed:
        return [f"{head}  (shown above)"]
    printed.add(id(node))
    lines = [head]
    for key in SHOWN.get(node.asset, ()):
        if key in node.metadata and node.metadata[key] not in (None, ""):
            value = node.metadata[key]
            shown = f"{value:.4g}" if isinstance(value, float) else value
            lines.append(f"{pad}     {key}: {shown}")
    for child in node.inputs:
        if only_model and child.asset in MODEL_ASSETS and child.label != only_model:
            continue
        lines.extend(render(child, depth + 1, None, printed))
    return lines


def explain(
    instance: dg.DagsterInstance, metric: str, variant: str, report_asset: str = "evaluation_report"
) -> str:
    """The full answer for ``curatornet lineage``."""
    report = trace(instance, report_asset)
    if report is None:
        raise LookupError(f"{report_asset} was never materialized in this Dagster instance")
    value = (_table2_rows(report).get(variant) or {}).get(metric)
    if value is None:
        known = sorted(_table2_rows(report))
        raise LookupError(f"no metric {metric!r} for {variant!r}; methods: {known}")
    grid = ModelGrid(**PROFILES[report.metadata.get("profile", "demo")]["models"])
    models = [c.label for c in report.inputs if c.asset in MODEL_ASSETS]
    partition = next((m for m in models if label_of(m, grid) == variant), "")
    protocol = report.metadata.get("protocol", "?")
    head = [f"{metric} = {value:.4f} for {variant} (protocol {protocol})"]
    return "\n".join(head + render(report, only_model=partition))
