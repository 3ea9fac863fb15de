"""The UIs, as a user sees them: the Dagster UI and the MLflow UI in headless Chromium.

One temporary home per module: a tiny synthetic dataset, a Dagster instance in
which every ancestor of TARGET is already materialized (in a subprocess, so the
UI only has to run TARGET), and the MLflow store those runs wrote. Then:

- ``dagster dev`` serves the instance; Chromium opens TARGET's page, clicks
  "Materialize", waits for the run to succeed and shows the new
  materialization's metadata (data_version, mlflow_run, tables).
- ``mlflow ui`` serves the store; Chromium opens the "curatornet" experiment
  and the runs table lists one run per asset materialization, which the REST
  API shows FINISHED and tagged with the Dagster run, asset and partition.

Screenshots go to ``test-output/browser/``.
"""

import json
import os
import re
import textwrap
import time
from pathlib import Path

import pytest
from browser_support import (
    VENV_BIN,
    free_port,
    graphql,
    http_json,
    launch_chromium,
    project_env,
    run_python,
    server,
    wait_http,
)

from curatornet_pipeline.core.types import STRATEGIES

pytestmark = [pytest.mark.browser, pytest.mark.slow]

#: The asset the Dagster UI materializes. While it is not defined yet, the test
#: falls back to evaluation_report (see PREPARE).
#: CURATORNET_BROWSER_TARGET picks another one (e.g. while debugging).
TARGET = os.environ.get("CURATORNET_BROWSER_TARGET", "evaluation_report")

EXPERIMENT = "curatornet"
RUN_TIMEOUT_S = 300

# Runs in a subprocess with the test's environment: picks the target, then
# materializes all of its ancestors (and nothing else) in the persistent instance.
PREPARE = textwrap.dedent(
    """
    import json, sys
    import dagster as dg
    sys.path.insert(0, {repo!r})
    from curatornet_pipeline.definitions import build_resources, defs
    from tests.graph_support import materialize_graph

    wanted = {target!r}
    graph = defs.resolve_asset_graph()
    keys = {{k.to_user_string() for k in graph.materializable_asset_keys}}
    target = wanted if wanted in keys else "evaluation_report"
    key = dg.AssetKey.from_user_string(target)
    upstream = dg.AssetSelection.assets(key).upstream().resolve(graph) - {{key}}
    with dg.DagsterInstance.get() as instance:
        results = materialize_graph(
            instance, build_resources(), {{k.to_user_string() for k in upstream}}
        )
    print(json.dumps({{"target": target, "upstream": sorted(k.to_user_string() for k in upstream),
                      "runs": len(results)}}))
    """
)

RUNS_QUERY = """
query Runs {
  runsOrError(limit: 50) {
    __typename
    ... on Runs { results { runId status assetSelection { path } } }
    ... on PythonError { message }
  }
}
"""

RUN_EVENTS_QUERY = """
query RunEvents($runId: ID!) {
  logsForRun(runId: $runId, limit: 500) {
    __typename
    ... on EventConnection {
      events {
        __typename
        ... on MessageEvent { message stepKey }
        ... on ExecutionStepFailureEvent { error { message stack } }
        ... on RunFailureEvent { pipelineFailureError: error { message } }
      }
    }
  }
}
"""

LATEST_MATERIALIZATION_QUERY = """
query Latest($key: AssetKeyInput!) {
  assetOrError(assetKey: $key) {
    ... on Asset {
      assetMaterializations(limit: 1) {
        runId
        metadataEntries {
          label
          ... on UrlMetadataEntry { url }
          ... on TextMetadataEntry { text }
          ... on MarkdownMetadataEntry { mdStr }
        }
      }
    }
  }
}
"""


