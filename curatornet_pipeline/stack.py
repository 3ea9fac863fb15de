"""``curatornet stack up|down|status``: the pipeline as a service on one machine.

Started in ``$CURATORNET_HOME/stack``, all on 127.0.0.1:

- a PostgreSQL cluster (Debian's ``postgresql``: ``initdb``/``pg_ctl``) with the
  databases ``dagster`` and ``mlflow``;
- the Dagster instance on it (``dagster-postgres``), with a queued run
  coordinator whose tag limits keep training runs from oversubscribing the
  cores, and run monitoring;
- the MLflow tracking server on PostgreSQL, proxying artifacts to a folder;
- a Dask scheduler and worker processes (``distributed``), each worker with
  its thread budget (``CURATORNET_THREADS``);
- the Dagster daemon and webserver, whose runs use the Dask executor.

``down`` stops every process it started, by process id, and keeps the data.
"""

import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from curatornet_pipeline import settings

HOST = "127.0.0.1"
PG_USER = "curatornet"
#: Run tag the coordinator limits: runs that train models carry it.
TRAINING_TAG = ("curatornet/kind", "training")


# --- processes ---------------------------------------------------------------


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants that are alive now."""
    import psutil

    try:
        proc = psutil.Process(pid)
        return [pid, *(c.pid for c in proc.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def stop_process_trees(pids: list[int], timeout_s: float = 30.0) -> None:
    """Stop each process and its descendants: SIGINT to its process group (what
    Ctrl-C does), then SIGTERM, then SIGKILL to whatever is still alive."""
    import psutil

    tree = {p for pid in pids for p in process_tree(pid)}
    for pid in pids:
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGINT)
            else:
                os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            pass
    for sig, wait_s in ((None, timeout_s), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        tree |= {p for pid in pids for p in process_tree(pid)}  # children started meanwhile
        procs = []
        for pid in tree:
            try:
                procs.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                pass
        if sig is not None:
            for proc in procs:
                try:
                    proc.send_signal(sig)
                except psutil.NoSuchProcess:
                    pass
        _, alive = psutil.wait_procs(procs, timeout=wait_s)
        if not alive:
            return


def _start(name: str, cmd: list[str], env: dict, log_dir: Path, **kwargs) -> int:
    """Start a server in its own session, output to ``<log_dir>/<name>.log``."""

    def reset() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    with open(log_dir / f"{name}.log", "wb") as log:
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=reset,
            start_new_session=True,
            cwd=settings.REPO_ROOT,
            **kwargs,
        )
    return proc.pid


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((HOST, port)) == 0


def _wait(what: str, ready, timeout_s: float, pid: int | None, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready():
            return
        if pid is not None and not _alive(pid):
            break
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    raise RuntimeError(f"{what} did not start (see {log}):\n{tail}")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


# --- layout ------------------------------------------------------------------


@dataclass(frozen=True)
class StackPaths:
    root: Path

    @property
    def pgdata(self) -> Path:
        return self.root / "postgres"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster"

    @property
    def artifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def password_file(self) -> Path:
        return self.root / "postgres.password"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"


def paths() -> StackPaths:
    return StackPaths(settings.home_dir() / "stack")


def read_state() -> dict | None:
    path = paths().state_file
    return json.loads(path.read_text()) if path.exists() else None


def _write_state(state: dict) -> None:
    path = paths().state_file
    path.write_text(json.dumps(state, indent=2))
    path.chmod(0o600)


# --- PostgreSQL ----------------------------------------------------------------


def _pg_bin(name: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if found:
        return str(found[-1])
    if shutil.which(name):
        return shutil.which(name)
    raise FileNotFoundError(
        f"PostgreSQL's {name} not found: install Debian's 'postgresql' package "
        "(scripts/install-system-deps.sh does)"
    )


def _pg_user() -> dict:
    """PostgreSQL refuses to run as root: as root, run it as the 'postgres' user."""
    if os.geteuid() != 0:
        return {}
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise RuntimeError("running as root needs the 'postgres' system user") from exc
    return {"user": "postgres", "group": "postgres"}


def _pg_run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, **_pg_user(), **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:2])} failed: {result.stdout}{result.stderr}")
    return result


def _init_postgres(p: StackPaths) -> str:
    """Create the cluster on first use; returns the password of its one user."""
    if p.password_file.exists():
        return p.password_file.read_text().strip()
    user = _pg_user()
    if user:
        for parent in [p.root, *p.root.parents]:
            if not os.stat(parent).st_mode & 0o001:
                raise PermissionError(
                    f"PostgreSQL runs as user 'postgres' here and cannot enter {parent}: "
                    "put CURATORNET_HOME under a folder others may traverse (chmod o+x)"
                )
    password = secrets.token_urlsafe(24)
    pwfile = p.root / "initdb.pw"
    pwfile.write_text(password)
    if p.pgdata.exists():
        shutil.rmtree(p.pgdata)  # a half-created cluster from an interrupted first start
    p.pgdata.mkdir(mode=0o700)
    if user:
        shutil.chown(p.pgdata, "postgres", "postgres")
        shutil.chown(pwfile, "postgres", "postgres")
    try:
        _pg_run(
            [
                _pg_bin("initdb"),
                "-D",
                str(p.pgdata),
                "-U",
                PG_USER,
                "--pwfile",
                str(pwfile),
                "--auth",
                "scram-sha-256",
                "-E",
                "UTF8",
                "--no-instructions",
            ]  # fmt: skip
        )
    finally:
        pwfile.unlink()
    conf = p.pgdata / "postgresql.conf"
    with conf.open("a") as f:
        f.write("\ninclude_if_exists = 'curatornet.conf'\n")
    p.password_file.write_text(password)
    p.password_file.chmod(0o600)
    return password


def _start_postgres(p: StackPaths, port: int) -> int:
    conf = p.pgdata / "curatornet.conf"
    conf.write_text(f"listen_addresses = '{HOST}'\nport = {port}\nunix_socket_directories = ''\n")
    if _pg_user():
        shutil.chown(conf, "postgres", "postgres")
    log = p.logs / "postgres.log"
    if _pg_user():
        log.touch()
        shutil.chown(log, "postgres", "postgres")
    _pg_run([_pg_bin("pg_ctl"), "-D", str(p.pgdata), "-l", str(log), "-w", "-t", "60", "start"])
    return int((p.pgdata / "postmaster.pid").read_text().split()[0])


def _stop_postgres(p: StackPaths) -> None:
    if (p.pgdata / "postmaster.pid").exists():
        _pg_run([_pg_bin("pg_ctl"), "-D", str(p.pgdata), "-m", "fast", "-w", "-t", "60", "stop"])


def _ensure_databases(port: int, password: str) -> None:
    import psycopg2

    conn = psycopg2.connect(
        host=HOST, port=port, user=PG_USER, password=password, dbname="postgres"
    )
    conn.autocommit = True
    with conn.cursor() as cur:
        for db in ("dagster", "mlflow"):
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{db}"')
    conn.close()


def postgres_url(state: dict, db: str) -> str:
    # SQLAlchemy 2.1 picks psycopg 3 for postgresql://; the stack installs psycopg2
    return f"postgresql+psycopg2://{PG_USER}:{state['password']}@{HOST}:{state['ports']['postgres']}/{db}"


# --- Dagster instance ------------------------------------------------------------


def _write_dagster_yaml(p: StackPaths, port: int, password: str, workers: int) -> None:
    p.dagster_home.mkdir(exist_ok=True)
    key, value = TRAINING_TAG
    text = f"""# Written by `curatornet stack up`; rewritten at every start.
