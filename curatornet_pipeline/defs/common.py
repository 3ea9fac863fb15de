"""Helpers every asset uses: data versions, upstream versions, figures, tables, MLflow."""

import base64
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
import numpy as np

from curatornet_pipeline.core.hashing import content_hash
from curatornet_pipeline.defs.tracking import TAG_DATA_VERSION, TAG_INPUT_PREFIX, TrackedRun
from curatornet_pipeline.lineage import DATA_VERSION_TAG


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
            records = context.instance.fetch_materializations(
                dg.AssetRecordsFilter(
                    asset_key=key, asset_partitions=[partition] if partition else None
                ),
                limit=1,
            ).records
            if not records:
                continue
            record = records[0]
            mat = record.asset_materialization
            run_id = mat.metadata.get("mlflow_run_id")
            label = key.to_user_string() + (f"[{partition}]" if partition else "")
            out[label] = {
                "data_version": (mat.tags or {}).get(DATA_VERSION_TAG, ""),
                "dagster_run_id": record.run_id,
                "timestamp": record.timestamp,
                "mlflow_run_id": str(getattr(run_id, "value", run_id) or ""),
            }
    return out


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
    run_link_inline: bool = True,
) -> dg.MaterializeResult:
    """Hash the value, log to MLflow, and build the MaterializeResult.

    ``figures`` are PNG bytes: shown inline, written through ``storage`` (the
    ``ArtifactStorage`` resource) and logged as MLflow artifacts. ``tables`` are markdown texts shown inline and logged as ``.md``.
    ``run_link_inline=False`` records ``mlflow_run`` as markdown (one click away) instead of
    a URL: a 100-character URL sets the width of the metadata column, and the evaluation
    report's tables must fit a 1600-pixel screen.
    """
    data_version = content_hash(value if version_of is None else version_of)
    md: dict[str, Any] = dict(metadata or {})
    if figures and storage is None:
        raise ValueError("finish(figures=...) needs the ArtifactStorage resource")
    folder = "/".join(["figures", *context.asset_key.path])
    if context.has_partition_key:
        folder += f"/{context.partition_key}"
    for name, png in (figures or {}).items():
        path = storage.write_bytes(f"{folder}/{name}.png", png)
        md[name] = dg.MetadataValue.md(
            f"![{name}](data:image/png;base64,{base64.b64encode(png).decode()})"
        )
        md[f"{name}_file"] = dg.MetadataValue.path(path)
        run.log_bytes(png, f"figures/{name}.png")
    for name, text in (tables or {}).items():
        md[name] = dg.MetadataValue.md(text)
        run.log_text(text, f"tables/{name}.md")
    if upstream:
        md["input_versions"] = dg.MetadataValue.json(dict(upstream))
        # MLflow tag keys allow no brackets: triplets[s1_user_profile] -> triplets:s1_user_profile
        run.set_tags(
            {
                TAG_INPUT_PREFIX + name.replace("[", ":").rstrip("]"): v["data_version"]
                for name, v in upstream.items()
            }
        )
    md["data_version"] = data_version
    md["mlflow_run_id"] = run.run_id
    md["mlflow_run"] = (
        dg.MetadataValue.url(run.url)
        if run_link_inline
        else dg.MetadataValue.md(f"[MLflow run {run.run_id[:8]}]({run.url})")
    )
    numeric = {
        k: float(v)
        for k, v in md.items()
        if isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)
    }
    run.log_metrics({**numeric, **{k: float(v) for k, v in (metrics or {}).items()}})
    run.set_tags({TAG_DATA_VERSION: data_version})
    return dg.MaterializeResult(
        metadata=md,
        data_version=dg.DataVersion(data_version),
        check_results=list(checks),
        **({} if value is None else {"value": value}),
    )


def check(
    name: str, passed: bool, severity: str = "ERROR", description: str | None = None, **metadata
) -> dg.AssetCheckResult:
    """A check result of the asset being materialized."""
    return dg.AssetCheckResult(
        check_name=name,
        passed=bool(passed),
        severity=dg.AssetCheckSeverity[severity],
        description=description,
        metadata=metadata,
    )
