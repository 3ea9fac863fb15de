"""What a person meets first: cold wall time and peak memory of the CLI, and the footprint
of `curatornet ui` (processes and resident memory of both UIs together).

Runs on a home with a finished run (after `make run`, or `curatornet run --profile tiny`):

    .venv/bin/python benchmarks/bench_cli.py --home .curatornet_home --data data --repeats 3

Every command is a fresh process (cold: nothing imported), timed from start to exit; the
median of ``--repeats`` runs is printed with its peak RSS. The UI is started once, and
measured once both servers answer.
"""

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from curatornet_pipeline.kernels.machine import processor  # noqa: E402

BIN = Path(sys.executable).parent


def run_cold(argv: list[str], env: dict) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in MB, exit code) of one fresh process (GNU time's %M)."""
    start = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-f", "PEAK_KB %M", *argv], env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    peak = next(
        int(line.split()[1])
        for line in reversed(done.stderr.splitlines())
        if line.startswith("PEAK_KB")
    )
    return wall, peak / 1024, done.returncode


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def home_processes(home: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("CURATORNET_HOME") == str(home):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return found


def ui_footprint(env: dict, home: Path) -> dict:
    dagster, mlflow = free_port(), free_port()
    cmd = [
        str(BIN / "curatornet"),
        "ui",
        "--dagster-port",
        str(dagster),
        "--mlflow-port",
        str(mlflow),
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    start = time.perf_counter()
    try:
        while not (answers(f"http://127.0.0.1:{dagster}/server_info")
                   and answers(f"http://127.0.0.1:{mlflow}/health")):  # fmt: skip
            if proc.poll() is not None or time.perf_counter() - start > 600:
                raise RuntimeError("curatornet ui did not come up")
            time.sleep(1)
        ready = time.perf_counter() - start
        time.sleep(5)  # let the daemon's first iteration settle
        procs = home_processes(home)
        rows = []
        for p in procs:
            try:
                rows.append({"pid": p.pid, "rss_mb": p.memory_info().rss / 2**20,
                             "command": " ".join(p.cmdline()[:4])[:90]})  # fmt: skip
            except psutil.NoSuchProcess:
                pass
        return {"ready_s": ready, "rows": rows}
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="CuratorNet (0.0001)")
    parser.add_argument("--no-ui", action="store_true")
    args = parser.parse_args()
    home, data = args.home.resolve(), args.data.resolve()
    env = {**os.environ, "CURATORNET_HOME": str(home), "CURATORNET_DATA": str(data)}
    env.pop("DAGSTER_HOME", None)
    items = pd.read_csv(data / "inventory.csv", nrows=3)["artwork_id_hash"].tolist()
    cli = str(BIN / "curatornet")
    commands = {
        "--help": [cli, "--help"],
        "batches list": [cli, "batches", "list"],
        "lineage": [cli, "lineage", "--metric", "auc", "--model", args.model],
        "recommend (3 items, k 10)": [cli, "recommend", "--items", ",".join(items), "--k", "10"],
    }
    print(f"processor: {processor()}; {args.repeats} cold runs each, median")
    print(f"{'command':<28} {'wall s':>8} {'peak MB':>8}  exit")
    for name, argv in commands.items():
        runs = [run_cold(argv, env) for _ in range(args.repeats)]
        wall = statistics.median(r[0] for r in runs)
        peak = max(r[1] for r in runs)
        print(f"{name:<28} {wall:8.2f} {peak:8.0f}  {runs[-1][2]}")
    if args.no_ui:
        return
    ui = ui_footprint(env, home)
    total = sum(r["rss_mb"] for r in ui["rows"])
    print(f"\ncuratornet ui: both UIs answer after {ui['ready_s']:.1f} s; "
          f"{len(ui['rows'])} processes, {total / 1024:.2f} GB RSS together")  # fmt: skip
    for r in sorted(ui["rows"], key=lambda r: -r["rss_mb"]):
        print(f"  {r['rss_mb']:7.0f} MB  {r['command']}")


if __name__ == "__main__":
    main()
