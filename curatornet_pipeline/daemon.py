"""One Dagster daemon per home, shared by every invocation that needs it.

A watchdog (``python -m curatornet_pipeline.daemon``) runs the home's code server and
daemon while any invocation holds a lease (a shared ``flock`` on ``daemon.users``),
then cancels what is left and stops them; docs/architecture.md, "One daemon per home".
"""

import ctypes
import dataclasses
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from filelock import FileLock

from curatornet_pipeline import settings
from curatornet_pipeline.defs.automation import HEAVY_TAG

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
LOCATION = "curatornet_pipeline"
PR_SET_PDEATHSIG = 1

#: Dagster run states that still need a process (or a daemon) to finish.
NON_TERMINAL = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


#: The one dagster.yaml template: the home's (SQLite stores under DAGSTER_HOME) and the
#: stack's (``storage`` set to its PostgreSQL) differ in storage and limits only.
DAGSTER_YAML = """\
# Written by curatornet (curatornet_pipeline/daemon.py); {kept}
{storage}run_coordinator:
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
  start_timeout_seconds: {start_timeout}
  cancel_timeout_seconds: 30
  poll_interval_seconds: 5
  max_resume_run_attempts: 0
telemetry:
  enabled: false
"""


def dagster_yaml(
    max_runs: int, heavy_runs: int, storage: str = "", start_timeout: int = 180, kept: bool = True
) -> str:
    return DAGSTER_YAML.format(
        kept="edit freely, it is kept once present." if kept else "rewritten at every start.",
        storage=storage,
        max_runs=max_runs,
        heavy=HEAVY_TAG,
        heavy_runs=heavy_runs,
        start_timeout=start_timeout,
    )


def dagster_home() -> Path:
    """Point DAGSTER_HOME at the home's instance (created with its dagster.yaml if missing)."""
    path = settings.home_dir() / "dagster"
    path.mkdir(parents=True, exist_ok=True)
    config = path / "dagster.yaml"
    if not config.exists() or not config.read_text().strip():
        heavy = int(settings.env("CURATORNET_HEAVY_RUNS"))
        config.write_text(dagster_yaml(max(2, os.cpu_count() or 2), heavy))
    os.environ["DAGSTER_HOME"] = str(path)
    return path


def _locks() -> Path:
    folder = settings.home_dir() / ".locks"
    folder.mkdir(exist_ok=True)
    return folder


def _state_file() -> Path:
    return dagster_home() / "services.json"


@dataclasses.dataclass(frozen=True)
class Services:
    """Where the home's running services are: the code server's port and the workspace file."""

    watchdog: int
    port: int
    workspace: str
    automation: str

    def write_workspace(self, path: Path) -> None:
        """A workspace file that points the daemon and the webserver at the code server."""
        path.write_text(
            "# Written by curatornet: the shared code server (curatornet_pipeline/daemon.py)\n"
            f"load_from:\n  - grpc_server:\n      host: {HOST}\n      port: {self.port}\n"
            f"      location_name: {LOCATION}\n"
        )

    def cli_args(self) -> list[str]:
        """The options that point a ``dagster`` command at the shared code server."""
        return ["-w", self.workspace]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running() -> Services | None:
    """The home's services if their watchdog is alive."""
    try:
        state = json.loads(_state_file().read_text())
    except (OSError, ValueError):
        return None
    services = Services(**state)
    return services if _alive(services.watchdog) else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    """Whether something listens on 127.0.0.1:``port``."""
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((HOST, port)) == 0


def _code_server_ready(port: int) -> bool:
    check = [_bin("dagster"), "api", "grpc-health-check", "--host", HOST, "--port", str(port)]
    return subprocess.run(check, capture_output=True).returncode == 0


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def end_runs(instance: dg.DagsterInstance, runs: list[dg.DagsterRun], why: str) -> list[str]:
    """Mark runs that no process will finish as ended, and end their MLflow runs as KILLED.

    A run that had started becomes FAILURE; one that never started (or was being
    canceled) becomes CANCELED, so it holds no concurrency slot.
    """
    ended = []
    for run in runs:
        fresh = instance.get_run_by_id(run.run_id)
        if fresh is None or fresh.status not in NON_TERMINAL:
            continue
        if fresh.status in (dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING):
            instance.report_run_failed(fresh, why)
        else:
            instance.report_run_canceled(fresh, why)
        ended.append(run.run_id)
    if ended:
        end_mlflow_runs(ended, why)
    return ended


