"""Crash safety: a training killed with SIGKILL resumes from its checkpoint on the next run.

The training runs in a real subprocess (`dagster asset materialize`, the
project's code location, a persistent instance on disk); the test kills it as
soon as the first epoch's checkpoint lands, runs the same command again and
reads what the second run did: resumed at epoch 2, finished, cleaned its
checkpoints, and ended the killed run's MLflow run instead of leaving it RUNNING.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import torch

from curatornet_pipeline.core.training.train import CHECKPOINT_NAME
from curatornet_pipeline.definitions import build_resources
from curatornet_pipeline.defs.automation import UPSTREAM_ASSETS
from curatornet_pipeline.defs.tracking import TAG_ASSET, TAG_PARTITION, MlflowTracking
from tests.graph_support import materialize_graph

pytestmark = pytest.mark.slow

ASSET, PARTITION = "random_sampling_models", "curatornet"
SLOW_TRAINING = {"train": {"epochs": 5, "batch_triples": 8, "patience": 5}}


def _materialize_command() -> list[str]:
    from curatornet_pipeline.defs.resources import run_config

    return [
        sys.executable,
        "-m",
        "dagster",
        "asset",
        "materialize",
        "-m",
        "curatornet_pipeline.definitions",
        "--select",
        ASSET,
        "--partition",
        PARTITION,
        "--config-json",
        json.dumps(run_config("tiny", SLOW_TRAINING)),
    ]


def test_killed_training_resumes_from_its_checkpoint(
    tiny_data: Path, mlflow_store: str, tmp_path: Path, monkeypatch
) -> None:
    storage, dagster_home = tmp_path / "storage", tmp_path / "dagster"
    dagster_home.mkdir()
    monkeypatch.setenv("CURATORNET_STORAGE", str(storage))
    monkeypatch.setenv("CURATORNET_DATA", str(tiny_data))
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    with dg.DagsterInstance.get() as instance:
        materialize_graph(
            instance,
            build_resources(profile="tiny", data_root=str(tiny_data)),
            select={*UPSTREAM_ASSETS, "triplets"},
        )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CURATORNET_PROFILE": "tiny"}
    checkpoints = storage / "checkpoints" / ASSET / PARTITION
    tracking = MlflowTracking()
    query = f"tags.`{TAG_ASSET}` = '{ASSET}' and tags.`{TAG_PARTITION}` = '{PARTITION}'"
    # the MLflow store is the session's: earlier tests may have trained this partition too
    earlier = {
        r.info.run_id
        for r in tracking.client.search_runs([tracking.experiment_id], filter_string=query)
    }

    def runs_of_this_test() -> list:
        found = tracking.client.search_runs([tracking.experiment_id], filter_string=query)
        return [r for r in found if r.info.run_id not in earlier]

    first = subprocess.Popen(
        _materialize_command(),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    saved = []
    while time.time() < deadline and first.poll() is None:
        saved = list(checkpoints.glob(f"*/{CHECKPOINT_NAME}"))
        if saved:
            break
        time.sleep(0.05)
    assert saved, "the training never wrote a checkpoint"
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    epochs_saved = int(torch.load(saved[0], weights_only=True)["epoch"])
    assert epochs_saved == 1

    runs = runs_of_this_test()
    assert [r.info.status for r in runs] == ["RUNNING"]  # what a kill leaves behind
    killed = runs[0].info.run_id

    second = subprocess.run(_materialize_command(), env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-3000:]
    runs = {r.info.run_id: r for r in runs_of_this_test()}
    assert runs[killed].info.status == "KILLED"
    assert "process died" in runs[killed].data.tags["killed_reason"]
    (resumed,) = [r for r in runs.values() if r.info.run_id != killed]
    assert resumed.info.status == "FINISHED"
    assert resumed.data.tags["resumed_from_epoch"] == "2"
    history = tracking.client.get_metric_history(resumed.info.run_id, "loss")
    assert sorted(m.step for m in history) == [2, 3, 4, 5]  # epoch 1 came from the checkpoint
    assert not any(r.info.status == "RUNNING" for r in runs.values())
    assert not list(checkpoints.glob("*")), "checkpoints are removed once the model landed"
