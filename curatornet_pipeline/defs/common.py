"""Helpers every asset uses: data versions, upstream versions, figures, tables, MLflow."""

import base64
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
import numpy as np

from curatornet_pipeline.core.hashing import content_hash
from curatornet_pipeline.defs.tracking import TAG_DATA_VERSION, TAG_INPUT_PREFIX, TrackedRun
from curatornet_pipeline.lineage import DATA_VERSION_TAG


def png_markdown(png: bytes, title: str) -> dg.MetadataValue:
    """A PNG inline in markdown metadata."""
    encoded = base64.b64encode(png).decode()
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{encoded})")


def figure_file(context: dg.AssetExecutionContext, name: str) -> str:
    """Storage-relative file of a figure of this asset (and partition)."""
    parts = ["figures", *context.asset_key.path]
    if context.has_partition_key:
        parts.append(context.partition_key)
    return "/".join([*parts, name])


def latest_record(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None):
    """The newest materialization record of an asset (partition), or None."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None),
        limit=1,
    ).records
    return records[0] if records else None


def upstream_versions(context: dg.AssetExecutionContext) -> dict[str, dict[str, Any]]:
    """Data version, Dagster run and time of every input (each partition of a partitioned one).

    Dagster keeps one combined input version per upstream asset; this records
    exactly which partition versions were read, for lineage.
    """
    out: dict[str, dict[str, Any]] = {}
    for input_name, key in context.assets_def.keys_by_input_name.items():
        try:
            partitions: Sequence[str | None] = context.asset_partition_keys_for_input(input_name)
        except Exception:  # unpartitioned upstream
            partitions = [None]
        for partition in partitions:
            record = latest_record(context.instance, key, partition)
            if record is None:
                continue
            mat = record.asset_materialization
            label = key.to_user_string() + (f"[{partition}]" if partition else "")
            out[label] = {
                "data_version": (mat.tags or {}).get(DATA_VERSION_TAG, ""),
                "dagster_run_id": record.run_id,
                "timestamp": record.timestamp,
                "mlflow_run_id": _text(mat.metadata.get("mlflow_run_id")),
            }
    return out


def _text(value: Any) -> str:
    if value is None:
        return ""
    return str(getattr(value, "value", value))


def input_tags(versions: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """MLflow tags naming the data version of each input."""
    # MLflow tag keys allow no brackets: triplets[s1_user_profile] -> triplets:s1_user_profile
    return {
        TAG_INPUT_PREFIX + name.replace("[", ":").rstrip("]"): v["data_version"]
        for name, v in versions.items()
    }


def finish(
    context: dg.AssetExecutionContext,
    run: TrackedRun,
    value: Any,
    *,
    metadata: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    figures: Mapping[str, bytes] | None = None,
    tables: Mapping[str, str] | None = None,
    checks: Sequence[dg.AssetCheckResult] = (),
    version_of: Any = None,
    upstream: Mapping[str, Any] | None = None,
    storage: Any = None,
) -> dg.MaterializeResult:
    """Hash the value, log to MLflow, and build the MaterializeResult.

    ``figures`` are PNG bytes: shown inline, written through ``storage`` (the
    ``ArtifactStorage`` resource) and logged as MLflow artifacts. ``tables`` are markdown texts shown inline and logged as ``.md``.
    """
    data_version = content_hash(value if version_of is None else version_of)
    md: dict[str, Any] = dict(metadata or {})
    if figures and storage is None:
        raise ValueError("finish(figures=...) needs the ArtifactStorage resource")
    for name, png in (figures or {}).items():
        path = storage.write_bytes(figure_file(context, f"{name}.png"), png)
        md[name] = png_markdown(png, name)
        md[f"{name}_file"] = dg.MetadataValue.path(path)
        run.log_bytes(png, f"figures/{name}.png")
    for name, text in (tables or {}).items():
        md[name] = dg.MetadataValue.md(text)
        run.log_text(text, f"tables/{name}.md")
    if upstream:
        md["input_versions"] = dg.MetadataValue.json(dict(upstream))
        run.set_tags(input_tags(upstream))
    md["data_version"] = data_version
    md["mlflow_run_id"] = run.run_id
    md["mlflow_run"] = dg.MetadataValue.url(run.url)
    numeric = {k: float(v) for k, v in (metrics or {}).items()}
    for key, v in md.items():
        if isinstance(v, bool):
            continue
        if isinstance(v, int | float | np.integer | np.floating):
            numeric.setdefault(key, float(v))
    run.log_metrics(numeric)
    run.set_tags({TAG_DATA_VERSION: data_version})
    result_kwargs: dict[str, Any] = {}
    if value is not None:
        result_kwargs["value"] = value
    return dg.MaterializeResult(
        metadata=md,
        data_version=dg.DataVersion(data_version),
        check_results=list(checks),
        **result_kwargs,
    )


def check(name: str, passed: bool, severity: str = "ERROR", **metadata: Any) -> dg.AssetCheckResult:
    """A check result of the asset being materialized."""
    return dg.AssetCheckResult(
        check_name=name,
        passed=bool(passed),
        severity=dg.AssetCheckSeverity[severity],
        metadata=metadata,
    )
