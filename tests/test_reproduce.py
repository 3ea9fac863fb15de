"""`curatornet reproduce` on tiny synthetic data: every section of the report, equal counts."""

import dataclasses
from pathlib import Path

import pytest

from curatornet_pipeline.core.data.synth import SynthConfig, generate
from curatornet_pipeline.core.experiment import reproduce, writeup
from curatornet_pipeline.core.visual import embed

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


def test_reproduce_writes_every_section(tmp_path: Path) -> None:
    root = tmp_path / "data"
    generate(SynthConfig(scale="tiny", seed=0), root)
    budget = dataclasses.replace(reproduce.BUDGETS["smoke"], n_per_strategy=300, curve=(60, 120))
    config = embed.EmbedConfig(backbone="resnet18", weights="none", image_size=32, num_workers=0)
    rep = reproduce.run(root, budget, config, tmp_path / "store")
    # main grid: 2 lambdas x 2 kinds + 2 random variants; curve: 2 pairs x 2 smaller budgets
    assert len(rep.runs) == 6 + 4 * 2
    tests = writeup.ablation(rep)
    assert set(tests["protocol"]) == {"unbought", "in_stock"}
    assert set(tests["family"]) == {"CuratorNet", "VBPR"}
    assert (tests["triples_guidelines"] == tests["triples_random"]).all()
    vbpr = tests[tests["family"] == "VBPR"]["triples_guidelines"].iloc[0]
    cn = tests[tests["family"] == "CuratorNet"]["triples_guidelines"].iloc[0]
    assert vbpr < cn  # two guidelines against six
    curve = writeup.curve_table(rep)
    for method in ("CuratorNet (0.0001)", "VBPR (0.0001)", "VisRank"):
        assert set(curve[curve["method"] == method]["n_per_strategy"]) == {60, 120, 300}
    for run in rep.runs:
        assert len(run.history) == budget.epochs and "val_auc" in run.history[0]
        assert 0 <= run.validation["val_auc"] <= 1
    out = writeup.write_report(rep, tmp_path / "reproduction.md", "curatornet reproduce ...")
    text = out.read_text()
    for heading in ("## Table 2, protocol unbought", "## Table 2, protocol in_stock",
                    "## Figure 3", "## Budget curve", "## Validation", "paper rank AUC",
                    "s6_hide_one", "reference_mean"):  # fmt: skip
        assert heading in text, heading
    assert (tmp_path / "reproduction" / "figure3.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "reproduction" / "budget_curve.png").stat().st_size > 5_000
