"""The paper's reports from trained models: Table 2 on both protocols and Figure 3's ablation.

Plain functions over models, the catalogue and the split; the Dagster assets
only load inputs, call these and show the results.
"""

import dataclasses
from collections.abc import Mapping

import numpy as np
import pandas as pd

from curatornet_pipeline.core.data.catalogue import Catalogue
from curatornet_pipeline.core.evaluation import evaluate as eval_core
from curatornet_pipeline.core.experiment.grid import ModelGrid, ablation_label_pairs
from curatornet_pipeline.core.models import networks as models_core
from curatornet_pipeline.core.models import scorers
from curatornet_pipeline.core.types import TrainTestSplit

PROTOCOLS = ("unbought", "in_stock")
REFERENCES = {"visrank": "VisRank", "random": "Random", "oracle": "Oracle"}


def markdown_table(df: pd.DataFrame, floatfmt: str = ".4f", max_rows: int | None = 30) -> str:
    """A GitHub markdown table (the Dagster UI and the reports render it): floats with
    ``floatfmt``, NaN as "–", at most ``max_rows`` rows (None: all)."""
    shown = df if max_rows is None else df.head(max_rows)

    def cell(value) -> str:
        if isinstance(value, float | np.floating):
            return format(float(value), floatfmt) if np.isfinite(value) else "–"
        return str(value).replace("|", "\\|")

    head = "| " + " | ".join(str(c) for c in shown.columns) + " |"
    rule = "|" + "|".join("---" for _ in shown.columns) + "|"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in shown.itertuples(index=False)]
    more = [f"\n_{len(df) - len(shown)} more rows_"] if len(shown) < len(df) else []
    return "\n".join([head, rule, *rows, *more])


def timeline(catalogue: Catalogue) -> eval_core.Timeline:
    """The stock timeline of the evaluation's ``in_stock`` protocol, from the catalogue."""
    return eval_core.Timeline(
        ids=catalogue.ids,
        upload_timestamp=catalogue.upload_timestamp,
        sold_out_timestamp=catalogue.sold_out_timestamp,
        one_of_a_kind=catalogue.one_of_a_kind,
    )


def build_scorers(
    models: Mapping[str, dict], features: np.ndarray, split: TrainTestSplit, seed: int = 0
) -> dict[str, object]:
    """Every trained model (by Table 2 label) plus VisRank, Random and Oracle."""
    out: dict[str, object] = {}
    for label, payload in sorted(models.items()):
        model, _ = models_core.model_from_payload(payload, source=label)
        out[label] = scorers.for_model(model, features)
    return {**out, **reference_scorers(features, split, seed)}


def reference_scorers(
    features: np.ndarray, split: TrainTestSplit, seed: int = 0
) -> dict[str, object]:
    """VisRank, Random and Oracle: Table 2's reference methods."""
    return {
        REFERENCES["visrank"]: scorers.VisRankScorer(features),
        REFERENCES["random"]: scorers.RandomScorer(split.n_items, seed=seed),
        REFERENCES["oracle"]: scorers.OracleScorer(split, seed=seed),
    }


@dataclasses.dataclass(frozen=True)
class Table2:
    """Table 2 of every protocol, with the per-user rows it summarises."""

    per_user: pd.DataFrame  # one row per (method, protocol, user): every metric
    tables: dict[str, pd.DataFrame]  # protocol -> eval_core.table2 frame
    markdown: dict[str, str]  # protocol -> markdown of the table


def table2(
    methods: Mapping[str, object],
    split: TrainTestSplit,
    config: eval_core.EvalConfig,
    stock: eval_core.Timeline,
    protocols: tuple[str, ...] = PROTOCOLS,
) -> Table2:
    """Evaluate every method under every protocol."""
    per_user, tables, markdown = [], {}, {}
    for protocol in protocols:
        cfg = dataclasses.replace(config, protocol=protocol)
        results = {name: eval_core.evaluate(s, split, cfg, stock) for name, s in methods.items()}
        for name, r in results.items():
            per_user.append(r.per_user.assign(method=name, protocol=protocol))
        tables[protocol] = eval_core.table2(results)
        markdown[protocol] = eval_core.table2_markdown(tables[protocol], protocol)
    return Table2(pd.concat(per_user, ignore_index=True), tables, markdown)


def oracle_failures(table: pd.DataFrame, ks: tuple[int, ...], tolerance: float = 1e-9) -> dict:
    """Metrics on which the Oracle is not perfect, with their values.

    The Oracle ranks every hidden item first, so its AUC, nDCG@k are 1 and its
    Recall@k is 1 wherever no test basket is larger than k. Larger baskets cap
    Recall@k at k/|basket|, so Recall@k is checked only for the largest k.
    """
    row = table.loc[REFERENCES["oracle"]]
    wanted = ["auc", *[f"ndcg@{k}" for k in ks], f"recall@{max(ks)}"]
    return {m: float(row[m]) for m in wanted if m in row and abs(float(row[m]) - 1.0) > tolerance}


def ablation(
    per_user: pd.DataFrame,
    grid: ModelGrid,
    protocols: tuple[str, ...] = PROTOCOLS,
    metric: str = "auc",
) -> tuple[pd.DataFrame, dict[str, dict]]:
    """Figure 3: paired t-tests of guidelines vs random sampling, per family and protocol.

    Returns the tests (one row per family and protocol) and, per protocol, the
    ``{family: (guided EvalResult, random EvalResult)}`` pairs the figure draws.
    """
    rows, pairs_by_protocol = [], {}
    for protocol in protocols:
        df = per_user[per_user["protocol"] == protocol]
        pairs = {}
        for family, (guided, uniform) in ablation_label_pairs(grid, set(df["method"])).items():
            a, b = (
                eval_core.result_from_rows(df[df["method"] == name], protocol, (metric,))
                for name in (guided, uniform)
            )
            pairs[family] = (a, b)
            test = eval_core.paired_comparison(a, b, metric)
            rows.append({"model": family, "protocol": protocol, "guided": guided, **test})
        pairs_by_protocol[protocol] = pairs
    return pd.DataFrame(rows), pairs_by_protocol
