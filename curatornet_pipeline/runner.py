"""The main job: the named jobs of the whole graph, launched through the Dagster instance.

``curatornet run`` submits each stage's runs with ``dagster job launch`` against the
home's shared code server (:mod:`curatornet_pipeline.daemon`), waits for them and stops
at the first failure; docs/architecture.md, "Jobs, triggers and the main job".
"""

import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from curatornet_pipeline import settings, stack
from curatornet_pipeline.daemon import NON_TERMINAL, Services, end_mlflow_runs, end_runs
from curatornet_pipeline.defs.automation import STAGES, TRIGGER_TAG

logger = logging.getLogger(__name__)

FINISHED = {
    dg.DagsterRunStatus.SUCCESS,
    dg.DagsterRunStatus.FAILURE,
    dg.DagsterRunStatus.CANCELED,
}


@dataclass(frozen=True)
class Launch:
    """One run to submit: a named job, optionally one partition."""

    job: str
    partition: str | None = None

    def label(self) -> str:
        return f"{self.job}[{self.partition}]" if self.partition else self.job


def plan(
    defs: dg.Definitions, instance: dg.DagsterInstance, jobs: list[str] | None = None
) -> list[list[Launch]]:
    """The runs of each stage, in order: one per partition of a partitioned job.

    ``jobs`` keeps only the named jobs (ValueError naming any unknown one).
    """
    known = {job.name for stage in STAGES for job in stage}
    unknown = sorted(set(jobs or ()) - known)
    if unknown:
        raise ValueError(f"unknown jobs {unknown}; the graph's jobs are {sorted(known)}")
    graph = defs.resolve_asset_graph()
    stages = []
    for stage_jobs in STAGES:
        launches = []
        for job in stage_jobs:
            if jobs is not None and job.name not in jobs:
                continue
            keys = job.selection.resolve(graph)
            partitions = {graph.get(k).partitions_def for k in keys} - {None}
            if not partitions:
                launches.append(Launch(job.name))
                continue
            (partitions_def,) = partitions
            for key in partitions_def.get_partition_keys(dynamic_partitions_store=instance):
                launches.append(Launch(job.name, key))
        if launches:
            stages.append(launches)
    return stages


class LaunchError(RuntimeError):
    """A run of the main job failed; the message names the run and the step."""


def _first_error(instance: dg.DagsterInstance, run_id: str) -> str:
    records = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    for record in records:
        event = record.dagster_event
        data = event.event_specific_data if event else None
        error = getattr(data, "error", None)
        if error is not None:
            return f"{event.step_key}: {error.message.strip().splitlines()[-1]}"
    failures = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    return failures[-1].message if failures else "see the run in the Dagster UI"


