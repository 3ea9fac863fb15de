"""Invocations that share a home or get interrupted leave nothing behind.

Real `curatornet run` / `curatornet ui` processes on real homes (tiny profile).
After each scenario: no process of the home is alive, no Dagster run is
non-terminal and no MLflow run is RUNNING (:func:`assert_clean`).
"""

import os
import signal
import subprocess
import time
from pathlib import Path

import dagster as dg
import pytest
from browser_support import (
    REPO_ROOT,
    VENV_BIN,
    free_port,
    home_processes,
    project_env,
    wait_http,
)

from curatornet_pipeline.daemon import NON_TERMINAL

pytestmark = pytest.mark.slow

UPSTREAM = "refresh_upstream"
SAMPLING = "refresh_upstream,sample_triplets"


@pytest.fixture
def home(tmp_path: Path, tiny_data: Path) -> dict:
    home = tmp_path / "home"
    return {"home": home, "env": project_env(home, tiny_data, OMP_NUM_THREADS="1"), "tmp": tmp_path}


def start(h: dict, *args: str, name: str = "run", command: str = "run") -> subprocess.Popen:
    out = open(h["tmp"] / f"{name}.log", "w")  # noqa: SIM115 - closed by the test's end
    cmd = [str(VENV_BIN / "curatornet"), command, *args]
    if command == "run":
        cmd += ["--profile", "tiny", "--weights", "none"]
    return subprocess.Popen(
        cmd, cwd=REPO_ROOT, env=h["env"], stdout=out, stderr=subprocess.STDOUT, text=True
    )


def log(h: dict, name: str = "run") -> str:
    return (h["tmp"] / f"{name}.log").read_text()


def finish(h: dict, proc: subprocess.Popen, name: str = "run", timeout: float = 900) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"{name} still running after {timeout} s:\n{log(h, name)[-3000:]}")


def _is_run_worker(proc) -> bool:
    """A run's process: the code server starts it with multiprocessing's spawn."""
    line = " ".join(proc.cmdline())
    return "spawn_main" in line or "execute_run" in line


def instance(home: Path) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(str(home / "dagster"))


def assert_clean(h: dict, within: float = 60.0) -> list[dg.DagsterRun]:
    home = h["home"]
    deadline = time.monotonic() + within
    while home_processes(home) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = [" ".join(p.cmdline()[:4]) for p in home_processes(home)]
    assert not left, left
    with instance(home) as inst:
        runs = list(inst.get_runs())
        pending = [(r.job_name, r.status.value) for r in runs if r.status in NON_TERMINAL]
        assert not pending, pending
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    running = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string="attributes.status = 'RUNNING'",
    )
    assert not running, [r.data.tags for r in running]
    return runs


def wait_for_run(home: Path, job: str, status: dg.DagsterRunStatus, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (home / "dagster" / "dagster.yaml").exists():
            with instance(home) as inst:
                if any(r.job_name == job and r.status == status for r in inst.get_runs()):
                    return
        time.sleep(1)
    pytest.fail(f"no {job} run reached {status.value} in {timeout} s")


def test_kill_9_of_run_during_sampling_then_a_second_run(home: dict) -> None:
    first = start(home, "--jobs", SAMPLING, name="first")
    wait_for_run(home["home"], "sample_triplets", dg.DagsterRunStatus.STARTED)
    first.send_signal(signal.SIGKILL)
    first.wait()
    second = start(home, "--jobs", SAMPLING, name="second")
    assert finish(home, second, "second") == 0, log(home, "second")[-3000:]
    runs = assert_clean(home)
    # the killed invocation's runs were ended (by the watchdog once its lease was gone, or
    # by the second invocation starting fresh services), not left queued or started
    assert len({r.tags["curatornet/invocation"] for r in runs}) == 2
    ended = [r for r in runs if r.status != dg.DagsterRunStatus.SUCCESS]
    assert ended
    assert {r.status for r in ended} <= {dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.FAILURE}


def test_two_runs_started_together_on_a_fresh_home_both_succeed(home: dict) -> None:
    procs = [start(home, "--jobs", UPSTREAM, name=f"run{i}") for i in range(2)]
    codes = [finish(home, p, f"run{i}") for i, p in enumerate(procs)]
    assert codes == [0, 0], [log(home, f"run{i}")[-2000:] for i in range(2)]
    started = [log(home, f"run{i}").count("started the home's Dagster daemon") for i in range(2)]
    assert sum(started) == 1, started  # one daemon, shared
    runs = assert_clean(home)
    assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS] * 2


