"""Embedding work split among shard workers; the asset then reuses every vector."""

import json
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from curatornet_pipeline.definitions import build_resources, defs

pytestmark = pytest.mark.slow


def test_shard_workers_fill_the_store_for_the_asset(tiny_data, mlflow_store, tmp_path, monkeypatch):
    storage = tmp_path / "storage"
    env_vars = {
        "CURATORNET_STORAGE": str(storage),
        "CURATORNET_DATA": str(tiny_data),
        "CURATORNET_PROFILE": "tiny",
        # an input size no other test uses: the store starts empty for this key
        "CURATORNET_OVERRIDES": json.dumps({"embed": {"image_size": 40}}),
    }
    for key, value in env_vars.items():
        monkeypatch.setenv(key, value)
    cli = Path(sys.executable).parent / "curatornet"
    workers = [
        subprocess.Popen(
            [str(cli), "embed-shard", "--shard", str(i), "--of", "3"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(3)
    ]  # three concurrent workers writing one store
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    summaries = [re.search(r"^shard \d/3: embedded (\d+),", o, re.M) for o in outputs]
    assert all(summaries), outputs
    embedded = [int(m.group(1)) for m in summaries]
    n_images = len(list((tiny_data / "images").iterdir()))
    assert sum(embedded) == n_images and all(e > 0 for e in embedded)

    result = dg.materialize(
        list(defs.assets),
        selection=[dg.AssetKey(k) for k in ("inventory", "image_manifest", "item_embeddings")],
        resources=build_resources(profile="tiny", data_root=str(tiny_data)),
    )
    mat = result.asset_materializations_for_node("item_embeddings")[0]
    assert mat.metadata["embedded"].value == 0
    assert mat.metadata["reused"].value == n_images
