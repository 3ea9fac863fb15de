"""`curatornet stack`: the tiny pipeline through the daemon on PostgreSQL, MLflow's server and
Dask workers, all on 127.0.0.1; then `stack down` leaves no process and no listening port."""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from browser_support import REPO_ROOT, VENV_BIN, project_env

from curatornet_pipeline.defs.automation import TRAINING_JOBS

pytestmark = pytest.mark.slow

EPOCHS = 20


def _cli(args: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(VENV_BIN / "curatornet"), *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"{args}: {result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


def _tree(pid: int) -> set[int]:
    try:
        return {pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))}
    except psutil.NoSuchProcess:
        return set()


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.add(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _step_spans(instance, run_ids: list[str]) -> list[tuple[int, float, float]]:
    """(pid, start, end) of every model-training step of the runs, from the step events."""
    import dagster as dg

    spans = []
    for run_id in run_ids:
        starts, ends = {}, {}
        for record in instance.all_logs(run_id):
            event = record.dagster_event
            if event is None or not (record.step_key or "").endswith("_models"):
                continue
            if event.event_type == dg.DagsterEventType.STEP_START:
                starts[record.step_key] = (event.pid, record.timestamp)
            elif event.event_type == dg.DagsterEventType.STEP_SUCCESS:
                ends[record.step_key] = record.timestamp
        for key, (pid, start) in starts.items():
            spans.append((pid, start, ends[key]))
    return spans


def test_stack_runs_the_tiny_pipeline_on_dask_workers_and_stops_clean(tiny_data: Path):
    # PostgreSQL runs as user 'postgres' when the tests run as root: a home it can enter
    home = Path(tempfile.mkdtemp(prefix="curatornet-stack-"))
    home.chmod(0o755)
    env = project_env(home, tiny_data)
    env.pop("DAGSTER_HOME")
    # The tiny models train in 1-2 s, less than the gap between two run workers' starts on
    # busy cores: more epochs (no early stop) make each training step long enough that two
    # runs the coordinator starts together must overlap on the workers if they can at all.
    env["CURATORNET_OVERRIDES"] = json.dumps({"train": {"epochs": EPOCHS, "patience": EPOCHS}})
    pids: set[int] = set()
    ports: list[int] = []
    try:
        up = _cli(["stack", "up", "--workers", "2", "--threads", "1"], env, 600)
        state = json.loads((home / "stack" / "state.json").read_text())
        ports = [p for name, p in state["ports"].items()]
        assert all(_listening(p) for p in ports), up.stdout
        for pid in state["pids"].values():
            pids |= _tree(pid)
        worker_pids = {
            p
            for name, pid in state["pids"].items()
            if name.startswith("worker-")
            for p in _tree(pid)
        }
        # the Dagster instance lives in PostgreSQL, with a queued run coordinator
        dagster_yaml = (home / "stack" / "dagster" / "dagster.yaml").read_text()
        assert "postgres_db" in dagster_yaml and "QueuedRunCoordinator" in dagster_yaml

        run = _cli(["stack", "run", "--profile", "tiny"], env, 1800)
        assert "failure" not in run.stdout.lower(), run.stdout
        for pid in state["pids"].values():
            pids |= _tree(pid)  # run workers started by the daemon

        import dagster as dg

        os.environ["DAGSTER_HOME"] = str(home / "stack" / "dagster")
        try:
            with dg.DagsterInstance.get() as instance:
                runs = instance.get_runs()
                assert runs and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
                for r in runs:  # every run went through the queue, then the daemon started it
                    first = {}
                    for e in instance.all_logs(r.run_id):
                        if e.dagster_event:
                            first.setdefault(e.dagster_event.event_type, e.timestamp)
                    enqueued = first.get(dg.DagsterEventType.RUN_ENQUEUED)
                    starting = first.get(dg.DagsterEventType.RUN_STARTING)
                    assert enqueued is not None and starting is not None, (r.job_name, first)
                    assert enqueued <= starting, r.run_id  # (Dagster 1.13 logs no RUN_DEQUEUED)
                model_runs = [r.run_id for r in runs if r.job_name in TRAINING_JOBS]
                spans = _step_spans(instance, model_runs)
        finally:
            del os.environ["DAGSTER_HOME"]
        assert len(spans) == len(model_runs) >= 2
        step_pids = {pid for pid, _, _ in spans}
        assert len(step_pids) >= 2, spans  # models ran on two worker processes...
        assert step_pids <= worker_pids, (step_pids, worker_pids)  # ...the Dask workers
        overlapping = [
            (a, b)
            for i, a in enumerate(spans)
            for b in spans[i + 1 :]
            if a[0] != b[0] and a[1] < b[2] and b[1] < a[2]
        ]
        assert overlapping, spans  # ...at the same time

        # MLflow's runs are in PostgreSQL, one per model partition
        import psycopg2

        conn = psycopg2.connect(
            host="127.0.0.1",
            port=state["ports"]["postgres"],
            user="curatornet",
            password=state["password"],
            dbname="mlflow",
        )
        with conn, conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM tags WHERE key = 'dagster.asset_key' AND value LIKE '%_models'"
            )
            assert cur.fetchone()[0] == len(model_runs)
            cur.execute("SELECT count(*) FROM runs WHERE status = 'FINISHED'")
            assert cur.fetchone()[0] >= len(model_runs)
            # `stack run` trained with CURATORNET_OVERRIDES, as `curatornet run` does
            cur.execute("SELECT DISTINCT value FROM params WHERE key = 'epochs'")
            assert [row[0] for row in cur.fetchall()] == [str(EPOCHS)]
        conn.close()
        assert any((home / "stack" / "mlartifacts").rglob("*")), "artifacts through the server"

        down = _cli(["stack", "down"], env, 300)
        deadline = time.monotonic() + 30
        while _alive(pids) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _alive(pids), (_alive(pids), down.stdout)
        assert not any(_listening(p) for p in ports)
        assert (home / "stack" / "postgres" / "PG_VERSION").exists()  # the data stays
        assert not (home / "stack" / "state.json").exists()
    finally:
        if (home / "stack" / "state.json").exists():
            subprocess.run(
                [str(VENV_BIN / "curatornet"), "stack", "down"],
                env=env,
                cwd=REPO_ROOT,
                capture_output=True,
                timeout=300,
            )
        for pid in _alive(pids):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(home, ignore_errors=True)