def _launch(services: Services, launch: Launch, run_config: dict, tags: dict[str, str]) -> str:
    """Submit one run with ``dagster job launch`` against the home's code server; its run id."""
    run_id = str(uuid.uuid4())
    run_tags = {**tags, TRIGGER_TAG: tags.get(TRIGGER_TAG, "cli")}
    if launch.partition is not None:
        run_tags["dagster/partition"] = launch.partition
    cmd = [
        str(Path(sys.executable).parent / "dagster"), "job", "launch", *services.cli_args(),
        "-j", launch.job, "--config-json", json.dumps(run_config),
        "--tags", json.dumps(run_tags), "--run-id", run_id,
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        raise LaunchError(f"`dagster job launch -j {launch.job}` failed: {lines[-1]}")
    return run_id


def launch_all(
    instance: dg.DagsterInstance,
    services: Services,
    stages: list[list[Launch]],
    run_config: dict,
    tags: dict[str, str],
    on_done: Callable[[Launch, dg.DagsterRun, float], None] | None = None,
    poll: float = 1.0,
) -> list[dg.DagsterRun]:
    """Submit each stage's runs with ``dagster job launch``, wait for them, stop at a failure.

    Each stage's runs are submitted together (two launches at a time: each is a
    short process), so the coordinator's limits, not the order of submission,
    decide which start together. On a failure, Ctrl-C or SIGTERM every run of
    this call that has not finished is canceled and ended before this returns.
    """
    done: list[dg.DagsterRun] = []
    submitted: dict[str, tuple[Launch, float]] = {}
    try:
        for stage in stages:
            with ThreadPoolExecutor(max_workers=2) as pool:
                ids = list(pool.map(lambda x: _launch(services, x, run_config, tags), stage))
            for run_id, launch in zip(ids, stage, strict=True):
                submitted[run_id] = (launch, time.time())
            _wait(instance, submitted, done, on_done, poll)
    except BaseException:
        cancel(instance, list(submitted))
        raise
    return done


def cancel(instance: dg.DagsterInstance, run_ids: list[str], timeout_s: float = 30.0) -> None:
    """Cancel these runs, wait for them to end, and end whatever no process will end."""
    runs = [r for r in map(instance.get_run_by_id, run_ids) if r is not None]
    pending = [r for r in runs if r.status in NON_TERMINAL]
    for run in pending:
        if run.status != dg.DagsterRunStatus.CANCELING:
            instance.run_coordinator.cancel_run(run.run_id)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        statuses = [instance.get_run_by_id(r.run_id).status for r in pending]
        if not any(s in NON_TERMINAL for s in statuses):
            break
        time.sleep(0.5)
    end_runs(instance, pending, "canceled by the invocation that launched it")
    end_mlflow_runs([r.run_id for r in runs], "its Dagster run was canceled or failed")


def _wait(
    instance: dg.DagsterInstance,
    submitted: dict[str, tuple[Launch, float]],
    done: list[dg.DagsterRun],
    on_done: Callable[[Launch, dg.DagsterRun, float], None] | None,
    poll: float,
) -> None:
    """Until every submitted run has finished; LaunchError at the first that failed."""
    pending = {run_id for run_id in submitted if run_id not in {r.run_id for r in done}}
    while pending:
        time.sleep(poll)
        for run_id in list(pending):
            run = instance.get_run_by_id(run_id)
            if run is None or run.status not in FINISHED:
                continue
            pending.discard(run_id)
            launch, started = submitted[run_id]
            done.append(run)
            if on_done is not None:
                on_done(launch, run, time.time() - started)
            if run.status != dg.DagsterRunStatus.SUCCESS:
                raise LaunchError(
                    f"run {run_id} of {launch.label()} ended {run.status.value}: "
                    f"{_first_error(instance, run_id)}"
                )


def run_on_stack(profile: str = "tiny", overrides: dict | None = None, log=print) -> list:
    """Queue the whole asset graph on the running stack, stage by stage, and wait.

    The same named jobs and stages as ``curatornet run`` (``runner.plan``), launched
    with ``dagster job launch`` against the stack's code server: the stack's daemon
    starts them within the run coordinator's limits and their steps execute on the
    Dask workers. Returns the finished runs.
    """
    from curatornet_pipeline.definitions import defs
    from curatornet_pipeline.defs.assets.training import add_grid_partitions
    from curatornet_pipeline.defs.resources import pipeline_settings, run_config

    state = stack.read_state()
    if state is None:
        raise RuntimeError("the stack is not up: run `curatornet stack up`")
    os.environ.update(stack.stack_env())

    if overrides is None:  # CURATORNET_OVERRIDES, as for `curatornet run` (docs/scaling.md)
        overrides = settings.run_overrides()
    started = time.monotonic()

    def on_done(launch, run, seconds: float) -> None:
        log(
            f"  [{time.monotonic() - started:7.1f}s] {launch.label():<45} "
            f"{run.status.value.lower():<8} ({seconds:.1f}s)  run {run.run_id[:8]}"
        )

    services = stack.stack_services(state)
    with dg.DagsterInstance.get() as instance:
        add_grid_partitions(instance, pipeline_settings(profile, overrides).grid())
        tags = {"curatornet/trigger": "stack", "curatornet/invocation": str(time.time_ns())}
        return launch_all(
            instance, services, plan(defs, instance), run_config(profile, overrides), tags, on_done
        )
