"""``curatornet serve``: the champion over HTTP from a shell without the venv, and the
answers to a user's mistakes (HTTP 400, one line, no traceback, no server path).

The model is a small untrained CuratorNet over 40 random artworks, registered as
``curatornet@champion`` in a SQLite MLflow store of its own home folder.
"""

import json
import logging
import os
import shlex
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from browser_support import REPO_ROOT, VENV_BIN, free_port, server

from curatornet_pipeline.core.data.catalogue import Catalogue
from curatornet_pipeline.core.models.networks import CuratorNet, CuratorNetConfig, save_model
from curatornet_pipeline.core.models.scorers import CuratorNetScorer
from curatornet_pipeline.core.recommend.recommender import RECORD_FIELDS, Recommender

N_ITEMS, D_IN = 40, 16


def _catalogue() -> Catalogue:
    rng = np.random.default_rng(0)
    return Catalogue.from_arrays(
        [f"art{i:03d}" for i in range(N_ITEMS)],
        rng.normal(size=(N_ITEMS, D_IN)).astype(np.float32),
        artists=[f"artist{i % 5}" for i in range(N_ITEMS)],
        clusters=[i % 3 for i in range(N_ITEMS)],
    )


def _model() -> CuratorNet:
    torch.manual_seed(0)
    net = CuratorNet(CuratorNetConfig(input_dim=D_IN, item_layers=(16, 8), user_layers=(16, 8)))
    net.fit_scaler(_catalogue().features)
    return net.eval()


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home folder whose MLflow store holds ``curatornet@champion``."""
    from mlflow import MlflowClient

    from curatornet_pipeline.mlflow_model import log_recommender

    home = tmp_path_factory.mktemp("serve_home")
    uri = f"sqlite:///{home / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("curatornet", artifact_location=str(home / "mlartifacts"))
    run = client.create_run(experiment)
    save_model(home / "model.pt", _model(), {})
    source = log_recommender(client, run.info.run_id, home / "model.pt", _catalogue(), ["art001"])
    client.set_terminated(run.info.run_id)
    client.create_registered_model("curatornet")
    version = client.create_model_version("curatornet", source, run_id=run.info.run_id)
    client.set_registered_model_alias("curatornet", "champion", version.version)
    return home


def _post(url: str, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, json.dumps(payload).encode(), {"Content-Type": "application/json"}
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _fresh_shell_env(home: Path) -> dict[str, str]:
    """A login shell's environment: no venv on PATH, nothing of the project's."""
    return {
        "HOME": os.environ.get("HOME", str(home)),
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "CURATORNET_HOME": str(home),
        "NO_PROXY": "127.0.0.1,localhost",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
        "OMP_NUM_THREADS": "1",
    }


@pytest.mark.slow
def test_serve_answers_requests_and_names_mistakes(home: Path, monkeypatch, capsys) -> None:
    env = _fresh_shell_env(home)
    assert str(VENV_BIN) not in env["PATH"]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = home / "serve.log"
    cmd = [str(VENV_BIN / "curatornet"), "serve", "--port", str(port)]
    started = time.monotonic()
    with server(cmd, env, log, f"{base}/ping", 180) as proc:
        ready = time.monotonic() - started
        # the request the command prints, as printed
        banner = log.read_text()
        assert "models:/curatornet@champion (version 1)" in banner
        curl = shlex.split(next(line for line in banner.splitlines() if "curl " in line))
        assert curl[2] == f"{base}/invocations"
        good = json.loads(curl[curl.index("-d") + 1])
        liked = good["dataframe_records"][0]["liked"]
        assert liked == ["art001"]  # the model's input example

        status, body = _post(f"{base}/invocations", good)
        assert status == 200, body
        rows = body["predictions"]
        assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
        assert list(rows[0]) == ["request", *RECORD_FIELDS]
        assert all(r["because"] == "art001" and r["item_id"] not in liked for r in rows)
        assert all(r["contribution"] == pytest.approx(r["score"]) for r in rows)  # one item

        mistakes = {
            "unknown id": (
                {"dataframe_records": [{"liked": ["art002", "no-such-art"]}]},
                "unknown artwork ids (not in the catalogue): ['no-such-art']",
            ),
            "empty profile": (
                {"dataframe_records": [{"liked": []}]},
                "empty profile: 'liked' holds no artwork id and no 'image_vectors' were given",
            ),
            "k = 0": (
                {"dataframe_records": [{"liked": ["art002"]}], "params": {"k": 0}},
                "param k must be a positive integer, got 0",
            ),
        }
        for what, (payload, message) in mistakes.items():
            status, body = _post(f"{base}/invocations", payload)
            assert status == 400, (what, body)
            assert body["error_code"] == "INVALID_PARAMETER_VALUE", (what, body)
            assert body["message"] == message, what
            text = json.dumps(body)
            assert "Traceback" not in text and "stack_trace" not in body, what
            for path in (str(REPO_ROOT), sys.prefix, str(home), "site-packages", ".py"):
                assert path not in text, (what, path)
        assert proc.poll() is None
    print(f"curatornet serve answered /ping after {ready:.1f}s", file=sys.stderr)

    # `curatornet recommend` gives the same fields and the same answer
    from curatornet_pipeline import cli, serve

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
    capsys.readouterr()
    assert serve.serve("models:/curatornet@no_such_alias", free_port()) == 2
    assert "Registered model alias no_such_alias not found" in capsys.readouterr().err
    assert cli.main(["recommend", "--items", "art001", "--k", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == list(RECORD_FIELDS)
    printed = [line.split() for line in lines[1:]]
    assert [p[1] for p in printed] == [r["item_id"] for r in rows]
    assert [p[3] for p in printed] == [r["because"] for r in rows]


def test_serve_refuses_a_missing_store_and_a_taken_port(tmp_path, capsys, monkeypatch) -> None:
    import socket

    from curatornet_pipeline import serve

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'none' / 'mlflow.db'}")
    assert serve.serve(port=free_port()) == 2
    assert "no MLflow store" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert serve.serve(port=taken.getsockname()[1]) == 2
    assert "is taken" in capsys.readouterr().err


def test_serve_command_puts_this_environment_first_on_path(monkeypatch) -> None:
    from curatornet_pipeline.serve import serve_command

    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    cmd, env = serve_command("models:/curatornet@champion", 5123, "sqlite:////x/mlflow.db")
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert cmd[0] == str(Path(sys.executable).parent / "mlflow")
    assert cmd[1:] == [
        "models", "serve", "-m", "models:/curatornet@champion", "--env-manager", "local",
        "-h", "127.0.0.1", "-p", "5123",
    ]  # fmt: skip
    assert env["MLFLOW_TRACKING_URI"] == "sqlite:////x/mlflow.db"


# ----------------------------------------------------------------------------- the pyfunc


def _pyfunc():
    from curatornet_pipeline.mlflow_model import CuratorNetRecommender

    model = CuratorNetRecommender()
    catalogue = _catalogue()
    model.recommender = Recommender(CuratorNetScorer(_model(), catalogue.features), catalogue)
    return model


@pytest.mark.parametrize(
    ("rows", "params", "message"),
    [
        ([{"liked": ["art001", "nope", "nada"]}], {}, "unknown artwork ids (not in the catalogue)"),
        ([{"liked": []}], {}, "empty profile"),
        ([{"liked": ["art001"]}], {"k": 0}, "param k must be a positive integer, got 0"),
        ([{"liked": ["art001"]}], {"k": "5"}, "param k must be a positive integer, got '5'"),
        ([{"liked": ["art001"]}], {"in_stock_only": "no"}, "in_stock_only must be true or false"),
        ([{"liked": ["art001"]}, {"liked": ["x"]}], {}, "row 1: unknown artwork ids"),
        ([{"liked": ["art001"], "image_vectors": [[0.5] * 3]}], {}, "needs 16 numbers, got [3]"),
        ([{"other": ["art001"]}], {}, "input needs a 'liked' column"),
    ],
)
def test_pyfunc_names_each_mistake_in_one_line(rows, params, message) -> None:
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException) as raised:
        _pyfunc().predict(None, pd.DataFrame(rows), params)
    error = raised.value
    assert error.get_http_status_code() == 400 and message in error.message
    # MLflow's scoring server prefixes the request's data: the line stays as raised
    error.message = f"Failed to predict data '{rows}'. \nError: {error.message}"
    assert message in error.message and "\n" not in error.message
    assert json.loads(error.serialize_as_json())["message"] == error.message


def test_pyfunc_answers_a_fault_with_500_and_logs_it(caplog) -> None:
    from mlflow.exceptions import MlflowException

    model = _pyfunc()

    def broken(*args, **kwargs):
        raise RuntimeError("disk failure at /srv/secret/path")

    model.recommender.recommend = broken
    with caplog.at_level(logging.ERROR), pytest.raises(MlflowException) as raised:
        model.predict(None, pd.DataFrame([{"liked": ["art001"]}]), {"k": 3})
    assert raised.value.get_http_status_code() == 500
    assert "/srv/secret" not in raised.value.message and "RuntimeError" in raised.value.message
    assert "disk failure at /srv/secret/path" in caplog.text  # the server's log has it


def test_pyfunc_and_recommender_give_the_same_fields() -> None:
    model = _pyfunc()
    out = model.predict(None, pd.DataFrame([{"liked": ["art001", "art007"]}]), {"k": 4})
    assert list(out.columns) == ["request", *RECORD_FIELDS]
    recs = model.recommender.recommend(["art001", "art007"], k=4, in_stock_only=True)
    expected = pd.DataFrame(model.recommender.records(recs))
    pd.testing.assert_frame_equal(out.drop(columns="request"), expected, check_dtype=False)
