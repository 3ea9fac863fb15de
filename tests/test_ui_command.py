"""`curatornet ui` serves both UIs on 127.0.0.1 and stops every process it started on
Ctrl-C (SIGINT) and on SIGTERM; concurrent first runs on a fresh home wait for one another."""

import http.client
import os
import signal
import subprocess
import time
import urllib.parse
from pathlib import Path

import psutil
import pytest
from browser_support import (
    REPO_ROOT,
    VENV_BIN,
    free_port,
    home_processes,
    project_env,
    tail,
    wait_http,
)

from curatornet_pipeline.daemon import port_open

pytestmark = pytest.mark.slow


def _gone(pids: list[int], timeout_s: float = 30.0) -> list[int]:
    """The pids still alive (not zombies) after waiting up to ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.5)


def _redirect_of(url: str) -> tuple[int, str]:
    """The status and Location of a GET, not followed."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request("GET", f"{parts.path}?{parts.query}")
        answer = conn.getresponse()
        return answer.status, answer.getheader("Location", "")
    finally:
        conn.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_ui_serves_both_uis_and_stops_every_child(sig, tiny_data: Path, tmp_path: Path):
    dagster_port, mlflow_port = free_port(), free_port()
    env = project_env(tmp_path / "home", tiny_data)
    log = tmp_path / "ui.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(VENV_BIN / "curatornet"),
                "ui",
                "--dagster-port",
                str(dagster_port),
                "--mlflow-port",
                str(mlflow_port),
            ],  # fmt: skip
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    tree: list[int] = []
    try:
        wait_http(f"http://127.0.0.1:{dagster_port}/server_info", 240, proc, log)
        wait_http(f"http://127.0.0.1:{mlflow_port}/health", 120, proc, log)
        time.sleep(3)  # the daemon's first iteration
        # both UIs and the home's daemon fit a laptop: the process tree, read as it is
        procs = home_processes(tmp_path / "home")
        tree = [p.pid for p in procs]
        rss = sum(p.memory_info().rss for p in procs) / 2**30
        shown = [" ".join(p.cmdline()[:3]) for p in procs]
        assert len(procs) <= 8, shown  # ui, webserver, mlflow, watchdog, code server x2, daemon
        assert rss <= 2.5, (rss, shown)
        # the home's link addresses (where earlier links point) redirect to these ports
        links = [env["CURATORNET_DAGSTER_UI"], env["CURATORNET_MLFLOW_UI"]]
        for link, port in zip(links, (dagster_port, mlflow_port), strict=True):
            status, location = _redirect_of(f"{link}/runs/abc?view=events")
            assert (status, location) == (302, f"http://127.0.0.1:{port}/runs/abc?view=events")
        # SIGTERM to the one process, as a service manager does; SIGINT as Ctrl-C would
        os.kill(proc.pid, sig)
        assert proc.wait(timeout=90) == 0, tail(log)
        # the daemon it started stops with it (no other invocation holds the home)
        assert _gone(tree, 60) == [], f"still running after {sig.name}: {_gone(tree, 0)}"
        assert not port_open(dagster_port) and not port_open(mlflow_port)
        assert not any(port_open(urllib.parse.urlsplit(link).port) for link in links)
    finally:
        for pid in [proc.pid, *tree]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


FIRST_USE = """
import sys
from curatornet_pipeline.daemon import dagster_home
from curatornet_pipeline.locks import open_instance
from curatornet_pipeline.defs.tracking import MlflowTracking
dagster_home()
MlflowTracking()._connect()
with open_instance() as instance:
    instance.get_runs(limit=1)
print("ready", flush=True)
"""


def test_two_first_runs_on_a_fresh_home_both_succeed(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Two processes create the MLflow store and the Dagster instance of one fresh home.

    The test holds the store lock until both say they wait, then lets them race:
    one creates and migrates, the other waits its turn; both succeed.
    """
    from curatornet_pipeline.locks import first_use

    home = tmp_path / "home"
    env = project_env(home, tiny_data)
    monkeypatch.setenv("CURATORNET_HOME", str(home))
    errs = [tmp_path / f"err{i}.log" for i in range(2)]
    with first_use("mlflow"):
        procs = []
        for err in errs:
            with err.open("w") as err_file:
                procs.append(
                    subprocess.Popen(
                        [str(VENV_BIN / "python"), "-c", FIRST_USE],
                        cwd=REPO_ROOT,
                        env=env,
                        stdout=subprocess.PIPE,
                        stderr=err_file,
                        text=True,
                    )
                )
        deadline = time.monotonic() + 240
        while not all("waiting for another process" in e.read_text() for e in errs):
            assert time.monotonic() < deadline, [e.read_text()[-2000:] for e in errs]
            assert all(p.poll() is None for p in procs), [e.read_text()[-2000:] for e in errs]
            time.sleep(0.2)
    for p, err in zip(procs, errs, strict=True):
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, err.read_text()[-3000:]
        assert out.strip().endswith("ready")
        assert f"to finish creating the mlflow store in {home}" in err.read_text()
    assert (home / "mlflow.db").exists() and (home / "dagster").is_dir()
