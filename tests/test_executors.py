"""The thread budget: the `compute` resource sets torch's threads before a step runs, from
CURATORNET_THREADS or from how many steps and runs share the cores; the executor selection."""

import os

import dagster as dg
import pytest

from curatornet_pipeline.defs import executors
from curatornet_pipeline.defs.executors import ComputeResource


@dg.asset
def torch_threads(compute: ComputeResource) -> int:
    import torch

    return torch.get_num_threads()


def _threads_in_a_step(instance: dg.DagsterInstance) -> int:
    import torch

    before = torch.get_num_threads()
    try:
        result = dg.materialize(
            [torch_threads], resources={"compute": ComputeResource()}, instance=instance
        )
        return result.output_for_node("torch_threads")
    finally:
        torch.set_num_threads(before)


def test_worker_budget_from_the_environment(monkeypatch):
    monkeypatch.setenv("CURATORNET_THREADS", "1")
    assert _threads_in_a_step(dg.DagsterInstance.ephemeral()) == 1


def test_in_process_default_is_all_cores_for_one_run(monkeypatch):
    monkeypatch.delenv("CURATORNET_THREADS", raising=False)
    monkeypatch.delenv("CURATORNET_EXECUTOR", raising=False)
    assert _threads_in_a_step(dg.DagsterInstance.ephemeral()) == os.cpu_count()


def test_runs_side_by_side_share_the_cores(monkeypatch, tmp_path):
    """A queued run coordinator that starts N runs at once gives each cores // N threads."""
    monkeypatch.delenv("CURATORNET_THREADS", raising=False)
    monkeypatch.delenv("CURATORNET_EXECUTOR", raising=False)
    overrides = {
        "run_coordinator": {
            "module": "dagster.core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": {"max_concurrent_runs": 2},
        }
    }
    with dg.instance_for_test(overrides=overrides, temp_dir=str(tmp_path)) as instance:
        assert _threads_in_a_step(instance) == max(1, (os.cpu_count() or 1) // 2)


def test_multiprocess_budget_and_bad_values(monkeypatch):
    monkeypatch.delenv("CURATORNET_THREADS", raising=False)
    monkeypatch.setenv("CURATORNET_EXECUTOR", "multiprocess")
    monkeypatch.setenv("CURATORNET_MAX_CONCURRENT", "2")
    assert executors.thread_budget() == max(1, (os.cpu_count() or 1) // 2)
    assert executors.executor() is dg.multiprocess_executor
    monkeypatch.setenv("CURATORNET_THREADS", "0")
    with pytest.raises(ValueError, match="CURATORNET_THREADS=0"):
        executors.thread_budget()
    monkeypatch.setenv("CURATORNET_EXECUTOR", "threads")
    with pytest.raises(ValueError, match="CURATORNET_EXECUTOR='threads'"):
        executors.executor()


def test_dask_executor_needs_a_scheduler(monkeypatch):
    monkeypatch.setenv("CURATORNET_EXECUTOR", "dask")
    monkeypatch.delenv("CURATORNET_DASK_SCHEDULER", raising=False)
    assert executors.executor() is executors.dask_executor

    with dg.instance_for_test() as instance:
        result = dg.execute_job(dg.reconstructable(_dask_job), instance=instance)
        assert not result.success
        failure = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        errors = [str(r.dagster_event.event_specific_data) for r in failure]
        assert any("CURATORNET_DASK_SCHEDULER" in e for e in errors), errors


@dg.op
def _noop() -> None:
    pass


@dg.job(executor_def=executors.dask_executor)
def _dask_job():
    _noop()


class _NoIteration(tuple):
    """Like Dagster's partition-range records: a tuple subclass that forbids iteration."""

    def __iter__(self):
        raise NotImplementedError("iteration is not supported")


def _first(dependencies, args):
    return args.value[0] if isinstance(args, executors._Opaque) else args[0]


def test_dask_submit_needs_the_opaque_wrapper():
    """Client.submit walks tuples among the arguments; the executor's shim keeps it out."""
    import dask.distributed

    known_state = _NoIteration(("range",))
    with (
        dask.distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        dask.distributed.Client(cluster) as client,
    ):
        with pytest.raises(NotImplementedError):
            client.submit(_first, [], ("job", known_state), pure=False).result()
        wrapped = client.submit(_first, [], executors._Opaque(("job", known_state)), pure=False)
        assert wrapped.result() == "job"
