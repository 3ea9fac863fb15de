"""``curatornet stack up|down|status|run``: the pipeline as a service on one machine.

PostgreSQL, MLflow, a Dask scheduler and workers, and a Dagster code server, daemon
and webserver under ``supervisord`` in ``$CURATORNET_HOME/stack``, all on 127.0.0.1;
``down`` stops them and keeps the data. docs/scaling.md has the programs and the order.
"""

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from curatornet_pipeline import postgres, settings
from curatornet_pipeline.daemon import LOCATION, Services, dagster_yaml, free_port, port_open

HOST = "127.0.0.1"


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


def stack_services(state: dict) -> Services:
    """The stack's code server, as the Dagster commands address it."""
    workspace = str(paths().dagster_home / "workspace.yaml")
    return Services(0, state["ports"]["codeserver"], workspace, "on")


def _programs(p: StackPaths, state: dict) -> dict[str, dict]:
    """supervisord's programs: name -> command, extra environment, options."""
    bindir = Path(sys.executable).parent
    ports = state["ports"]
    threads = str(state["threads_per_worker"])
    workspace = stack_services(state).workspace
    cluster = [postgres.pg_bin("postgres"), "-D", str(p.pgdata)]
    mlflow = [
        str(bindir / "mlflow"), "server", "--host", HOST, "--port", str(ports["mlflow"]),
        "--artifacts-destination", str(p.artifacts), "--workers", "1",
    ]  # fmt: skip
    scheduler = [
        str(bindir / "dask"), "scheduler", "--host", HOST, "--port", str(ports["scheduler"]),
        "--no-dashboard",
    ]  # fmt: skip
    codeserver = [
        str(bindir / "dagster"), "code-server", "start", "-m", "curatornet_pipeline.definitions",
        "-a", "defs", "-h", HOST, "-p", str(ports["codeserver"]), "--location-name", LOCATION,
    ]  # fmt: skip
    webserver = [
        str(bindir / "dagster-webserver"), "-h", HOST, "-p", str(ports["webserver"]),
        "-w", workspace,
    ]  # fmt: skip
    programs = {
        "postgres": {"cmd": cluster, "user": "postgres" if postgres.pg_user() else None},
        "mlflow": {
            "cmd": mlflow,
            "env": {
                "MLFLOW_BACKEND_STORE_URI": postgres.postgres_url(state, "mlflow"),
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            },
        },
        "scheduler": {"cmd": scheduler},
        "codeserver": {"cmd": codeserver},
        "daemon": {"cmd": [str(bindir / "dagster-daemon"), "run", "-w", workspace]},
        "webserver": {"cmd": webserver},
    }
    for i in range(state["workers"]):
        worker = [
            str(bindir / "dask"), "worker", f"tcp://{HOST}:{ports['scheduler']}", "--host", HOST,
            "--nworkers", "1", "--nthreads", "1", "--name", f"worker-{i}", "--no-dashboard",
            "--local-directory", str(p.root / "dask"),
        ]  # fmt: skip
        programs[f"worker-{i}"] = {
            "cmd": worker,
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
    password = postgres.init_cluster(p)
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
    if postgres.pg_user():
        shutil.chown(conf, "postgres", "postgres")
    yaml = p.dagster_home / "dagster.yaml"
    storage = postgres.dagster_storage(ports["postgres"], password)
    yaml.write_text(dagster_yaml(workers, workers, storage, start_timeout=900, kept=False))
    yaml.chmod(0o600)
    stack_services(state).write_workspace(p.dagster_home / "workspace.yaml")
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
            lambda: postgres.create_databases(ports["postgres"], password),
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


def urls(state: dict) -> dict[str, str]:
    ports = state["ports"]
    return {
        "Dagster UI": f"http://{HOST}:{ports['webserver']}",
        "MLflow": f"http://{HOST}:{ports['mlflow']}",
        "Dask scheduler": f"tcp://{HOST}:{ports['scheduler']}",
        "PostgreSQL": f"{HOST}:{ports['postgres']} (user {postgres.PG_USER})",
    }