def end_mlflow_runs(run_ids: list[str], why: str) -> None:
    """End as KILLED the MLflow runs still RUNNING of these Dagster runs."""
    from curatornet_pipeline.defs.crash import end_runs as end_mlflow
    from curatornet_pipeline.defs.crash import running_mlflow_runs
    from curatornet_pipeline.defs.tracking import TAG_RUN_ID, MlflowTracking

    tracking = MlflowTracking()
    for run_id in run_ids:
        end_mlflow(
            tracking, running_mlflow_runs(tracking, [f"tags.`{TAG_RUN_ID}` = '{run_id}'"]), why
        )


def _orphans(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return list(instance.get_runs(dg.RunsFilter(statuses=NON_TERMINAL)))


@contextmanager
def lease(automation: str = "off", timeout_s: float = 300.0) -> Iterator[Services]:
    """Hold a share of the home's services for the duration; start them if none run.

    ``automation`` (``on``/``off``) sets the schedule and sensors of services
    started here; services already running keep theirs.
    """
    from curatornet_pipeline.locks import open_instance

    users = open(_locks() / "daemon.users", "a+")  # noqa: SIM115 - held for the lease
    try:
        fcntl.flock(users, fcntl.LOCK_SH)  # waits while stopping services hold it exclusively
        with FileLock(_locks() / "services.lock", timeout=timeout_s):
            services = running()
            if services is None:
                with open_instance() as instance:
                    ended = end_runs(
                        instance, _orphans(instance), "the invocation that launched it is gone"
                    )
                    if ended:
                        print(f"  ended {len(ended)} run(s) left by an earlier invocation")
                services = _start(automation, timeout_s)
                print(f"  started the home's Dagster daemon (watchdog {services.watchdog})")
        yield services
    finally:
        users.close()


def _start(automation: str, timeout_s: float) -> Services:
    _state_file().unlink(missing_ok=True)
    env = {**os.environ, "CURATORNET_AUTOMATION": automation}
    log = open(settings.home_dir() / "daemon.log", "ab")  # noqa: SIM115 - the child's
    proc = subprocess.Popen(
        [sys.executable, "-m", "curatornet_pipeline.daemon"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        services = running()
        if services is not None and services.watchdog == proc.pid:
            return services
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(
        f"the home's Dagster services did not start; see {settings.home_dir() / 'daemon.log'}"
    )


# --- the watchdog ------------------------------------------------------------------------


def _die_with_parent() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _spawn(cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, preexec_fn=_die_with_parent, stdin=subprocess.DEVNULL)


def _stop(proc: subprocess.Popen, sig: int, timeout_s: float = 30.0) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _no_users(users) -> bool:
    try:
        fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _cancel_all(instance: dg.DagsterInstance, timeout_s: float = 30.0) -> None:
    """Cancel what is still queued or running (its invocation is gone) while the daemon lives."""
    runs = _orphans(instance)
    for run in runs:
        if run.status != dg.DagsterRunStatus.CANCELING:
            instance.run_coordinator.cancel_run(run.run_id)
    deadline = time.monotonic() + timeout_s
    while _orphans(instance) and time.monotonic() < deadline:
        time.sleep(0.5)
    end_runs(instance, runs, "its invocation ended before it finished")


def serve() -> int:
    """The watchdog: code server and daemon until no invocation holds a lease."""
    port = free_port()
    workspace = dagster_home() / "workspace.yaml"
    automation = settings.env("CURATORNET_AUTOMATION")
    services = Services(os.getpid(), port, str(workspace), automation)
    services.write_workspace(workspace)
    stopping = False

    def on_signal(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    code_server = _spawn(
        [
            _bin("dagster"), "code-server", "start", "-m", "curatornet_pipeline.definitions",
            "-a", "defs", "-h", HOST, "-p", str(port), "--location-name", LOCATION,
        ]
    )  # fmt: skip
    while not _code_server_ready(port):
        if code_server.poll() is not None or stopping:
            _stop(code_server, signal.SIGTERM)
            return 1
        time.sleep(0.5)
    daemon = _spawn([_bin("dagster-daemon"), "run", "-w", str(workspace)])
    _state_file().write_text(json.dumps(dataclasses.asdict(services)))
    users = open(_locks() / "daemon.users", "a+")  # noqa: SIM115
    lock = FileLock(_locks() / "services.lock")
    while True:
        time.sleep(1.0)
        if stopping or code_server.poll() is not None or daemon.poll() is not None:
            lock.acquire()
            break
        lock.acquire()
        if _no_users(users):
            break
        lock.release()
    try:
        with dg.DagsterInstance.get() as instance:
            if daemon.poll() is None and code_server.poll() is None:
                _cancel_all(instance)
            _stop(daemon, signal.SIGINT)
            _stop(code_server, signal.SIGTERM)
            instance.wipe_daemon_heartbeats()  # a stopped daemon must not look alive
        _state_file().unlink(missing_ok=True)
    finally:
        lock.release()
        users.close()
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(serve())
