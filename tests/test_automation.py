"""Nightly retraining: the schedule and the automation downstream (batches: test_incoming_*.py)."""

import dagster as dg
import pandas as pd

from curatornet_pipeline.definitions import defs


def test_nightly_schedule_requests_the_upstream_refresh() -> None:
    schedule = defs.get_schedule_def("nightly_retraining")
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.job_name == "refresh_upstream"
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(
            instance=instance,
            repository_def=defs.get_repository_def(),
            scheduled_execution_time=pd.Timestamp("2026-11-28 02:00", tz="UTC").to_pydatetime(),
        )
        request = schedule.evaluate_tick(context).run_requests[0]
    assert request.run_key == "nightly-2026-11-28T02:00:00+00:00"
    job = defs.resolve_job_def("refresh_upstream")
    selected = {k.to_user_string() for k in job.asset_layer.executable_asset_keys}
    assert {
        "inventory",
        "purchases",
        "item_embeddings",
        "visual_clusters",
        "train_test_split",
        "validation_split",
    } <= selected
    assert not selected & {"triplets", "curatornet_models", "evaluation_report"}


def test_downstream_assets_follow_by_automation() -> None:
    graph = defs.resolve_asset_graph()
    for name in ("triplets", "curatornet_models", "evaluation_report", "sampling_ablation"):
        assert graph.get(dg.AssetKey(name)).automation_condition is not None, name
