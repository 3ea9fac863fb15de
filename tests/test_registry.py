"""The registered model: a pyfunc anyone can load or serve, and the champion rule.

One home per module, prepared in a subprocess: the tiny pipeline up to
``evaluation_report``; then an *untrained* CuratorNet registered by hand as the
current champion (its run tagged ``champion=True``, plus one more run with a stale
``champion=True``); then the ``champion`` asset, whose trained candidate must take
the alias from it; then the untrained model once more as a candidate against the new
champion, which must not take the alias. Both sides of every comparison are scored
by the same evaluation code on the same split.
"""

import json
import sys
import textwrap
import time

import pytest
from browser_support import (
    REPO_ROOT,
    VENV_BIN,
    free_port,
    http_json,
    project_env,
    run_python,
    server,
)

PREPARE = textwrap.dedent(
    """
    import json, sys, tempfile
    from pathlib import Path
    import dagster as dg, torch
    sys.path.insert(0, {repo!r})
    from mlflow import MlflowClient
    from curatornet_pipeline import registry, serving, settings
    from curatornet_pipeline.core.evaluation import evaluate as ev
    from curatornet_pipeline.core.evaluation import report
    from curatornet_pipeline.core.models.networks import CuratorNet, CuratorNetConfig, save_model
    from curatornet_pipeline.core.models.scorers import CuratorNetScorer
    from curatornet_pipeline.definitions import build_resources, defs
    from curatornet_pipeline.mlflow_model import log_recommender
    from tests.graph_support import materialize_graph

    graph = defs.resolve_asset_graph()
    key = dg.AssetKey("champion")
    upstream = dg.AssetSelection.assets(key).upstream().resolve(graph) - {key}
    uri = settings.mlflow_tracking_uri()
    resources = build_resources()
    with dg.DagsterInstance.get() as instance:
        materialize_graph(instance, resources, {k.to_user_string() for k in upstream})
        client = MlflowClient(uri, uri)
        storage = settings.storage_uri()
        catalogue = serving._read_bundle(storage, "catalogue")
        split = serving._read_bundle(storage, "train_test_split")
        config = resources["pipeline"].build("evaluation")
        timeline = report.timeline(catalogue)
        features = catalogue.features

        def auc(net):
            scorer = CuratorNetScorer(net, features)
            return float(ev.evaluate(scorer, split, config, timeline).summary["auc"][0])

        torch.manual_seed(123)
        untrained = CuratorNet(CuratorNetConfig(input_dim=features.shape[1]))
        untrained.fit_scaler(features)
        untrained.eval()
        model_file = Path(tempfile.mkdtemp()) / "untrained.pt"
        save_model(model_file, untrained, {})
        experiment = client.get_experiment_by_name("curatornet").experiment_id

        def register_untrained():
            run = client.create_run(experiment, tags={"mlflow.runName": "untrained"})
            source = log_recommender(client, run.info.run_id, model_file, catalogue,
                                     catalogue.ids[:2])
            client.set_terminated(run.info.run_id)
            return client.create_model_version("curatornet", source, run_id=run.info.run_id)

        registry.ensure_registered_model(client)
        old = register_untrained()
        client.set_registered_model_alias("curatornet", "champion", old.version)
        client.set_tag(old.run_id, "champion", "True")
        client.set_tag(old.run_id, "registered_model", "curatornet")
        stale = client.create_run(experiment, tags={"champion": "True",
                                                    "registered_model": "curatornet"})
        client.set_terminated(stale.info.run_id)

        materialize_graph(instance, resources, {"champion"})
        new = registry.current_champion(client)

        # the untrained model again, now a candidate against the trained champion
        worse = register_untrained()

        def score_version(mv):
            from curatornet_pipeline.core.models.networks import load_model
            folder = Path(client.download_artifacts(mv.run_id, "recommender/artifacts",
                                                   tempfile.mkdtemp()))
            return auc(load_model(next(folder.glob("*.pt")))[0])

        decision = registry.apply_rule(client, worse, auc(untrained), score_version,
                                       protocol=config.protocol)
    print(json.dumps({
        "old": str(old.version), "new": str(new.version), "worse": str(worse.version),
        "untrained_auc": auc(untrained), "stale_run": stale.info.run_id,
        "worse_decision": {"promote": decision.promote, "candidate": decision.candidate,
                           "champion": decision.champion},
        "item_ids": catalogue.ids[:6].tolist(),
    }))
    """
)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from curatornet_pipeline.core.data.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("registry")
    home, data = root / "home", root / "data"
    (home / "dagster").mkdir(parents=True)
    generate(SynthConfig(scale="tiny", seed=0), data)
    env = project_env(home, data, OMP_NUM_THREADS="1")
    out = run_python(
        PREPARE.replace("{repo!r}", repr(str(REPO_ROOT))),
        env,
        timeout=900,
        log=home / "prepare.log",
    )
    prepared = json.loads(out.strip().splitlines()[-1])
    from mlflow import MlflowClient

    uri = f"sqlite:///{home / 'mlflow.db'}"
    return {"home": home, "env": env, "uri": uri, "client": MlflowClient(uri, uri), **prepared}


