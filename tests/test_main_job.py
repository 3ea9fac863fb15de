"""The main job as a user runs it: `curatornet run` launches named jobs through the instance.

One module fixture runs the real command in a subprocess on the tiny profile
(fresh home, Dagster daemon started by the command, queued run coordinator,
run workers in their own processes); the tests read the instance it leaves and
look at the Overview timeline in headless Chromium.
"""

import os
import re
import subprocess
import time
from pathlib import Path

import dagster as dg
import pytest

from curatornet_pipeline.defs.automation import JOBS, TRIGGER_TAG
from tests.browser_support import (
    VENV_BIN,
    free_port,
    home_processes,
    launch_chromium,
    project_env,
    server,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def main_job(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("main_job")
    home, data = root / "home", root / "data"
    env = project_env(home, data, OMP_NUM_THREADS="1")
    started = time.perf_counter()
    proc = subprocess.run(
        [str(VENV_BIN / "curatornet"), "run", "--profile", "tiny", "--weights", "none"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    return {
        "home": home,
        "env": env,
        "stdout": proc.stdout,
        "seconds": time.perf_counter() - started,
    }


def _instance(home: Path) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(str(home / "dagster"))


def test_every_run_is_a_named_job_tagged_with_its_trigger(main_job: dict) -> None:
    with _instance(main_job["home"]) as instance:
        runs = instance.get_runs()
        named = {job.name for job in JOBS}
        assert {r.job_name for r in runs} == named
        assert not [r for r in runs if r.job_name == "__ephemeral_asset_job__"]
        assert all(r.tags.get(TRIGGER_TAG) == "cli" for r in runs)
        assert len({r.tags["curatornet/invocation"] for r in runs}) == 1
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        # remote origins: the runs belong to the code location, as UI-launched runs do
        assert all(r.remote_job_origin is not None for r in runs)
        partitions = sorted(r.tags.get("dagster/partition", "") for r in runs)
        # tiny: refresh + 7 strategies + CuratorNet at 2 weight decays, VBPR at 1, 2 random + report
        assert len(runs) == 1 + 7 + 2 + 1 + 2 + 1, partitions
        triplets = [r for r in runs if r.job_name == "sample_triplets"]
        assert len({r.tags["dagster/partition"] for r in triplets}) == 7
    # one printed line per run, then Table 2
    lines = [
        line for line in main_job["stdout"].splitlines() if re.search(r"\] \w+.* success", line)
    ]
    assert len(lines) == len(runs)
    assert "Oracle" in main_job["stdout"] and "CuratorNet (0.0001)" in main_job["stdout"]


def test_no_daemon_or_run_worker_outlives_the_command(main_job: dict) -> None:
    deadline = time.monotonic() + 60  # the watchdog stops the daemon within seconds
    while home_processes(main_job["home"]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert home_processes(main_job["home"]) == []


@pytest.mark.browser
def test_overview_timeline_shows_the_named_jobs(main_job: dict, test_output_dir: Path) -> None:
    from playwright import sync_api

    assert Path("/usr/bin/chromium").exists(), "Debian's chromium is not installed"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [str(VENV_BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1"]
    env = {**main_job["env"], "DAGSTER_HOME": str(main_job["home"] / "dagster")}
    log = main_job["home"] / "webserver.log"
    shot = test_output_dir / "browser" / "overview_timeline.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    with server([*cmd, "-p", str(port)], env, log, f"{base}/server_info", 180):
        with sync_api.sync_playwright() as p:
            browser = launch_chromium(p)
            try:
                page = browser.new_page(viewport={"width": 1600, "height": 1000})
                page.set_default_timeout(90_000)
                page.goto(f"{base}/overview/activity/timeline", wait_until="domcontentloaded")
                for job in ("refresh_upstream", "sample_triplets", "train_curatornet", "evaluate"):
                    page.get_by_text(job, exact=True).first.wait_for(state="visible")
                page.screenshot(path=str(shot), full_page=True)
                text = page.inner_text("body")
                assert "No runs or scheduled ticks in this time period" not in text
            finally:
                browser.close()
    assert shot.stat().st_size > 10_000
    assert os.path.exists(shot)
