"""``curatornet stack up|down|status|run``: the pipeline as a service on one machine.

Started in ``$CURATORNET_HOME/stack`` under ``supervisord`` (Supervisor, the
process manager; ``supervisord.conf`` there), all on 127.0.0.1:

- a PostgreSQL cluster (Debian's ``postgresql``) with the databases
  ``dagster`` and ``mlflow``;
- the Dagster instance on it (``dagster-postgres``), with a queued run
  coordinator whose tag limit keeps heavy runs from oversubscribing the cores,
  and run monitoring;
- the MLflow tracking server on PostgreSQL, proxying artifacts to a folder;
- a Dask scheduler and worker processes (``distributed``), each worker with
  its thread budget (``CURATORNET_THREADS``);
- a Dagster code server, and the Dagster daemon and webserver reading it,
  whose runs use the Dask executor.

``supervisorctl -c $CURATORNET_HOME/stack/supervisord.conf status`` shows them;
``down`` shuts supervisord down, which stops every program's process group,
and keeps the data.
"""

import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from curatornet_pipeline import settings
from curatornet_pipeline.daemon import LOCATION, Services, dagster_yaml

HOST = "127.0.0.1"
PG_USER = "curatornet"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((HOST, port)) == 0


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _wait(what: str, ready, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    raise RuntimeError(f"{what} did not start (see {log}):\n{tail}")


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

    @property
    def supervisor_conf(self) -> Path:
        return self.root / "supervisord.conf"


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


def _databases(port: int, password: str) -> bool:
    """Create the databases ``dagster`` and ``mlflow`` once PostgreSQL answers; False before."""
    import psycopg2

    try:
        conn = psycopg2.connect(
            host=HOST, port=port, user=PG_USER, password=password, dbname="postgres"
        )
    except psycopg2.OperationalError:
        return False
    conn.autocommit = True
    with conn.cursor() as cur:
        for db in ("dagster", "mlflow"):
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{db}"')
    conn.close()
    return True


def postgres_url(state: dict, db: str) -> str:
    # SQLAlchemy 2.1 picks psycopg 3 for postgresql://; the stack installs psycopg2
    return f"postgresql+psycopg2://{PG_USER}:{state['password']}@{HOST}:{state['ports']['postgres']}/{db}"


def _postgres_storage(port: int, password: str) -> str:
    return f"""storage:
  postgres:
    postgres_db:
      username: {PG_USER}
      password: "{password}"
      hostname: {HOST}
      db_name: dagster
      port: {port}
      scheme: postgresql+psycopg2
"""


# --- supervisord ------------------------------------------------------------------


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


def _services(state: dict) -> Services:
    """The stack's code server, as the Dagster commands address it."""
    workspace = str(paths().dagster_home / "workspace.yaml")
    return Services(0, state["ports"]["codeserver"], workspace, "on")


def _programs(p: StackPaths, state: dict) -> dict[str, dict]:
    """supervisord's programs: name -> command, extra environment, options."""
    bindir = Path(sys.executable).parent
    ports = state["ports"]
    threads = str(state["threads_per_worker"])
    workspace = _services(state).workspace
    postgres = [_pg_bin("postgres"), "-D", str(p.pgdata)]
    programs = {
        "postgres": {"cmd": postgres, "user": "postgres" if _pg_user() else None},
        "mlflow": {
            "cmd": [
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
            "env": {
                "MLFLOW_BACKEND_STORE_URI": postgres_url(state, "mlflow"),
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            },
        },
        "scheduler": {
            "cmd": [
                str(bindir / "dask"),
                "scheduler",
                "--host",
                HOST,
                "--port",
                str(ports["scheduler"]),
                "--no-dashboard",
            ]  # fmt: skip
        },
        "codeserver": {
            "cmd": [
                str(bindir / "dagster"),
                "code-server",
                "start",
                "-m",
                "curatornet_pipeline.definitions",
                "-a",
                "defs",
                "-h",
                HOST,
                "-p",
                str(ports["codeserver"]),
                "--location-name",
                LOCATION,
            ]  # fmt: skip
        },
        "daemon": {"cmd": [str(bindir / "dagster-daemon"), "run", "-w", workspace]},
        "webserver": {
            "cmd": [
                str(bindir / "dagster-webserver"),
                "-h",
                HOST,
                "-p",
                str(ports["webserver"]),
                "-w",
                workspace,
            ]  # fmt: skip
        },
    }
    for i in range(state["workers"]):
        programs[f"worker-{i}"] = {
            "cmd": [
                str(bindir / "dask"),
                "worker",
                f"tcp://{HOST}:{ports['scheduler']}",
                "--host",
                HOST,
                "--nworkers",
                "1",
                "--nthreads",
                "1",
                "--name",
                f"worker-{i}",
                "--no-dashboard",
                "--local-directory",
                str(p.root / "dask"),
            ],  # fmt: skip
            "env": {
                "CURATORNET_THREADS": threads,
                "OMP_NUM_THREADS": threads,
                "MKL_NUM_THREADS": threads,
            },
        }
    return programs


def _quote(value: str) -> str:
    return '"' + value.replace("%", "%%").replace('"', '\\"') + '"'


def _write_supervisor_conf(p: StackPaths, state: dict) -> None:
    lines = [
        "; Written by `curatornet stack up`; rewritten at every start.",
        "[supervisord]",
        f"logfile={p.logs / 'supervisord.log'}",
        f"pidfile={p.root / 'supervisord.pid'}",
        f"childlogdir={p.logs}",
        f"directory={settings.REPO_ROOT}",
        "[unix_http_server]",
        f"file={p.root / 'supervisor.sock'}",
        "chmod=0700",
        "[supervisorctl]",
        f"serverurl=unix://{p.root / 'supervisor.sock'}",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
    ]
    for name, program in _programs(p, state).items():
        env = program.get("env", {})
        lines += [
            f"[program:{name}]",
            "command=" + " ".join(_quote(c) for c in program["cmd"]),
            "autostart=false",
            "autorestart=unexpected",
            "startsecs=2",
            "stopsignal=INT",  # Ctrl-C: what the Dagster processes and PostgreSQL (fast) expect
            "stopwaitsecs=30",
            "stopasgroup=true",
            "killasgroup=true",
            "redirect_stderr=true",
            f"stdout_logfile={p.logs / (name + '.log')}",
        ]
        if program.get("user"):
            lines.append(f"user={program['user']}")
        if env:
            lines.append("environment=" + ",".join(f"{k}={_quote(v)}" for k, v in env.items()))
    p.supervisor_conf.write_text("\n".join(lines) + "\n")
    p.supervisor_conf.chmod(0o600)


def _ctl(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    bindir = Path(sys.executable).parent
    cmd = [str(bindir / "supervisorctl"), "-c", str(paths().supervisor_conf), *args]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"supervisorctl {' '.join(args)}: {result.stdout}{result.stderr}")
    return result


def _supervisord_pid() -> int | None:
    try:
        pid = int((paths().root / "supervisord.pid").read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


# --- up / down / status ------------------------------------------------------------


def up(workers: int = 2, threads: int | None = None, timeout_s: float = 240.0) -> dict:
    """Start the stack; returns its state (ports, pids, start time in seconds)."""
    started = time.monotonic()
    p = paths()
    if _supervisord_pid() is not None:
        raise RuntimeError(f"the stack already runs ({p.supervisor_conf}); stack down first")
    p.root.mkdir(parents=True, exist_ok=True)
    p.root.chmod(0o755)
    p.logs.mkdir(exist_ok=True)
    p.artifacts.mkdir(exist_ok=True)
    p.dagster_home.mkdir(exist_ok=True)
    password = _init_postgres(p)
    names = ("postgres", "mlflow", "webserver", "scheduler", "codeserver")
    state = {
        "ports": {n: free_port() for n in names},
        "password": password,
        "workers": workers,
        "threads_per_worker": threads or max(1, (os.cpu_count() or 1) // workers),
    }
    ports = state["ports"]
    conf = p.pgdata / "curatornet.conf"
    conf.write_text(
        f"listen_addresses = '{HOST}'\nport = {ports['postgres']}\nunix_socket_directories = ''\n"
    )
    if _pg_user():
        shutil.chown(conf, "postgres", "postgres")
    yaml = p.dagster_home / "dagster.yaml"
    storage = _postgres_storage(ports["postgres"], password)
    yaml.write_text(dagster_yaml(workers, workers, storage, start_timeout=900, kept=False))
    yaml.chmod(0o600)
    _services(state).write_workspace(p.dagster_home / "workspace.yaml")
    _write_supervisor_conf(p, state)
    _write_state(state)
    bindir = Path(sys.executable).parent
    env = _env(state)
    try:
        subprocess.run(
            [str(bindir / "supervisord"), "-c", str(p.supervisor_conf)], env=env, check=True
        )
        _wait(
            "supervisord",
            lambda: _ctl("pid", check=False).returncode == 0,
            30,
            p.logs / "supervisord.log",
        )
        _ctl("start", "postgres")
        _wait(
            "PostgreSQL",
            lambda: _databases(ports["postgres"], password),
            timeout_s,
            p.logs / "postgres.log",
        )
        _ctl("start", "mlflow", "scheduler", "codeserver", *(f"worker-{i}" for i in range(workers)))
        _wait(
            "the Dagster code server",
            lambda: port_open(ports["codeserver"]),
            timeout_s,
            p.logs / "codeserver.log",
        )
        _ctl("start", "daemon", "webserver")
        _wait(
            "the MLflow server",
            lambda: _http_ok(f"http://{HOST}:{ports['mlflow']}/health"),
            timeout_s,
            p.logs / "mlflow.log",
        )
        scheduler_log = p.logs / "scheduler.log"
        _wait(
            f"{workers} Dask workers",
            lambda: scheduler_log.read_text(errors="replace").count("Register worker") >= workers,
            timeout_s,
            scheduler_log,
        )
        _wait(
            "the Dagster webserver",
            lambda: _http_ok(f"http://{HOST}:{ports['webserver']}/server_info"),
            timeout_s,
            p.logs / "webserver.log",
        )
    except BaseException:
        down()
        raise
    state["pids"] = {
        name: int(pid) for name, pid in (line.split() for line in _pids()) if pid.isdigit()
    }
    state["up_seconds"] = round(time.monotonic() - started, 1)
    _write_state(state)
    return state


def _pids() -> list[str]:
    """``name pid`` of each program supervisord runs."""
    out = _ctl("status", check=False).stdout
    return [
        f"{line.split()[0]} {line.split('pid ')[1].split(',')[0]}"
        for line in out.splitlines()
        if "RUNNING" in line and "pid " in line
    ]


def down() -> dict:
    """Shut supervisord down (it stops every program's process group); keep the data."""
    started = time.monotonic()
    p = paths()
    state = read_state()
    pid = _supervisord_pid()
    stopped = []
    if pid is not None:
        stopped = [line.split()[0] for line in _pids()]
        _ctl("shutdown", check=False)
        deadline = time.monotonic() + 120
        while _supervisord_pid() is not None and time.monotonic() < deadline:
            time.sleep(0.5)
    if state is not None:
        p.state_file.unlink()
    return {"down_seconds": round(time.monotonic() - started, 1), "stopped": stopped}


def status() -> dict:
    """Each program's state as supervisord reports it, and whether its port answers."""
    state = read_state()
    if state is None or _supervisord_pid() is None:
        return {"up": False}
    procs = {}
    for line in _ctl("status", check=False).stdout.splitlines():
        name, program_state, *_ = line.split()
        procs[name] = {"state": program_state}
        if name in state["ports"]:
            procs[name]["port"] = state["ports"][name]
            procs[name]["listening"] = port_open(state["ports"][name])
    return {"up": all(p["state"] == "RUNNING" for p in procs.values()), "processes": procs}


# --- running the pipeline through the daemon --------------------------------------


def run_pipeline(profile: str = "tiny", overrides: dict | None = None, log=print) -> list:
    """Queue the whole asset graph on the running stack, stage by stage, and wait.

    The same named jobs and stages as ``curatornet run`` (``runner.plan``), launched
    with ``dagster job launch`` against the stack's code server: the stack's daemon
    starts them within the run coordinator's limits and their steps execute on the
    Dask workers. Returns the finished runs.
    """
    state = read_state()
    if state is None:
        raise RuntimeError("the stack is not up: run `curatornet stack up`")
    os.environ.update(_env(state))
    import dagster as dg

    from curatornet_pipeline.definitions import defs
    from curatornet_pipeline.defs.assets.training import add_grid_partitions
    from curatornet_pipeline.defs.resources import pipeline_settings, run_config
    from curatornet_pipeline.runner import launch_all, plan

    if overrides is None:  # CURATORNET_OVERRIDES, as for `curatornet run` (docs/scaling.md)
        from curatornet_pipeline.settings import run_overrides

        overrides = run_overrides()
    started = time.monotonic()

    def on_done(launch, run, seconds: float) -> None:
        log(
            f"  [{time.monotonic() - started:7.1f}s] {launch.label():<45} "
            f"{run.status.value.lower():<8} ({seconds:.1f}s)  run {run.run_id[:8]}"
        )

    services = _services(state)
    with dg.DagsterInstance.get() as instance:
        add_grid_partitions(instance, pipeline_settings(profile, overrides).grid())
        tags = {"curatornet/trigger": "stack", "curatornet/invocation": str(time.time_ns())}
        return launch_all(
            instance, services, plan(defs, instance), run_config(profile, overrides), tags, on_done
        )


def urls(state: dict) -> dict[str, str]:
    ports = state["ports"]
    return {
        "Dagster UI": f"http://{HOST}:{ports['webserver']}",
        "MLflow": f"http://{HOST}:{ports['mlflow']}",
        "Dask scheduler": f"tcp://{HOST}:{ports['scheduler']}",
        "PostgreSQL": f"{HOST}:{ports['postgres']} (user {PG_USER})",
    }