@pytest.mark.slow
def test_better_candidate_takes_the_alias_worse_does_not(home: dict) -> None:
    client = home["client"]
    champ = client.get_model_version_by_alias("curatornet", "champion")
    assert str(champ.version) == home["new"] != home["old"]
    promoted = client.get_model_version("curatornet", home["new"])
    tags = promoted.tags
    # compared with the untrained champion, re-scored on the same split
    assert tags["compared_with_version"] == home["old"]
    assert float(tags["champion_test_auc_same_split"]) == pytest.approx(
        home["untrained_auc"], abs=1e-6
    )
    assert float(tags["test_auc"]) > float(tags["champion_test_auc_same_split"])
    assert tags["decision"] == "promoted"
    assert "promoted to champion" in promoted.description
    assert f"{float(tags['champion_test_auc_same_split']):.4f}" in promoted.description
    # and how it was chosen: the rule, the candidates and their validation AUCs
    assert "picked by the highest validation AUC" in promoted.description
    assert tags["selected_on"] == "val_auc" and tags["candidates"] == "2"
    for pair in tags["candidate_val_auc"].split(", "):
        key, auc = pair.split("=")
        assert key.startswith("l") and f"{key} {auc}" in promoted.description.replace("*", "")
    # the version says what it is
    assert tags["variant"].startswith("curatornet-l") and tags["sampling"] == "guidelines"
    assert tags["variant"] == f"curatornet-{tags['dagster.partition_key']}"
    assert tags["dagster.partition_key"] == f"l{tags['lambda']}"
    assert tags["dagster.run_id"] and tags["data_version"]

    worse = home["worse_decision"]
    assert not worse["promote"]
    assert worse["candidate"] == pytest.approx(home["untrained_auc"], abs=1e-6)
    assert worse["champion"] == pytest.approx(float(tags["test_auc"]), abs=1e-6)
    rejected = client.get_model_version("curatornet", home["worse"])
    assert rejected.tags["decision"] == "kept" and "not promoted" in rejected.description


@pytest.mark.slow
def test_no_run_carries_a_stale_champion_tag(home: dict) -> None:
    client = home["client"]
    champ = client.get_model_version_by_alias("curatornet", "champion")
    experiments = [e.experiment_id for e in client.search_experiments()]
    flagged = client.search_runs(experiments, filter_string="tags.champion = 'True'")
    assert [r.info.run_id for r in flagged] == [champ.run_id]
    old = client.get_model_version("curatornet", home["old"])
    assert client.get_run(old.run_id).data.tags["champion"] == "False"
    assert client.get_run(home["stale_run"]).data.tags["champion"] == "False"


