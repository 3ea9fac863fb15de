"""The main job: the named jobs of the whole graph, launched through the Dagster instance.

``curatornet run`` submits the runs of each stage (``refresh_upstream``, the
seven ``sample_triplets`` partitions, every model partition of the three
training jobs, ``evaluate``) to the instance of ``$CURATORNET_HOME/dagster``
exactly as the UI or ``dagster job launch`` would: the queued run coordinator
decides what runs side by side, the Dagster daemon launches the runs and run
monitoring fails runs whose process died. Every run carries its job name and a
``curatornet/trigger`` tag, and shows on the Overview timeline.
"""

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import dagster as dg

from curatornet_pipeline import settings
from curatornet_pipeline.defs.automation import HEAVY_TAG, STAGES, TRIGGER_TAG

logger = logging.getLogger(__name__)

INVOCATION_TAG = "curatornet/invocation"

DAGSTER_YAML = """\
# Written by curatornet (runner.dagster_home); edit freely, it is kept once present.
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: {max_runs}
    dequeue_interval_seconds: 1
    # launch a stage's runs side by side: one at a time, each waits seconds for the code server
    dequeue_use_threads: true
    dequeue_num_workers: {max_runs}
    tag_concurrency_limits:
      - key: "{heavy}"
        limit: {heavy_runs}
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  poll_interval_seconds: 5
  max_resume_run_attempts: 0
telemetry:
  enabled: false
"""

FINISHED = {
    dg.DagsterRunStatus.SUCCESS,
    dg.DagsterRunStatus.FAILURE,
    dg.DagsterRunStatus.CANCELED,
}


def dagster_home() -> str:
    """Point DAGSTER_HOME at the project's instance (created with its dagster.yaml if missing)."""
    path = settings.home_dir() / "dagster"
    path.mkdir(parents=True, exist_ok=True)
    config = path / "dagster.yaml"
    if not config.exists() or not config.read_text().strip():
        cores = os.cpu_count() or 2
        config.write_text(
            DAGSTER_YAML.format(
                max_runs=max(2, cores),
                heavy=HEAVY_TAG,
                heavy_runs=int(os.environ.get("CURATORNET_HEAVY_RUNS", "1")),
            )
        )
    os.environ["DAGSTER_HOME"] = str(path)
    return str(path)


def workspace_file() -> str:
    return str(settings.REPO_ROOT / "workspace.yaml")


@dataclass(frozen=True)
class Launch:
    """One run to submit: a named job, optionally one partition."""

    job: str
    partition: str | None = None

    def label(self) -> str:
        return f"{self.job}[{self.partition}]" if self.partition else self.job


def plan(defs: dg.Definitions, instance: dg.DagsterInstance) -> list[list[Launch]]:
    """The runs of each stage, in order: one per partition of a partitioned job."""
    graph = defs.resolve_asset_graph()
    stages = []
    for jobs in STAGES:
        launches = []
        for job in jobs:
            keys = job.selection.resolve(graph)
            partitions = {graph.get(k).partitions_def for k in keys} - {None}
            if not partitions:
                launches.append(Launch(job.name))
                continue
            (partitions_def,) = partitions
            for key in partitions_def.get_partition_keys(dynamic_partitions_store=instance):
                launches.append(Launch(job.name, key))
        stages.append(launches)
    return stages


def daemon_alive(instance: dg.DagsterInstance, within: float = 45.0) -> bool:
    """Whether a Dagster daemon has sent a heartbeat to this instance recently."""
    beats = instance.get_daemon_heartbeats()
    now = time.time()
    return any(now - hb.timestamp < within for hb in beats.values())


@contextmanager
def daemon(instance: dg.DagsterInstance, env: dict[str, str]) -> Iterator[bool]:
    """A Dagster daemon for the duration (reuses a running one). Yields True if started here."""
    if daemon_alive(instance):
        yield False
        return
    cmd = [sys.executable, "-m", "dagster._daemon", "run", "-w", workspace_file()]
    log = open(settings.home_dir() / "daemon.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        yield True
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        instance.wipe_daemon_heartbeats()  # a stopped daemon must not look alive to the next run
        log.close()


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


def launch_all(
    instance: dg.DagsterInstance,
    stages: list[list[Launch]],
    run_config: dict,
    tags: dict[str, str],
    on_done: Callable[[Launch, dg.DagsterRun, float], None] | None = None,
    poll: float = 1.0,
    queue_timeout: float = 180.0,
) -> list[dg.DagsterRun]:
    """Submit each stage's runs through the workspace, wait for them, stop at a failure."""
    from dagster._cli.job import _create_run  # the same code path as `dagster job launch`
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    done: list[dg.DagsterRun] = []
    target = WorkspaceFileTarget(paths=[workspace_file()])
    with WorkspaceProcessContext(instance, target, version=dg.__version__) as process:
        for stage in stages:
            context = process.create_request_context()
            (name,) = context.get_code_location_entries()  # workspace.yaml: one location
            location = context.get_code_location(name)
            (repo,) = location.get_repositories().values()
            created = []
            for launch in stage:
                run_tags = {**tags, TRIGGER_TAG: tags.get(TRIGGER_TAG, "cli")}
                if launch.partition is not None:
                    run_tags["dagster/partition"] = launch.partition
                run = _create_run(
                    instance=instance,
                    code_location=location,
                    remote_repo=repo,
                    remote_job=repo.get_full_job(launch.job),
                    run_config=run_config,
                    tags=run_tags,
                    op_selection=None,
                    run_id=None,
                )
                created.append((run, launch))
            # Creating a run asks the code server for its plan (seconds on busy cores);
            # enqueueing is one event. Create them all first, so that the whole stage is
            # queued at once and the coordinator's limits, not the order of creation,
            # decide which runs start together.
            submitted = {}
            for run, launch in created:
                instance.submit_run(run.run_id, context)
                submitted[run.run_id] = (launch, time.time())
            try:
                _wait(instance, submitted, done, on_done, poll, queue_timeout)
            except KeyboardInterrupt:
                for run_id in submitted:
                    instance.run_coordinator.cancel_run(run_id)
                raise
    return done


def _wait(
    instance: dg.DagsterInstance,
    submitted: dict[str, tuple[Launch, float]],
    done: list[dg.DagsterRun],
    on_done: Callable[[Launch, dg.DagsterRun, float], None] | None,
    poll: float,
    queue_timeout: float,
) -> None:
    """Until every submitted run has finished; LaunchError at the first that failed."""
    while submitted:
        time.sleep(poll)
        for run_id in list(submitted):
            run = instance.get_run_by_id(run_id)
            waited = time.time() - submitted[run_id][1]
            if run is not None and run.status == dg.DagsterRunStatus.QUEUED:
                if waited > queue_timeout and not daemon_alive(instance):
                    for other in submitted:
                        instance.run_coordinator.cancel_run(other)
                    raise LaunchError(
                        "runs are queued but no Dagster daemon is running to launch "
                        "them: start one (`dagster-daemon run`, `curatornet ui`) and rerun"
                    )
            if run is None or run.status not in FINISHED:
                continue
            launch, started = submitted.pop(run_id)
            done.append(run)
            if on_done is not None:
                on_done(launch, run, time.time() - started)
            if run.status != dg.DagsterRunStatus.SUCCESS:
                for other in submitted:
                    instance.run_coordinator.cancel_run(other)
                raise LaunchError(
                    f"run {run_id} of {launch.label()} ended {run.status.value}: "
                    f"{_first_error(instance, run_id)}"
                )
