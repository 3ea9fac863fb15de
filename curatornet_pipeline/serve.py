"""``curatornet serve``: the registered recommender over HTTP, with MLflow's scoring server.

Checks the model and the port, prints a request to try, then *becomes* ``mlflow models
serve --env-manager local`` on 127.0.0.1 (``os.execve``: one process fewer, and Ctrl-C
or SIGTERM reach MLflow). Light on purpose: nothing here imports torch or the pipeline.
"""

import json
import os
import re
import shlex
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from curatornet_pipeline import settings
from curatornet_pipeline.registry import ALIAS, MODEL_NAME

CHAMPION_URI = f"models:/{MODEL_NAME}@{ALIAS}"
DEFAULT_PORT = 5001  # `curatornet ui` puts the MLflow UI on 5000


def serve_command(
    model: str = CHAMPION_URI, port: int = DEFAULT_PORT, tracking_uri: str | None = None
) -> tuple[list[str], dict[str, str]]:
    """``mlflow models serve`` of ``model`` on 127.0.0.1:``port``, and its environment.

    ``--env-manager local`` runs the model in this environment (the project is not on a
    package index). MLflow then starts ``uvicorn`` from ``PATH``, so this environment's
    bin folder (``Path(sys.executable).parent``, not resolved: a venv's python is a link
    out of it) goes first on the child's ``PATH``, and the command works from a shell
    that never activated the venv. The tracking URI is the project's
    (``MLFLOW_TRACKING_URI``, else the home folder's SQLite store).
    """
    bindir = Path(sys.executable).parent
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(bindir), *filter(None, [env.get("PATH")])])
    env["MLFLOW_TRACKING_URI"] = tracking_uri or settings.mlflow_tracking_uri()
    env.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    cmd = [
        str(bindir / "mlflow"), "models", "serve", "-m", model, "--env-manager", "local",
        "-h", "127.0.0.1", "-p", str(port),
    ]  # fmt: skip
    return cmd, env


def describe_model(model: str, tracking_uri: str) -> tuple[str, list[str]]:
    """(``model``, with its version when it names a registered model's alias; up to two
    catalogue ids of its input example). LookupError with MLflow's reason when there is
    no such model."""
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    label = model
    try:
        alias = re.fullmatch(r"models:/([^/@]+)@([^/]+)", model)
        if alias:
            version = mlflow.MlflowClient().get_model_version_by_alias(*alias.groups()).version
            label = f"{model} (version {version})"
        example = mlflow.artifacts.download_artifacts(
            artifact_uri=f"{model.rstrip('/')}/input_example.json"
        )
    except (MlflowException, OSError) as exc:
        reason = (getattr(exc, "message", None) or str(exc)).strip().splitlines()[0]
        raise LookupError(
            f"no model {model} in the MLflow store {tracking_uri}: {reason}"
        ) from None
    try:
        with open(example) as f:
            liked = [str(i) for i in json.load(f)["data"][0][0]]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        liked = []  # not this project's input example: the request shows placeholders
    return label, liked[:2]


def example_request(port: int, liked: Sequence[str], k: int = 5) -> str:
    """A ``curl`` command asking the server on ``port`` for the top ``k`` of ``liked``."""
    payload = {"dataframe_records": [{"liked": list(liked) or ["ID", "ID"]}], "params": {"k": k}}
    return shlex.join(
        [
            "curl", "-s", f"http://127.0.0.1:{port}/invocations",
            "-H", "Content-Type: application/json", "-d", json.dumps(payload),
        ]
    )  # fmt: skip


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def serve(model: str = CHAMPION_URI, port: int = DEFAULT_PORT) -> int:
    """Check, announce, then exec ``mlflow models serve`` (see the module docstring).
    Returns 2, the reason on stderr, when the server cannot start."""
    if not _port_free(port):
        print(
            f"curatornet serve: port {port} on 127.0.0.1 is taken; choose another with --port",
            file=sys.stderr,
        )
        return 2
    tracking_uri = settings.mlflow_tracking_uri()
    hint = "; `make run` registers the champion" if model == CHAMPION_URI else ""
    store = tracking_uri.removeprefix("sqlite:///")
    if tracking_uri.startswith("sqlite:///") and not Path(store).exists():
        print(f"curatornet serve: no MLflow store at {store}{hint}", file=sys.stderr)
        return 2
    try:
        label, liked = describe_model(model, tracking_uri)
    except LookupError as exc:
        print(f"curatornet serve: {exc}{hint}", file=sys.stderr)
        return 2
    cmd, env = serve_command(model, port, tracking_uri)
    print(
        f"Serving {label} on http://127.0.0.1:{port} with MLflow's scoring server "
        f"(Ctrl-C stops it). Once http://127.0.0.1:{port}/ping answers, try:\n"
        f"  {example_request(port, liked)}",
        flush=True,
    )
    sys.stderr.flush()
    os.execve(cmd[0], cmd, env)  # does not return
    return 0