@pytest.mark.slow
def test_champion_loads_in_a_fresh_process(home: dict) -> None:
    """Only mlflow is imported by hand: the pyfunc brings the project's code itself."""
    code = textwrap.dedent(
        f"""
        import json, sys
        import mlflow.pyfunc
        import pandas as pd
        assert not any(m.startswith("curatornet_pipeline") for m in sys.modules)
        model = mlflow.pyfunc.load_model("models:/curatornet@champion")
        liked = {home["item_ids"][:2]!r}
        out = model.predict(pd.DataFrame({{"liked": [liked]}}), params={{"k": 5}})
        print(json.dumps({{"rows": out.to_dict(orient="records"),
                          "inputs": model.metadata.get_input_schema().input_names()}}))
        """
    )
    env = {**home["env"], "MLFLOW_TRACKING_URI": home["uri"]}
    out = run_python(code, env, timeout=300, log=home["home"] / "logs" / "load.log")
    answer = json.loads(out.strip().splitlines()[-1])
    rows = answer["rows"]
    assert answer["inputs"] == ["liked", "image_vectors"]
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    assert all(r["item_id"] not in home["item_ids"][:2] for r in rows)
    assert all(r["because"] in home["item_ids"][:2] for r in rows)
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.slow
def test_mlflow_models_serve_answers_recommendation_requests(home: dict) -> None:
    port = free_port()
    env = {**home["env"], "MLFLOW_TRACKING_URI": home["uri"]}
    cmd = [
        str(VENV_BIN / "mlflow"),
        "models",
        "serve",
        "-m",
        "models:/curatornet@champion",
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    with server(cmd, env, home["home"] / "logs" / "serve.log", f"{base}/ping", 180) as proc:
        liked = home["item_ids"][2:4]
        answer = http_json(
            f"{base}/invocations",
            {"dataframe_records": [{"liked": liked}], "params": {"k": 3}},
        )
        rows = answer["predictions"]
        assert [r["rank"] for r in rows] == [1, 2, 3]
        assert all(r["item_id"] not in liked and r["because"] in liked for r in rows)
        assert proc.poll() is None
    assert proc.poll() is not None, "the server is still running"
    print(f"served in {time.monotonic() - started:.1f}s", file=sys.stderr)


def test_decide_promotes_only_a_strictly_higher_metric() -> None:
    from curatornet_pipeline.registry import decide

    assert decide(0.61, None).promote  # no champion yet
    better = decide(0.62, 0.60, "3")
    assert better.promote and better.champion_version == "3"
    assert "+0.0200" in better.markdown()
    assert not decide(0.60, 0.60, "3").promote  # a tie keeps the champion
    worse = decide(0.58, 0.60, "3")
    assert not worse.promote and "not promoted" in worse.markdown("auc", "unbought")
    assert "champion v3: 0.6000" in worse.markdown()


def test_version_description_states_the_selection_and_the_gate(mlflow_store: str, tmp_path) -> None:
    """The rule, every candidate with its validation AUC, and the test-AUC comparison with
    the previous champion, in the description and the tags of each version."""
    from mlflow import MlflowClient

    from curatornet_pipeline import registry

    name = "curatornet_test_description"  # not the pipeline's model
    client = MlflowClient(tracking_uri=mlflow_store, registry_uri=mlflow_store)
    experiment = client.get_experiment_by_name("curatornet").experiment_id
    client.create_registered_model(name)

    def register(l2: str):
        run = client.create_run(experiment)
        client.set_terminated(run.info.run_id)
        (tmp_path / l2).mkdir()
        return client.create_model_version(name, str(tmp_path / l2), run_id=run.info.run_id)

    first, second = register("l0"), register("l0.0001")
    selection = registry.Selection(
        chosen="l0", scores={"l0": 0.71, "l0.0001": 0.69}, selected_on="val_auc", label="CN (0)"
    )
    decision = registry.apply_rule(
        client, first, 0.65, lambda mv: None, name=name, protocol="unbought", selection=selection
    )
    assert decision.promote and decision.champion is None
    text = client.get_model_version(name, first.version).description
    assert "variant `l0` (CN (0)), picked by the highest validation AUC" in text
    assert "among 2 CuratorNet candidates: **l0 0.7100**, l0.0001 0.6900" in text
    assert "strictly higher than the current champion's" in text
    assert "this version 0.6500, no champion yet. **promoted to champion**" in text
    tags = client.get_model_version(name, first.version).tags
    assert tags["candidate_val_auc"] == "l0=0.7100, l0.0001=0.6900"
    assert tags["selected_on"] == "val_auc" and tags["candidates"] == "2"

    later = registry.Selection(
        chosen="l0.0001", scores={"l0": 0.70, "l0.0001": 0.72}, selected_on="val_auc"
    )
    decision = registry.apply_rule(
        client, second, 0.64, lambda mv: 0.66, name=name, protocol="unbought", selection=later
    )
    assert not decision.promote
    text = client.get_model_version(name, second.version).description
    assert "l0 0.7000, **l0.0001 0.7200**" in text
    assert f"this version 0.6400, champion v{first.version}: 0.6600" in text
    assert "**not promoted**: -0.0200, not higher" in text
    tags = client.get_model_version(name, second.version).tags
    assert tags["compared_with_version"] == str(first.version)
    assert tags["champion_test_auc_same_split"] == "0.660000" and tags["decision"] == "kept"


def test_report_tables_are_typed_with_short_ids() -> None:
    import pandas as pd

    from curatornet_pipeline.defs.presentation import (
        recommendations_value,
        table2_metadata,
        table2_value,
    )

    table = pd.DataFrame(
        {
            "n_users": [10, 10],
            "auc": [0.7, 0.5],
            "auc_se": [0.01, float("nan")],
            "recall@100": [0.25, 0.0],
            "recall@100_se": [0.1, 0.0],
            "mrr": [0.3, 0.1],  # not a headline metric: in the report's files only
            "mrr_se": [0.1, 0.1],
        },
        index=pd.Index(["CuratorNet (0.0001)", "Random"], name="method"),
    )
    value = table2_value(table)
    assert [(c.name, c.type) for c in value.schema.columns] == [
        ("method", "string"),
        ("users", "int"),
        ("AUC", "string"),
        ("R@100", "string"),
    ]
    assert value.records[0].data == {
        "method": "CuratorNet (0.0001)",
        "users": 10,
        "AUC": ".7000 ± .0100",
        "R@100": ".2500 ± .1000",
    }
    assert value.records[1].data["AUC"] == ".5000"  # NaN: no standard error
    # every metric, as numbers, for `curatornet lineage` and scripts
    every = table2_metadata({"unbought": table})["table2"].value["unbought"]
    assert every["CuratorNet (0.0001)"]["mrr"] == 0.3
    assert every["Random"]["auc_se"] is None
    recs = pd.DataFrame(
        {
            "user_id": ["u" * 40],
            "rank": [1],
            "item_id": ["a" * 40],
            "score": [1.5],
            "because": ["b" * 40],
            "contribution": [0.7],
            "similarity": [0.9],
            "same_artist": [True],
            "same_cluster": [False],
            "in_hidden_basket": [True],
        }
    )
    row = recommendations_value(recs).records[0].data
    assert row["user"] == "u" * 8 and row["artwork"] == "a" * 8 and row["because"] == "b" * 8
    assert row["hit"] is True and row["contribution"] == 0.7