storage:
  postgres:
    postgres_db:
      username: {PG_USER}
      password: "{password}"
      hostname: {HOST}
      db_name: dagster
      port: {port}
      scheme: postgresql+psycopg2
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: {workers}
    dequeue_interval_seconds: 1
    # launch the runs of a stage side by side: one at a time, each launch waits seconds
    # for the code server, and short runs never overlap on the workers
    dequeue_use_threads: true
    dequeue_num_workers: {workers}
    tag_concurrency_limits:
      # training runs: at most one per worker, so their threads fit the cores
      - key: "{key}"
        value: "{value}"
        limit: {workers}
run_monitoring:
  enabled: true
  poll_interval_seconds: 5
  start_timeout_seconds: 900  # a run worker imports torch: slow on busy cores
telemetry:
  enabled: false
"""
    path = p.dagster_home / "dagster.yaml"
    path.write_text(text)
    path.chmod(0o600)


# --- up / down / status ------------------------------------------------------------


def _env(state: dict) -> dict[str, str]:
    """The environment of every server and worker of the stack."""
    env = dict(os.environ)
    env.update(
        {
            "CURATORNET_HOME": str(settings.home_dir()),
            "DAGSTER_HOME": str(paths().dagster_home),
            "MLFLOW_TRACKING_URI": f"http://{HOST}:{state['ports']['mlflow']}",
            "CURATORNET_EXECUTOR": "dask",
            "CURATORNET_DASK_SCHEDULER": f"tcp://{HOST}:{state['ports']['scheduler']}",
            "CURATORNET_STORAGE": settings.storage_uri(),
        }
    )
    env.pop("CURATORNET_THREADS", None)
    return env


def stack_env() -> dict[str, str]:
    """What a client (a test, a script) sets to use the running stack."""
    state = read_state()
    if state is None:
        raise RuntimeError("the stack is not up: run `curatornet stack up`")
    return {k: v for k, v in _env(state).items() if k not in os.environ or os.environ[k] != v}


def up(workers: int = 2, threads: int | None = None, timeout_s: float = 240.0) -> dict:
    """Start the stack; returns its state (ports, pids, start time in seconds)."""
    started = time.monotonic()
    p = paths()
    state = read_state()
    if state and any(_alive(pid) for pid in state["pids"].values()):
        raise RuntimeError(f"the stack already runs (state in {p.state_file}); stack down first")
    p.root.mkdir(parents=True, exist_ok=True)
    p.root.chmod(0o755)
    p.logs.mkdir(exist_ok=True)
    p.artifacts.mkdir(exist_ok=True)
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    password = _init_postgres(p)
    ports = {n: free_port() for n in ("postgres", "mlflow", "webserver", "scheduler")}
    state = {
        "ports": ports,
        "password": password,
        "workers": workers,
        "threads_per_worker": threads,
        "pids": {},
    }
    _write_state(state)
    try:
        state["pids"]["postgres"] = _start_postgres(p, ports["postgres"])
        _write_state(state)
        _ensure_databases(ports["postgres"], password)
        _write_dagster_yaml(p, ports["postgres"], password, workers)
        env = _env(state)
        bindir = Path(sys.executable).parent
        workspace = str(settings.REPO_ROOT / "workspace.yaml")
        mlflow_env = {**env, "MLFLOW_BACKEND_STORE_URI": postgres_url(state, "mlflow")}
        launches = {
            "mlflow": (
                [
                    str(bindir / "mlflow"),
                    "server",
                    "--host",
                    HOST,
                    "--port",
                    str(ports["mlflow"]),
                    "--artifacts-destination",
                    str(p.artifacts),
                    "--workers",
                    "1",
                ],  # fmt: skip
                mlflow_env,
            ),
            "scheduler": (
                [
                    str(bindir / "dask"),
                    "scheduler",
                    "--host",
                    HOST,
                    "--port",
                    str(ports["scheduler"]),
                    "--no-dashboard",
                ],  # fmt: skip
                env,
            ),
        }
        for name, (cmd, cmd_env) in launches.items():
            state["pids"][name] = _start(name, cmd, cmd_env, p.logs)
            _write_state(state)
        worker_env = {
            **env,
            "CURATORNET_THREADS": str(threads),
            "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
        }
        for i in range(workers):
            name = f"worker-{i}"
            cmd = [
                str(bindir / "dask"), "worker", env["CURATORNET_DASK_SCHEDULER"],
                "--host", HOST, "--nworkers", "1", "--nthreads", "1", "--name", name,
                "--no-dashboard", "--local-directory", str(p.root / "dask"),
            ]  # fmt: skip
            state["pids"][name] = _start(name, cmd, worker_env, p.logs)
        state["pids"]["daemon"] = _start(
            "daemon", [str(bindir / "dagster-daemon"), "run", "-w", workspace], env, p.logs
        )
        state["pids"]["webserver"] = _start(
            "webserver",
            [
                str(bindir / "dagster-webserver"),
                "-h",
                HOST,
                "-p",
                str(ports["webserver"]),
                "-w",
                workspace,
            ],  # fmt: skip
            env,
            p.logs,
        )
        _write_state(state)
        _wait(
            "the MLflow server",
            lambda: _http_ok(f"http://{HOST}:{ports['mlflow']}/health"),
            timeout_s,
            state["pids"]["mlflow"],
            p.logs / "mlflow.log",
        )
        scheduler_log = p.logs / "scheduler.log"
        _wait(
            f"{workers} Dask workers",
            lambda: (
                len(re.findall(r"Register worker", scheduler_log.read_text(errors="replace")))
                >= workers
            ),
            timeout_s,
            state["pids"]["scheduler"],
            scheduler_log,
        )
        _wait(
            "the Dagster webserver",
            lambda: _http_ok(f"http://{HOST}:{ports['webserver']}/server_info"),
            timeout_s,
            state["pids"]["webserver"],
            p.logs / "webserver.log",
        )
    except BaseException:
        down()
        raise
    state["up_seconds"] = round(time.monotonic() - started, 1)
    _write_state(state)
    return state


def down() -> dict:
    """Stop every process the stack started (by pid), then PostgreSQL; keep the data."""
    started = time.monotonic()
    p = paths()
    state = read_state()
    if state is None:
        return {"down_seconds": 0.0, "stopped": []}
    pids = state.get("pids", {})
    order = ["webserver", "daemon", *sorted(k for k in pids if k.startswith("worker-"))]
    order += ["scheduler", "mlflow"]
    stop_process_trees([pids[n] for n in order if n in pids and _alive(pids[n])])
    if "postgres" in pids:
        _stop_postgres(p)
    p.state_file.unlink()
    return {"down_seconds": round(time.monotonic() - started, 1), "stopped": list(pids)}


def status() -> dict:
    """Each server's pid, whether it is alive, and whether its port answers."""
    state = read_state()
    if state is None:
        return {"up": False}
    procs = {name: {"pid": pid, "alive": _alive(pid)} for name, pid in state["pids"].items()}
    for name, port in state["ports"].items():
        if name in procs:
            procs[name]["port"] = port
            procs[name]["listening"] = port_open(port)
    return {"up": all(p["alive"] for p in procs.values()), "processes": procs}


