"""Helpers of the browser tests: ports, servers, environments, GraphQL, headless Chromium.

Servers run in their own process group (``start_new_session=True``) with the
default SIGINT/SIGTERM handlers, listen on 127.0.0.1 only, log into the test's
home folder, and are stopped with SIGINT to the whole group, then SIGKILL.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent

CHROMIUM = "/usr/bin/chromium"
#: Without the background-networking flags Chromium's connections get refused here.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# 127.0.0.1 only, never through a proxy.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

_PROJECT_VARS = ("CURATORNET_", "DAGSTER_", "MLFLOW_")
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def project_env(home: Path, data: Path, **extra: str) -> dict[str, str]:
    """A fresh environment for the project's processes: nothing inherited from the project."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_PROJECT_VARS) and k.lower() not in _PROXY_VARS
    }
    env.update(
        CURATORNET_HOME=str(home),
        CURATORNET_DATA=str(data),
        CURATORNET_PROFILE="tiny",
        CURATORNET_AUTOMATION="off",
        # the home's link addresses on free ports, not 5000 and 3000 where a person's own
        # UIs may run: `curatornet ui` on other ports serves these as redirects
        CURATORNET_MLFLOW_UI=f"http://127.0.0.1:{free_port()}",
        CURATORNET_DAGSTER_UI=f"http://127.0.0.1:{free_port()}",
        DAGSTER_HOME=str(home / "dagster"),
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
        NO_PROXY="127.0.0.1,localhost",
        # no telemetry calls from dagster or mlflow
        DAGSTER_DISABLE_TELEMETRY="1",
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="1",
    )
    env.update(extra)
    return env


def run_python(code: str, env: Mapping[str, str], timeout: float, log: Path) -> str:
    """Run ``python -c code`` in the repo root; return stdout, fail with the log's tail."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=REPO_ROOT,
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop_group(proc, timeout=10)
            raise AssertionError(f"python -c timed out after {timeout}s:\n{tail(log)}") from None
        finally:
            if proc.poll() is None:
                _stop_group(proc, timeout=10)
    if proc.returncode != 0:
        raise AssertionError(f"python -c exited {proc.returncode}:\n{tail(log)}")
    return out


def tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return f"(no log at {path})"


def _reset_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _stop_group(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGINT to the process group, then SIGKILL to whatever is left of it."""
    pgid = proc.pid  # start_new_session: the group id is the leader's pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGINT)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    # The leader may be gone while children (gRPC server, run workers, gunicorn
    # workers) linger: kill the rest of the group in any case.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


@contextlib.contextmanager
def server(
    cmd: list[str], env: Mapping[str, str], log: Path, ready_url: str, ready_timeout: float
) -> Iterator[subprocess.Popen]:
    """Start ``cmd`` in its own session, wait until ``ready_url`` answers, always stop it."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_reset_signals,
        )
    try:
        wait_http(ready_url, ready_timeout, proc, log)
        yield proc
    finally:
        _stop_group(proc)


def wait_http(url: str, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args[:2]} exited {proc.returncode}:\n{tail(log)}")
        try:
            with _OPENER.open(url, timeout=5) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(1)
    raise AssertionError(f"{url} did not answer in {timeout}s ({last}):\n{tail(log)}")


def http_json(url: str, payload: Any = None, timeout: float = 30) -> Any:
    """GET (or POST ``payload`` as JSON) and decode the JSON answer."""
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with _OPENER.open(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def graphql(base_url: str, query: str, variables: Mapping[str, Any] | None = None) -> dict:
    """The ``data`` of a Dagster GraphQL answer; fails on GraphQL errors."""
    answer = http_json(f"{base_url}/graphql", {"query": query, "variables": dict(variables or {})})
    if answer.get("errors"):
        raise AssertionError(f"GraphQL errors: {answer['errors']}")
    return answer["data"]


def launch_chromium(playwright: Any) -> Any:
    """Debian's Chromium, headless, driven by Playwright (never `playwright install`)."""
    return playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=60_000
    )


def home_processes(home: Path) -> list:
    """Processes whose environment names this home (the watchdog, daemon, servers, workers)."""
    import psutil

    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("CURATORNET_HOME") == str(home):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return found
