"""`curatornet reproduce` runs the graph's own stage functions: at the tiny profile's
settings and seed, on the three published files alone, its Table 2 is the pipeline's."""

import dataclasses
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from curatornet_pipeline.core.data.synth import SynthConfig, generate
from curatornet_pipeline.core.evaluation import evaluate as eval_core
from curatornet_pipeline.core.experiment import reproduce, writeup
from curatornet_pipeline.core.visual import embed
from curatornet_pipeline.definitions import build_resources
from tests.graph_support import materialize_graph

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture
def published(tmp_path: Path) -> Path:
    """inventory.csv, purchases.csv and resnet_embeddings.npy: nothing else."""
    root = tmp_path / "published"
    generate(SynthConfig(scale="tiny", seed=1, images=False, vectors=True), root)
    (root / "synth_truth.json").unlink()
    assert sorted(p.name for p in root.iterdir()) == [
        "inventory.csv",
        "purchases.csv",
        "resnet_embeddings.npy",
    ]
    return root


def test_reproduction_table2_equals_the_pipelines(
    published: Path, mlflow_store: str, tmp_path: Path, monkeypatch
) -> None:
    storage = tmp_path / "storage"
    monkeypatch.setenv("CURATORNET_STORAGE", str(storage))
    resources = build_resources(profile="tiny", data_root=str(published), overrides={})
    results = materialize_graph(dg.DagsterInstance.ephemeral(), resources)
    assert all(r.success for r in results)

    pipeline = resources["pipeline"]
    stages = reproduce.Stages(
        **{f.name: pipeline.build(f.name) for f in dataclasses.fields(reproduce.Stages)}
    )
    grid = pipeline.grid()
    budget = reproduce.Budget(
        "tiny",
        n_per_strategy=stages.sampling.n_per_strategy,
        epochs=stages.train.epochs,
        l2_grid=tuple(grid.curatornet_l2),
        vbpr_l2_grid=tuple(grid.vbpr_l2),
        ablation_l2=grid.ablation_l2,
        seeds=(stages.sampling.seed,),
        compare_weighting=False,
    )
    rep = reproduce.run(published, budget, embed.EmbedConfig(), tmp_path / "store", stages=stages)
    assert rep.settings["embedding"]["source"] == "imported"
    for protocol in eval_core.PROTOCOLS:
        ours = eval_core.table2(writeup.table2_results(rep, protocol))
        theirs = pd.read_csv(storage / "reports" / f"table2_{protocol}.csv", index_col="method")
        assert sorted(ours.index) == sorted(theirs.index), protocol
        assert len(ours) == 2 + 1 + 2 + 3  # CuratorNet x2, VBPR, random sampling x2, references
        theirs = theirs.loc[ours.index, ours.columns]
        np.testing.assert_allclose(
            ours.to_numpy(float), theirs.to_numpy(float), rtol=0, atol=1e-6, err_msg=protocol
        )
