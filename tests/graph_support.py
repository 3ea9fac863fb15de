"""In-process materialization of the whole graph for tests: the runner's plan, run by run.

``curatornet run`` submits the same runs to the instance and a daemon launches
them in subprocesses (tested end to end in test_main_job.py); the tests that
only need the assets use this faster in-process path.
"""

import dagster as dg

from curatornet_pipeline.definitions import defs
from curatornet_pipeline.defs.assets.training import add_grid_partitions
from curatornet_pipeline.runner import plan


def materialize_graph(
    instance: dg.DagsterInstance, resources: dict, select: set[str] | None = None
) -> list[dg.ExecuteInProcessResult]:
    """Materialize every run of the main job's plan in-process; raise on the first failure.

    ``select``: asset names to materialize (default: all); runs without one are skipped.
    """
    add_grid_partitions(instance, resources["pipeline"].grid())
    graph = defs.resolve_asset_graph()
    assets = list(defs.assets) + list(defs.asset_checks or [])
    results = []
    for stage in plan(defs, instance):
        for launch in stage:
            keys = next(j for j in _jobs() if j.name == launch.job).selection.resolve(graph)
            if select is not None:
                keys = {k for k in keys if k.to_user_string() in select}
            if not keys:
                continue
            results.append(
                dg.materialize(
                    assets,
                    selection=sorted(keys, key=lambda k: k.to_user_string()),
                    partition_key=launch.partition,
                    resources=resources,
                    instance=instance,
                    tags={"curatornet/trigger": "test"},
                )
            )
    return results


def _jobs():
    from curatornet_pipeline.defs.automation import JOBS

    return JOBS
