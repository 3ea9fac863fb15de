"""`curatornet ui` serves both UIs on 127.0.0.1 and stops both on Ctrl-C."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from browser_support import REPO_ROOT, VENV_BIN, free_port, project_env, tail, wait_http

pytestmark = pytest.mark.slow


def test_ui_serves_dagster_and_mlflow_and_stops_on_sigint(tiny_data: Path, tmp_path: Path):
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
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        wait_http(f"http://127.0.0.1:{dagster_port}/server_info", 150, proc, log)
        wait_http(f"http://127.0.0.1:{mlflow_port}/health", 90, proc, log)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
        assert proc.wait(timeout=60) == 0, tail(log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the servers it started are gone too
            alive = subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True).stdout
            if not alive.strip():
                break
            time.sleep(1)
        assert not alive.strip(), alive
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        subprocess.run(["pkill", "-KILL", "-g", str(proc.pid)], capture_output=True)