# --- running the pipeline through the daemon --------------------------------------


def run_pipeline(profile: str = "tiny", overrides: dict | None = None, log=print) -> list:
    """Queue the whole asset graph on the running stack, stage by stage, and wait.

    The same named jobs and stages as ``curatornet run`` (``runner.plan``), submitted
    to the stack's instance: the daemon starts them within the run coordinator's
    limits and their steps execute on the Dask workers. Training runs carry the tag
    the coordinator limits. Returns the finished runs.
    """
    state = read_state()
    if state is None:
        raise RuntimeError("the stack is not up: run `curatornet stack up`")
    os.environ.update(_env(state))
    import dagster as dg

    from curatornet_pipeline.definitions import defs
    from curatornet_pipeline.defs.assets.training import add_grid_partitions
    from curatornet_pipeline.defs.automation import TRAINING_JOBS
    from curatornet_pipeline.defs.resources import pipeline_settings, run_config
    from curatornet_pipeline.runner import daemon_alive, launch_all, plan

    if overrides is None:  # CURATORNET_OVERRIDES, as for `curatornet run` (docs/scaling.md)
        from curatornet_pipeline.settings import run_overrides

        overrides = run_overrides()
    started = time.monotonic()

    def on_done(launch, run, seconds: float) -> None:
        log(
            f"  [{time.monotonic() - started:7.1f}s] {launch.label():<45} "
            f"{run.status.value.lower():<8} ({seconds:.1f}s)  run {run.run_id[:8]}"
        )

    runs = []
    with dg.DagsterInstance.get() as instance:
        deadline = time.monotonic() + 300  # a daemon just started loads the code first
        while not daemon_alive(instance, within=120):
            if time.monotonic() > deadline:
                raise RuntimeError("the stack's Dagster daemon sends no heartbeat: stack status")
            time.sleep(2)
        add_grid_partitions(instance, pipeline_settings(profile, overrides).grid())
        tags = {"curatornet/trigger": "stack", "curatornet/invocation": str(time.time_ns())}
        for stage in plan(defs, instance):
            training = any(launch.job in TRAINING_JOBS for launch in stage)
            stage_tags = {**tags, TRAINING_TAG[0]: TRAINING_TAG[1]} if training else tags
            runs += launch_all(
                instance, [stage], run_config(profile, overrides), stage_tags, on_done
            )
    return runs


def urls(state: dict) -> dict[str, str]:
    ports = state["ports"]
    return {
        "Dagster UI": f"http://{HOST}:{ports['webserver']}",
        "MLflow": f"http://{HOST}:{ports['mlflow']}",
        "Dask scheduler": f"tcp://{HOST}:{ports['scheduler']}",
        "PostgreSQL": f"{HOST}:{ports['postgres']} (user {PG_USER})",
    }