def test_two_runs_started_30_s_apart_both_succeed(home: dict) -> None:
    first = start(home, "--jobs", SAMPLING, name="first")
    time.sleep(30)
    second = start(home, "--jobs", SAMPLING, name="second")
    assert finish(home, first, "first") == 0, log(home, "first")[-3000:]
    assert second.poll() is None  # the second still needs the daemon the first one started
    assert finish(home, second, "second") == 0, log(home, "second")[-3000:]
    runs = assert_clean(home)
    assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)


def test_sigterm_stops_with_one_line_and_no_retry(home: dict) -> None:
    home["env"]["CURATORNET_OVERRIDES"] = '{"train": {"epochs": 50, "patience": 50}}'
    proc = start(home)
    wait_for_run(home["home"], "train_curatornet", dg.DagsterRunStatus.STARTED, timeout=900)
    time.sleep(8)  # the run worker is inside its training step
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert finish(home, proc, timeout=120) == 128 + signal.SIGTERM
    assert time.monotonic() - sent < 60
    out = log(home)
    assert "Traceback" not in out, out[-3000:]
    assert out.strip().splitlines()[-1] == "curatornet run: stopped by SIGTERM"
    assert_clean(home)
    with instance(home["home"]) as inst:
        retries = [
            r.run_id
            for r in inst.get_runs()
            if inst.all_logs(r.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY)
        ]
    assert not retries


def test_killed_training_worker_frees_the_slot_at_once(home: dict) -> None:
    home["env"]["CURATORNET_OVERRIDES"] = '{"train": {"epochs": 50, "patience": 50}}'
    proc = start(home, "--jobs", f"{SAMPLING},train_curatornet")
    wait_for_run(home["home"], "train_curatornet", dg.DagsterRunStatus.STARTED, timeout=900)
    workers = [p for p in home_processes(home["home"]) if _is_run_worker(p)]
    assert workers
    for worker in workers:
        worker.kill()
    assert finish(home, proc) == 1
    assert_clean(home)
    second = start(home, "--jobs", UPSTREAM, name="second")
    launched = time.monotonic()
    wait_for_run(home["home"], UPSTREAM, dg.DagsterRunStatus.STARTED, timeout=300)
    # the daemon starts; the first run follows within seconds (no CANCELING run holds a slot)
    first_started = time.monotonic() - launched
    assert finish(home, second, "second") == 0, log(home, "second")[-3000:]
    assert "started the home's Dagster daemon" in log(home, "second")
    assert first_started < 90, first_started
    assert_clean(home)


def test_daemon_ui_and_run_at_once_on_a_fresh_home(home: dict) -> None:
    dagster_port, mlflow_port = free_port(), free_port()
    ui = subprocess.Popen(
        [
            str(VENV_BIN / "curatornet"),
            "ui",
            "--dagster-port",
            str(dagster_port),
            "--mlflow-port",
            str(mlflow_port),
        ],  # fmt: skip
        cwd=REPO_ROOT,
        env=home["env"],
        stdout=open(home["tmp"] / "ui.log", "w"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    run = start(home, "--jobs", UPSTREAM)
    daemon = subprocess.Popen(
        [str(VENV_BIN / "python"), "-c", DAEMON_USER],
        cwd=REPO_ROOT,
        env=home["env"],
        stdout=open(home["tmp"] / "daemon_user.log", "w"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
    try:
        assert finish(home, run) == 0, log(home)[-3000:]
        assert finish(home, daemon, "daemon_user", timeout=300) == 0, log(home, "daemon_user")
        ui_log = home["tmp"] / "ui.log"
        wait_http(f"http://127.0.0.1:{dagster_port}/server_info", 300, ui, ui_log)
        wait_http(f"http://127.0.0.1:{mlflow_port}/health", 300, ui, ui_log)
        with instance(home["home"]) as inst:
            assert inst.get_runs()[0].status == dg.DagsterRunStatus.SUCCESS
    finally:
        os.killpg(ui.pid, signal.SIGINT)
        ui.wait(timeout=120)
    assert_clean(home)


#: A third process that needs the home's daemon: holds a lease until it sees a heartbeat.
DAEMON_USER = """
import time
import dagster as dg
from curatornet_pipeline.daemon import dagster_home, lease
dagster_home()
with lease() as services, dg.DagsterInstance.get() as instance:
    deadline = time.monotonic() + 240
    while not instance.get_daemon_heartbeats() and time.monotonic() < deadline:
        time.sleep(1)
    assert instance.get_daemon_heartbeats(), "no daemon heartbeat"
print("daemon ok", services.port)
"""
