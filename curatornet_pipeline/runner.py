"""The main job: materialize the whole asset graph, in dependency order, through Dagster.

Every step is one Dagster run recorded in the persistent instance under
``$CURATORNET_HOME/dagster``, so the runs show in the Dagster UI afterwards.
Unpartitioned assets that follow each other run together; a partitioned asset
runs once per partition (that is how Dagster executes static partitions).
"""

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg

from curatornet_pipeline import settings

logger = logging.getLogger(__name__)


#: Dagster's console logger at WARNING: every event is still stored in the
#: instance (and shown in the UI); the terminal shows the step summaries.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass(frozen=True)
class Step:
    """One Dagster run of the plan."""

    keys: tuple[dg.AssetKey, ...]
    partition: str | None = None

    def label(self) -> str:
        names = ", ".join(k.to_user_string() for k in self.keys)
        return f"{names} [{self.partition}]" if self.partition else names


def dagster_home() -> str:
    """Point DAGSTER_HOME at the project's home folder (created if missing)."""
    path = settings.home_dir() / "dagster"
    path.mkdir(parents=True, exist_ok=True)
    (path / "dagster.yaml").touch()  # defaults: every store under DAGSTER_HOME
    os.environ["DAGSTER_HOME"] = str(path)
    return str(path)


def plan(defs: dg.Definitions, selection: set[dg.AssetKey] | None = None) -> list[Step]:
    """The steps that materialize ``selection`` (default: everything) in dependency order."""
    graph = defs.resolve_asset_graph()
    steps: list[Step] = []
    batch: list[dg.AssetKey] = []
    for level in graph.toposorted_asset_keys_by_level:
        for key in sorted(level, key=lambda k: k.to_user_string()):
            if selection is not None and key not in selection:
                continue
            if not graph.get(key).is_materializable:
                continue
            partitions_def = graph.get(key).partitions_def
            if partitions_def is None:
                batch.append(key)
                continue
            if batch:
                steps.append(Step(tuple(batch)))
                batch = []
            for partition in partitions_def.get_partition_keys():
                steps.append(Step((key,), partition))
    if batch:
        steps.append(Step(tuple(batch)))
    return steps


def materialize_all(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    selection: set[dg.AssetKey] | None = None,
    on_step: Callable[[Step, float], None] | None = None,
    resources: dict | None = None,
) -> list[dg.ExecuteInProcessResult]:
    """Run every step of the plan against ``instance``; stop at the first failure."""
    graph_assets = list(defs.assets or []) + list(defs.asset_checks or [])
    resources = dict(defs.resources or {}) if resources is None else resources
    results = []
    for step in plan(defs, selection):
        start = time.perf_counter()
        result = dg.materialize(
            graph_assets,
            selection=list(step.keys),
            partition_key=step.partition,
            resources=resources,
            instance=instance,
            raise_on_error=True,
            tags={"curatornet/step": step.label()[:200]},
            run_config=QUIET,
        )
        results.append(result)
        if on_step is not None:
            on_step(step, time.perf_counter() - start)
    return results