@pytest.fixture(scope="module")
def ui_home(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A home with the tiny dataset and every ancestor of the target materialized."""
    from curatornet_pipeline.core.data.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("browser")
    home, data = root / "home", root / "data"
    (home / "dagster").mkdir(parents=True)
    generate(SynthConfig(scale="tiny", seed=0), data)
    # The home's stable UI addresses, where every link points (docs/operations.md, "Links
    # between the UIs"); the tests serve the UIs there, or elsewhere with `curatornet ui`.
    ports = {"dagster_port": free_port(), "mlflow_port": free_port()}
    env = project_env(
        home,
        data,
        CURATORNET_DAGSTER_UI=f"http://127.0.0.1:{ports['dagster_port']}",
        CURATORNET_MLFLOW_UI=f"http://127.0.0.1:{ports['mlflow_port']}",
    )
    started = time.perf_counter()
    out = run_python(
        PREPARE.format(target=TARGET, repo=str(Path(__file__).resolve().parent.parent)),
        env,
        timeout=900,
        log=home / "prepare.log",
    )
    prepared = json.loads(out.strip().splitlines()[-1])
    prepared["prepare_s"] = time.perf_counter() - started
    return {"home": home, "data": data, "env": env, **ports, **prepared}


@pytest.fixture(scope="module")
def browser():
    from playwright import sync_api

    # .ci/run installs it; a missing browser is a failure, never a silent skip
    assert Path("/usr/bin/chromium").exists(), (
        "Debian's chromium is not installed: apt-get install chromium (as .ci/run does)"
    )
    with sync_api.sync_playwright() as p:
        chromium = launch_chromium(p)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def shots(test_output_dir: Path) -> Path:
    out = test_output_dir / "browser"
    out.mkdir(parents=True, exist_ok=True)
    return out


def _new_page(browser):
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    context.set_default_timeout(60_000)
    return context, context.new_page()


def _failure_screenshot(page, path: Path) -> None:
    """What the page showed when the test failed (best effort)."""
    try:
        page.screenshot(path=str(path), full_page=True)
    except Exception:  # noqa: BLE001 - never hide the test's own error
        pass


def _runs(base: str) -> list[dict]:
    answer = graphql(base, RUNS_QUERY)["runsOrError"]
    assert answer["__typename"] == "Runs", answer
    return answer["results"]


def _failure_details(base: str, run_id: str) -> str:
    events = graphql(base, RUN_EVENTS_QUERY, {"runId": run_id})["logsForRun"].get("events", [])
    lines = []
    for e in events:
        if e["__typename"] in ("ExecutionStepFailureEvent", "RunFailureEvent", "EngineEvent"):
            lines.append(json.dumps(e)[:3000])
    return "\n".join(lines[-10:])


def _wait_for_new_run(base: str, before: set[str], timeout: float) -> dict:
    """The run launched since ``before``, once it has finished (any final status)."""
    deadline = time.monotonic() + timeout
    run = None
    while time.monotonic() < deadline:
        new = [r for r in _runs(base) if r["runId"] not in before]
        if new:
            run = new[0]
            if run["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
                return run
        time.sleep(2)
    raise AssertionError(f"no finished run after {timeout}s; last seen: {run}")


def test_dagster_ui_materializes_the_target(browser, ui_home: dict, shots: Path) -> None:
    home, env, target = ui_home["home"], ui_home["env"], ui_home["target"]
    port = ui_home["dagster_port"]
    base = f"http://127.0.0.1:{port}"
    cmd = [
        str(VENV_BIN / "dagster"),
        "dev",
        "-w",
        "workspace.yaml",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    with server(cmd, env, home / "logs" / "dagster-dev.log", f"{base}/server_info", 120):
        # The code location loads after the webserver answers: wait for the asset.
        deadline = time.monotonic() + 120
        while True:
            answer = graphql(base, "query { assetNodes { assetKey { path } } }")
            keys = {"/".join(n["assetKey"]["path"]) for n in answer["assetNodes"]}
            if target in keys:
                break
            assert time.monotonic() < deadline, f"{target} not in the code location: {keys}"
            time.sleep(2)
        # The "Join the Dagster community" dialog, once per instance.
        graphql(base, "mutation { setNuxSeen }")
        before = {r["runId"] for r in _runs(base)}
        assert before, "the upstream runs of the prepared instance are missing"

        context, page = _new_page(browser)
        try:
            page.goto(f"{base}/assets/{target}", wait_until="domcontentloaded")
            button = page.get_by_role("button").filter(has_text=re.compile(r"^\s*Materialize\s*$"))
            button.first.wait_for(state="visible", timeout=90_000)
            # Only the target is left to materialize: its ancestors are done.
            page.get_by_text("Never materialized").first.wait_for(state="visible")
            page.screenshot(path=str(shots / "dagster_asset_before.png"), full_page=True)
            button.first.click()
            # A launchpad or confirmation dialog, if this Dagster shows one.
            dialog = page.get_by_role("dialog")
            try:
                dialog.first.wait_for(state="visible", timeout=5_000)
            except Exception:  # noqa: BLE001 - no dialog: the run was launched directly
                pass
            else:
                page.screenshot(path=str(shots / "dagster_launch_dialog.png"))
                launch = dialog.get_by_role("button").filter(
                    has_text=re.compile(r"^\s*(Launch run|Materialize|Launch)")
                )
                launch.last.click()

            run = _wait_for_new_run(base, before, RUN_TIMEOUT_S)
            assert run["status"] == "SUCCESS", (
                f"run {run['runId']} ended {run['status']}:\n{_failure_details(base, run['runId'])}"
            )
            assert ["/".join(a["path"]) for a in run["assetSelection"]] == [target]

            # GraphQL: the newest materialization is this run's, with its metadata.
            latest = graphql(base, LATEST_MATERIALIZATION_QUERY, {"key": {"path": [target]}})
            mats = latest["assetOrError"]["assetMaterializations"]
            assert mats and mats[0]["runId"] == run["runId"]
            entries = {e["label"]: e for e in mats[0]["metadataEntries"]}
            assert {"data_version", "mlflow_run", "mlflow_run_id"} <= set(entries), entries
            data_version = entries["data_version"]["text"]
            # a URL; the report's is a markdown link, so that its tables fit the screen
            link = entries["mlflow_run"]
            mlflow_url = link.get("url") or re.search(r"\((http[^)]+)\)", link["mdStr"])[1]
            assert entries["mlflow_run_id"]["text"] in mlflow_url
            assert mlflow_url.endswith("?workflowType=machine_learning"), mlflow_url

            # The run page, as a user sees it after clicking the toast's link.
            page.goto(f"{base}/runs/{run['runId']}", wait_until="domcontentloaded")
            page.get_by_text("RUN_SUCCESS", exact=True).first.wait_for(state="visible")
            page.wait_for_timeout(500)
            page.screenshot(path=str(shots / "dagster_run.png"))

            # The latest materialization's metadata in the asset's events view.
            page.goto(f"{base}/assets/{target}?view=events", wait_until="domcontentloaded")
            page.get_by_text(re.compile(r"^Materialized in run")).first.wait_for(state="visible")
            for label in ("data_version", "mlflow_run", data_version):
                page.get_by_text(label, exact=True).first.wait_for(state="visible")
            if "url" in link:
                page.get_by_text(mlflow_url, exact=True).first.wait_for(state="visible")
            page.wait_for_timeout(1000)
            page.screenshot(path=str(shots / "dagster_materialization.png"), full_page=True)
            shown = " ".join(page.inner_text("body").split())
            assert f"Materialized in run {run['runId'][:8]}" in shown, shown[:2000]
            if target == "evaluation_report":
                # Table 2 is on the page, no dialog: one typed table per protocol.
                for protocol in ("unbought", "in_stock"):
                    label = page.get_by_role("cell", name=f"table2_{protocol}", exact=True)
                    row = page.get_by_role("row").filter(has=label).first
                    row.wait_for(state="visible")
                    table = row.inner_text()
                    for method in ("Oracle", "Random", "VisRank", "CuratorNet", "VBPR"):
                        assert method in table, table
                    for column in ("method", "users", "AUC", "R@20", "R@100", "nDCG@100"):
                        assert column in table.split(), table[:500]
                    assert "±" in table, table[:500]
                # All of Table 2 and the lineage table on a 1600-pixel screen: no column is
                # cut off by the metadata column. Measured unscrolled: the label column's
                # left edge and each table's right edge within the viewport.
                for name in ("table2_unbought", "table2_in_stock", "lineage"):
                    label = page.get_by_role("cell", name=name, exact=True).first
                    inner = page.get_by_role("row").filter(has=label).first.locator("table")
                    box, start = inner.first.bounding_box(), label.bounding_box()
                    assert start["x"] >= 0 and box["x"] + box["width"] <= 1600, (name, box)
                row = page.get_by_role("row").filter(
                    has=page.get_by_role("cell", name="table2_unbought", exact=True)
                )
                row.first.evaluate("e => e.scrollIntoView({block: 'start', inline: 'nearest'})")
                assert page.evaluate("window.scrollX") == 0
                page.wait_for_timeout(500)
                page.screenshot(path=str(shots / "dagster_table2.png"))
                assert page.get_by_role("dialog").count() == 0

            # The asset's overview: latest materialization and its metadata.
            page.goto(f"{base}/assets/{target}", wait_until="domcontentloaded")
            page.get_by_text(data_version, exact=True).first.wait_for(state="visible")
            page.wait_for_timeout(1000)
            page.screenshot(path=str(shots / "dagster_asset_overview.png"), full_page=True)
        except Exception:
            _failure_screenshot(page, shots / "dagster_FAILED.png")
            raise
        finally:
            context.close()


def test_mlflow_ui_lists_asset_runs(browser, ui_home: dict, shots: Path) -> None:
    home, env = ui_home["home"], ui_home["env"]
    uri = run_python(
        "from curatornet_pipeline import settings\n"
        "print(settings.mlflow_tracking_uri()); print(settings.mlflow_artifact_root())",
        env,
        timeout=60,
        log=home / "logs" / "mlflow-uri.log",
    ).split()
    tracking_uri, artifact_root = uri[0], uri[1]
    assert tracking_uri == f"sqlite:///{home / 'mlflow.db'}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [
        str(VENV_BIN / "mlflow"),
        "ui",
        "--backend-store-uri",
        tracking_uri,
        "--default-artifact-root",
        artifact_root,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with server(cmd, env, home / "logs" / "mlflow-ui.log", f"{base}/health", 120):
        api = f"{base}/api/2.0/mlflow"
        experiment = http_json(f"{api}/experiments/get-by-name?experiment_name={EXPERIMENT}")
        experiment_id = experiment["experiment"]["experiment_id"]
        runs = http_json(
            f"{api}/runs/search", {"experiment_ids": [experiment_id], "max_results": 1000}
        )["runs"]
        assert runs, "no MLflow runs in the experiment"
        by_name = {}
        for r in runs:
            tags = {t["key"]: t["value"] for t in r["data"].get("tags", [])}
            by_name[tags.get("mlflow.runName", "")] = (r["info"], tags)
            assert r["info"]["status"] == "FINISHED", (r["info"], tags)
            assert {"dagster.run_id", "dagster.asset_key", "dagster.partition_key"} <= set(tags)
            assert tags["dagster.run_id"]
            name = tags["dagster.asset_key"]
            if tags["dagster.partition_key"]:
                name += f"[{tags['dagster.partition_key']}]"
            assert tags["mlflow.runName"] == name
        assert "inventory" in by_name
        assert "triplets[s1_user_profile]" in by_name
        assert by_name["triplets[s1_user_profile]"][1]["dagster.partition_key"] == "s1_user_profile"
        # one MLflow run per materialized asset (partition) of the prepared instance
        assert {t["dagster.asset_key"] for _, t in by_name.values()} >= set(ui_home["upstream"])

        context, page = _new_page(browser)
        try:
            page.goto(f"{base}/#/experiments/{experiment_id}/runs", wait_until="domcontentloaded")
            for name in ("inventory", "triplets[s1_user_profile]"):
                page.get_by_text(name, exact=True).first.wait_for(state="visible", timeout=90_000)
            page.get_by_text(f"{len(runs)} matching runs").first.wait_for(state="visible")
            page.wait_for_timeout(1000)
            page.screenshot(path=str(shots / "mlflow_runs.png"), full_page=True)
            assert EXPERIMENT in page.inner_text("body")

            info, _ = by_name["triplets[s1_user_profile]"]
            page.goto(
                f"{base}/#/experiments/{experiment_id}/runs/{info['run_id']}",
                wait_until="domcontentloaded",
            )
            page.get_by_text("dagster.partition_key", exact=False).first.wait_for(
                state="visible", timeout=60_000
            )
            page.wait_for_timeout(1000)
            page.screenshot(path=str(shots / "mlflow_run.png"), full_page=True)
        except Exception:
            _failure_screenshot(page, shots / "mlflow_FAILED.png")
            raise
        finally:
            context.close()


def _mlflow_cmd(env: dict, home: Path, port: int) -> list[str]:
    uri = run_python(
        "from curatornet_pipeline import settings\n"
        "print(settings.mlflow_tracking_uri()); print(settings.mlflow_artifact_root())",
        env,
        timeout=60,
        log=home / "logs" / "mlflow-uri.log",
    ).split()
    return [
        str(VENV_BIN / "mlflow"), "ui", "--backend-store-uri", uri[0],
        "--default-artifact-root", uri[1], "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip


def _dagster_cmd(port: int) -> list[str]:
    return [
        str(VENV_BIN / "dagster"), "dev", "-w", "workspace.yaml",
        "-h", "127.0.0.1", "-p", str(port),
    ]  # fmt: skip


def _click_to_page(page, link):
    """Click a link; the page it opened (a new tab for target=_blank, else the same one)."""
    try:
        with page.context.expect_page(timeout=10_000) as opened:
            link.click()
    except Exception:  # noqa: BLE001 - no new tab: the link navigated this page
        return page
    new = opened.value
    new.wait_for_load_state("domcontentloaded")
    return new


def _wait_for_asset(base: str, asset: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        answer = graphql(base, "query { assetNodes { assetKey { path } } }")
        if asset in {"/".join(n["assetKey"]["path"]) for n in answer["assetNodes"]}:
            return
        assert time.monotonic() < deadline, f"{asset} not in the code location"
        time.sleep(2)


def test_links_both_ways_on_non_default_ports(browser, ui_home: dict, shots: Path) -> None:
    """MLflow UI on a free port (not 5000): Dagster's links open its runs, MLflow's runs
    link back to the Dagster run, Table 2's model rows lead to their triplet partitions."""
    home, env = ui_home["home"], ui_home["env"]
    mport, dport = ui_home["mlflow_port"], ui_home["dagster_port"]
    assert mport != 5000
    mbase, dbase = f"http://127.0.0.1:{mport}", f"http://127.0.0.1:{dport}"
    log = home / "logs"
    with (
        server(_mlflow_cmd(env, home, mport), env, log / "mlflow-ui-2.log", f"{mbase}/health", 120),
        server(_dagster_cmd(dport), env, log / "dagster-dev-2.log", f"{dbase}/server_info", 120),
    ):
        _wait_for_asset(dbase, "evaluation_report")
        graphql(dbase, "mutation { setNuxSeen }")
        context, page = _new_page(browser)
        try:
            # 1. The asset's MLflow link (its materialization's run) opens that run.
            page.goto(f"{dbase}/assets/visual_clusters?view=events", wait_until="load")
            page.get_by_text(re.compile(r"^Materialized in run")).first.wait_for(state="visible")
            link = page.locator(f'a[href^="{mbase}/#/experiments/"][href*="/runs/"]').first
            link.wait_for(state="visible")
            href = link.get_attribute("href")
            run_id = href.split("/runs/")[1].split("?")[0]
            mlflow_page = _click_to_page(page, link)
            mlflow_page.get_by_text("visual_clusters", exact=True).first.wait_for(
                state="visible", timeout=90_000
            )
            assert mlflow_page.url.startswith(mbase) and run_id in mlflow_page.url
            # 2. MLflow's navigation offers the registered models (model-training view).
            models = mlflow_page.get_by_role("link", name=re.compile(r"^\s*Models\s*$"))
            models.first.wait_for(state="visible")
            mlflow_page.wait_for_timeout(1500)
            mlflow_page.screenshot(path=str(shots / "mlflow_run_from_dagster.png"))
            # 3. The run's description links back to the Dagster run.
            back = mlflow_page.locator(f'a[href^="{dbase}/runs/"]').first
            back.wait_for(state="visible")
            dagster_run = back.get_attribute("href").rsplit("/", 1)[1]
            target = _click_to_page(mlflow_page, back)
            target.wait_for_url(f"{dbase}/runs/{dagster_run}*", timeout=60_000)
            target.get_by_text("RUN_SUCCESS", exact=True).first.wait_for(state="visible")
            target.wait_for_timeout(1000)
            target.screenshot(path=str(shots / "dagster_run_from_mlflow.png"))
            mlflow_page.goto(f"{mbase}/#/models?workflowType=machine_learning")
            mlflow_page.get_by_text("Registered Models", exact=False).first.wait_for(
                state="visible", timeout=60_000
            )
            mlflow_page.wait_for_timeout(1000)
            mlflow_page.screenshot(path=str(shots / "mlflow_models.png"))

            # 4. Assets materialized before the port was chosen still link to this MLflow:
            # the definition's link is computed when the code location loads.
            page.goto(f"{dbase}/assets/triplets", wait_until="load")
            defined = page.locator(f'a[href^="{mbase}/#/experiments/"][href*="searchFilter"]')
            defined.first.wait_for(state="visible", timeout=60_000)
            page.screenshot(path=str(shots / "dagster_definition_mlflow_link.png"))

            # 5. Lineage: from a model row of Table 2 to one of its triplet partitions.
            page.goto(f"{dbase}/assets/evaluation_report?view=events", wait_until="load")
            lineage = page.get_by_role("row").filter(
                has=page.get_by_role("cell", name="lineage", exact=True)
            )
            lineage.first.wait_for(state="visible")
            assert "s1@" in lineage.first.inner_text()
            links = page.get_by_role("row").filter(
                has=page.get_by_role("cell", name="lineage_links", exact=True)
            )
            links.first.get_by_text("[Show Markdown]").click()
            dialog = page.get_by_role("dialog").filter(has_text="Lineage of each model row")
            dialog.first.wait_for(state="visible")
            page.screenshot(path=str(shots / "dagster_lineage_links.png"))
            triplet = dialog.first.locator('a[href^="/assets/triplets?"]').first
            partition = triplet.inner_text().split()[0]
            triplet.click()
            page.wait_for_url(re.compile(r"/assets/triplets\?.*partition="), timeout=60_000)
            # a partition's event reads "Partition <key> materialized in run <id>"
            page.get_by_text(re.compile(r"materialized in run", re.I)).first.wait_for(
                state="visible"
            )
            assert f"partition={partition}" in page.url
            page.wait_for_timeout(1000)
            page.screenshot(path=str(shots / "dagster_triplet_from_lineage.png"), full_page=True)
        except Exception:
            _failure_screenshot(page, shots / "links_FAILED.png")
            raise
        finally:
            context.close()


def test_curatornet_ui_on_other_ports_opens_earlier_links(
    browser, ui_home: dict, shots: Path
) -> None:
    """`curatornet ui` on ports other than the home's stable addresses: a link written by an
    earlier run opens its MLflow run page (through the redirect), the printed MLflow page
    is the experiment in the model-training view, and the triplets checks name their
    partitions."""
    home, env = ui_home["home"], ui_home["env"]
    stable = f"http://127.0.0.1:{ui_home['mlflow_port']}"
    dport, mport = free_port(), free_port()
    dbase, mbase = f"http://127.0.0.1:{dport}", f"http://127.0.0.1:{mport}"
    log = home / "logs" / "curatornet-ui.log"
    cmd = [str(VENV_BIN / "curatornet"), "ui", "--dagster-port", str(dport)]
    cmd += ["--mlflow-port", str(mport)]
    with server(cmd, env, log, f"{dbase}/server_info", 240) as proc:
        wait_http(f"{mbase}/health", 120, proc, log)
        _wait_for_asset(dbase, "visual_clusters")
        graphql(dbase, "mutation { setNuxSeen }")
        context, page = _new_page(browser)
        try:
            # 1. The materialization's own link, written by the run that prepared the home.
            page.goto(f"{dbase}/assets/visual_clusters?view=events", wait_until="load")
            page.get_by_text(re.compile(r"^Materialized in run")).first.wait_for(state="visible")
            link = page.locator(f'a[href^="{stable}/#/experiments/"][href*="/runs/"]').first
            link.wait_for(state="visible")
            run_id = link.get_attribute("href").split("/runs/")[1].split("?")[0]
            mlflow_page = _click_to_page(page, link)
            mlflow_page.wait_for_url(f"{mbase}/**", timeout=60_000)
            mlflow_page.get_by_text("visual_clusters", exact=True).first.wait_for(
                state="visible", timeout=90_000
            )
            assert run_id in mlflow_page.url and "workflowType=machine_learning" in mlflow_page.url
            mlflow_page.wait_for_timeout(1500)
            mlflow_page.screenshot(path=str(shots / "mlflow_run_via_stable_link.png"))

            # 2. The page `curatornet ui` prints: the experiment's runs, in the
            # model-training view (its navigation: Runs and Models, none of GenAI's Judges).
            start = re.search(r"MLflow UI: (\S+)", log.read_text()).group(1)
            assert start.startswith(f"{mbase}/#/experiments/"), start
            mlflow_page.goto(start, wait_until="load")
            mlflow_page.get_by_text("visual_clusters", exact=True).first.wait_for(
                state="visible", timeout=90_000
            )
            for item in ("Runs", "Models"):
                mlflow_page.get_by_role("link", name=item, exact=True).first.wait_for()
            mlflow_page.wait_for_timeout(1500)
            assert mlflow_page.get_by_text("Judges", exact=True).count() == 0
            assert "workflowType=machine_learning" in mlflow_page.url, mlflow_page.url
            mlflow_page.screenshot(path=str(shots / "mlflow_experiment_training_view.png"))

            # 3. The triplets checks: each result names its strategy partition.
            page.goto(f"{dbase}/assets/triplets?view=checks", wait_until="load")
            check = page.get_by_text("strategy_invariants", exact=True).first
            check.wait_for(state="visible")
            check.click()
            # the latest execution's description, and its metadata, name the partition
            partitions = "|".join(STRATEGIES)
            named = page.get_by_text(re.compile(rf"^partition ({partitions})$")).first
            named.wait_for(state="visible")
            partition = named.inner_text().split()[1]
            metadata = page.get_by_role("row").filter(
                has=page.get_by_role("cell", name="partition", exact=True)
            )
            assert partition in metadata.first.inner_text()
            page.wait_for_timeout(1000)
            page.screenshot(path=str(shots / "dagster_triplets_checks.png"), full_page=True)
        except Exception:
            _failure_screenshot(page, shots / "ui_links_FAILED.png")
            raise
        finally:
            context.close()
