"""Where steps run, and how many threads each may use.

``CURATORNET_EXECUTOR``: ``in_process`` (default), ``multiprocess`` or ``dask`` (an
existing scheduler at ``CURATORNET_DASK_SCHEDULER``). The ``compute`` resource sets
torch's threads to the step's budget, since steps side by side would otherwise
oversubscribe the cores (docs/scaling.md, "Threads: one budget per worker").
"""

import os

import dagster as dg

from curatornet_pipeline import settings

EXECUTORS = ("in_process", "multiprocess", "dask")


def executor_name() -> str:
    name = settings.env("CURATORNET_EXECUTOR")
    if name not in EXECUTORS:
        raise ValueError(f"CURATORNET_EXECUTOR={name!r}: choose one of {list(EXECUTORS)}")
    return name


def concurrent_steps() -> int:
    """How many steps the selected executor runs side by side on this machine."""
    name = executor_name()
    if name == "multiprocess":
        return int(settings.env("CURATORNET_MAX_CONCURRENT") or 0) or (os.cpu_count() or 1)
    return 1  # in-process: one at a time; dask: one step per worker process


def thread_budget(concurrent_runs: int = 1) -> int:
    """``CURATORNET_THREADS`` (set per worker by the stack), else
    cores // (steps the executor runs at once x runs the instance runs at once)."""
    if settings.env("CURATORNET_THREADS"):
        threads = int(settings.env("CURATORNET_THREADS"))
        if threads < 1:
            raise ValueError(f"CURATORNET_THREADS={threads}: need a positive number of threads")
        return threads
    cores = os.cpu_count() or 1
    return max(1, cores // (concurrent_steps() * max(1, concurrent_runs)))


def concurrent_runs(instance) -> int:
    """How many runs the instance's queued run coordinator starts side by side (1 without one)."""
    coordinator = getattr(instance, "run_coordinator", None) if instance is not None else None
    if not hasattr(coordinator, "get_run_queue_config"):
        return 1
    limit = coordinator.get_run_queue_config().max_concurrent_runs
    return os.cpu_count() or 1 if limit < 0 else max(1, limit)


class ComputeResource(dg.ConfigurableResource):
    """The CPU threads a step may use; sets torch's thread pool before the step runs."""

    threads: int = 0  # 0: thread_budget(): CURATORNET_THREADS, else cores // concurrent steps

    def budget(self, instance=None) -> int:
        return self.threads or thread_budget(concurrent_runs(instance))

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        import torch

        threads = self.budget(context.instance)
        torch.set_num_threads(threads)
        if context.log is not None:
            context.log.debug(f"torch uses {threads} threads in process {os.getpid()}")


class _Opaque:
    """A value Dask ships as one pickle without walking it: a run reading a range of
    partitions holds a ``KeyRangesPartitionsSubset``, which forbids iteration
    (docs/scaling.md, "dagster-dask and partition ranges")."""

    def __init__(self, value: tuple) -> None:
        self.value = value


def _execute_step_on_worker(dependencies: list, args: _Opaque) -> list:
    """dagster-dask's ``query_on_dask_worker`` on the unwrapped arguments. ``dependencies``
    (the upstream steps' futures) only makes Dask run the step after them."""
    from dagster_dask.executor import query_on_dask_worker

    return query_on_dask_worker(dependencies, *args.value)


def _run_scoped_dask_executor(address: str) -> dg.Executor:
    """dagster-dask's executor on an existing scheduler, with the run id in each task key:
    upstream's ``<job>.<step>`` keys let two runs of one job share results (docs/scaling.md,
    "What it costs"). Arguments travel as :class:`_Opaque`; imported here because
    ``distributed`` takes seconds to import."""
    from dagster_dask.executor import DaskExecutor, get_dask_resource_requirements

    class RunScopedDaskExecutor(DaskExecutor):
        def execute(self, plan_context, execution_plan):
            import dask.distributed

            instance = plan_context.instance
            if not instance.is_persistent:
                raise dg.DagsterInvariantViolationError("Dask needs a persistent Dagster instance")
            run_id = plan_context.dagster_run.run_id
            with dask.distributed.Client(address) as client:
                futures: dict[str, object] = {}
                for level in execution_plan.get_steps_to_execute_by_level():
                    for step in level:
                        dependencies = [
                            futures[key] for inp in step.step_inputs for key in inp.dependency_keys
                        ]
                        futures[step.key] = client.submit(
                            _execute_step_on_worker,
                            dependencies,
                            _Opaque(
                                (
                                    plan_context.reconstructable_job,
                                    plan_context.dagster_run,
                                    plan_context.run_config,
                                    [step.key],
                                    instance.get_ref(),
                                    execution_plan.known_state,
                                )
                            ),
                            key=f"{run_id}.{step.key}",
                            resources=get_dask_resource_requirements(step.tags),
                            pure=False,
                        )
                # a cancel reaches the run at the next event (a finished step): upstream's
                # raise_execution_interrupts, which would cut the wait short, is private
                done = dask.distributed.as_completed(list(futures.values()), with_results=True)
                for _future, events in done:
                    for event in events:
                        if not isinstance(event, dg.DagsterEvent):
                            raise TypeError(f"a Dask worker returned {type(event).__name__}")
                        yield event

    return RunScopedDaskExecutor("existing", {"address": address})


@dg.executor(
    name="dask",
    requirements=dg.multiple_process_executor_requirements(),
    config_schema={"address": dg.Field(dg.StringSource, is_required=False)},
)
def dask_executor(init_context) -> dg.Executor:
    """Steps on the workers of an existing ``distributed`` scheduler."""
    address = init_context.executor_config.get("address") or settings.env(
        "CURATORNET_DASK_SCHEDULER"
    )
    if not address:
        raise dg.DagsterInvariantViolationError(
            "the dask executor needs a scheduler: set CURATORNET_DASK_SCHEDULER "
            "(curatornet stack up does) or the executor's 'address' config"
        )
    return _run_scoped_dask_executor(address)


def executor() -> dg.ExecutorDefinition:
    """The executor ``CURATORNET_EXECUTOR`` names (default ``in_process``)."""
    return {
        "in_process": dg.in_process_executor,
        "multiprocess": dg.multiprocess_executor,
        "dask": dask_executor,
    }[executor_name()]
