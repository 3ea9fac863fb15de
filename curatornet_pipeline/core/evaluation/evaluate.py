"""Evaluation of any :class:`~curatornet_pipeline.core.types.Scorer` on the hidden baskets.

Two candidate protocols (docs/architecture.md, "Two evaluation protocols"): ``unbought``
ranks every catalogue item outside the user's training profile; ``in_stock`` only those on
sale at the time ``t`` of the hidden purchase: ``upload_timestamp <= t`` (an item bought in
the second it was listed stays rankable), outside the profile, and not sold out before
``t`` (one-of-a-kind is inferred by :func:`build_timeline`; an item sold out at exactly
``t`` is still a candidate: the user's own purchase or one made in the same second).

Relevant items are the hidden basket minus the training profile (an item bought again is
not a discovery); users left without a relevant item are skipped and counted. Table 2 and
Figure 3 helpers are at the end.
"""

import io
import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from curatornet_pipeline.core import ragged
from curatornet_pipeline.core.evaluation.metrics import NDCG_VARIANTS, ranking_metrics, summarize
from curatornet_pipeline.core.types import NEVER, Scorer, TrainTestSplit

logger = logging.getLogger(__name__)

PROTOCOLS: tuple[str, ...] = ("unbought", "in_stock")
TABLE2_METRICS: tuple[str, ...] = (
    "auc", "recall@20", "precision@20", "ndcg@20",
    "recall@100", "precision@100", "ndcg@100", "rr",
)  # fmt: skip


@dataclass(frozen=True)
class EvalConfig:
    protocol: str = "unbought"  # "unbought" (paper text) or "in_stock" (authors' code)
    ks: tuple[int, ...] = (20, 100)  # cut-offs of Recall/Precision/nDCG, as in Table 2
    ndcg: str = "standard"  # "standard" or "reference" (the authors' IDCG quirk)
    batch_users: int = 256  # users scored per (batch, n_items) score matrix

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if self.ndcg not in NDCG_VARIANTS:
            raise ValueError(f"ndcg must be one of {NDCG_VARIANTS}, got {self.ndcg!r}")
        if self.batch_users < 1:
            raise ValueError(f"batch_users must be >= 1, got {self.batch_users}")


@dataclass(frozen=True)
class Timeline:
    """When each catalogue item entered and left stock."""

    ids: np.ndarray  # (n,) str artwork_id_hash, catalogue order
    upload_timestamp: np.ndarray  # (n,) int64 unix seconds
    sold_out_timestamp: np.ndarray  # (n,) int64, sale of one-of-a-kind items, NEVER otherwise
    one_of_a_kind: np.ndarray  # (n,) bool, purchased exactly once in the whole history


@dataclass(frozen=True)
class EvalResult:
    """Per-user metrics of one scorer under one protocol, with their summary."""

    per_user: pd.DataFrame  # user, user_id, n_relevant, n_candidates, one column per metric
    summary: dict[str, tuple[float, float]]  # metric -> (mean, standard error)
    protocol: str
    n_users: int  # users evaluated
    skipped: int  # test users without a relevant item (hidden basket inside the profile)
    meta: dict = field(default_factory=dict)  # scorer name, config, data warnings


def build_timeline(
    catalogue_ids: np.ndarray, inventory_df: pd.DataFrame, purchases_long_df: pd.DataFrame
) -> Timeline:
    """Upload and sold-out times aligned to the catalogue.

    ``purchases_long_df`` must be the *whole* history (every user, hidden
    baskets included), one row per purchased item. Exact duplicate rows
    (same user, item and timestamp) count as one purchase; an item with one
    purchase is one-of-a-kind and sold out from that timestamp on.
    """
    catalogue_ids = np.asarray(catalogue_ids)
    upload = inventory_df.drop_duplicates("artwork_id_hash").set_index("artwork_id_hash")[
        "upload_timestamp"
    ]
    upload = upload.reindex(catalogue_ids)
    if upload.isna().any():
        missing = upload.index[upload.isna()][:5].tolist()
        raise ValueError(
            f"inventory: {int(upload.isna().sum())} catalogue items have no "
            f"upload_timestamp, e.g. {missing}"
        )
    events = purchases_long_df[["user_id_hash", "artwork_id_hash", "purchase_timestamp"]]
    events = events.drop_duplicates()
    per_item = events.groupby("artwork_id_hash")["purchase_timestamp"].agg(["size", "min"])
    position = pd.Index(catalogue_ids).get_indexer(per_item.index)
    per_item = per_item[position >= 0]  # purchases of items outside the catalogue ignored
    position = position[position >= 0]
    one_of_a_kind = np.zeros(len(catalogue_ids), dtype=bool)
    one_of_a_kind[position] = per_item["size"].to_numpy() == 1
    sold_out = np.full(len(catalogue_ids), NEVER, dtype=np.int64)
    sold_out[position] = np.where(one_of_a_kind[position], per_item["min"].to_numpy(), NEVER)
    return Timeline(
        ids=catalogue_ids,
        upload_timestamp=upload.to_numpy(dtype=np.int64),
        sold_out_timestamp=sold_out,
        one_of_a_kind=one_of_a_kind,
    )


def _unique_pairs(row: np.ndarray, item: np.ndarray, n_items: int) -> np.ndarray:
    """Sorted unique keys ``row * n_items + item``."""
    return np.unique(row.astype(np.int64) * n_items + item)


def _dense(row: np.ndarray, item: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(B, n_items) bool mask with the given (row, item) entries set."""
    mask = np.zeros(shape, dtype=bool)
    mask[row, item] = True
    return mask


def _profiles(split: TrainTestSplit, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, item) of the training items of test rows ``rows`` (duplicates kept)."""
    users = split.test_users[rows].astype(np.int64)
    return ragged.concat_ranges(
        split.basket_item_offsets[split.user_basket_offsets[users]],
        split.basket_item_offsets[split.user_basket_offsets[users + 1]],
        split.basket_items,
    )


def user_masks(
    split: TrainTestSplit, rows: np.ndarray, protocol: str, timeline: Timeline | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Profiles, candidates and relevant items of the test rows ``rows``.

    Returns ``(profile_offsets, profile_items, candidates, relevant, forced)``:
    the profile as a CSR of unique sorted items, two (B, n_items) bool masks,
    and the number of relevant items the timeline would have excluded (bought
    before their upload or after selling out: inconsistent data), which are
    kept as candidates so that every relevant item is ranked.
    """
    n = split.n_items
    shape = (len(rows), n)
    in_profile = _dense(*_profiles(split, rows), shape)  # (B, n)
    h_row, h_item = ragged.concat_ranges(
        split.test_item_offsets[rows], split.test_item_offsets[rows + 1], split.test_items
    )
    relevant = _dense(h_row, h_item, shape) & ~in_profile  # (B, n)
    candidates = ~in_profile
    forced = 0
    if protocol == "in_stock":
        if timeline is None:
            raise ValueError("protocol 'in_stock' needs a Timeline (see build_timeline)")
        t = split.test_timestamps[rows][:, None]  # (B, 1)
        candidates &= timeline.upload_timestamp[None, :] <= t
        candidates &= timeline.sold_out_timestamp[None, :] >= t
        outside = relevant & ~candidates
        forced = int(outside.sum())
        candidates |= outside
    elif protocol != "unbought":
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    p_row, p_items = np.nonzero(in_profile)
    offsets = ragged.offsets_from_lengths(np.bincount(p_row, minlength=len(rows)))
    return offsets, p_items.astype(np.int32), candidates, relevant, forced


def evaluate(
    scorer: Scorer,
    split: TrainTestSplit,
    config: EvalConfig = EvalConfig(),
    timeline: Timeline | None = None,
) -> EvalResult:
    """Rank the candidates of every test user with ``scorer`` and compute all metrics."""
    n = split.n_items
    if config.protocol == "in_stock":
        if timeline is None:
            raise ValueError("protocol 'in_stock' needs a Timeline (see build_timeline)")
        if len(timeline.upload_timestamp) != n:
            raise ValueError(f"timeline has {len(timeline.upload_timestamp)} items, split {n}")
    # users whose whole hidden basket lies in their profile have nothing to find
    all_rows = np.arange(len(split.test_users))
    profile_keys = _unique_pairs(*_profiles(split, all_rows), n)
    hidden_keys = _unique_pairs(
        *ragged.concat_ranges(
            split.test_item_offsets[:-1], split.test_item_offsets[1:], split.test_items
        ),
        n,
    )
    relevant_keys = hidden_keys[~np.isin(hidden_keys, profile_keys)]
    kept = np.unique(relevant_keys // n)
    skipped = len(all_rows) - len(kept)
    if not len(kept):
        raise ValueError("no test user has a relevant item outside the training profile")

    columns: dict[str, list[np.ndarray]] = {}
    forced = 0
    for start in range(0, len(kept), config.batch_users):
        rows = kept[start : start + config.batch_users]
        p_off, p_items, candidates, relevant, n_forced = user_masks(
            split, rows, config.protocol, timeline
        )
        forced += n_forced
        scores = np.asarray(scorer.score(p_off, p_items, split.test_users[rows]))
        if scores.shape != (len(rows), n):
            raise ValueError(
                f"scorer {scorer.name!r} returned {scores.shape}, expected {(len(rows), n)}"
            )
        metrics = ranking_metrics(scores, candidates, relevant, config.ks, config.ndcg)
        per_user = {
            "user": split.test_users[rows].astype(np.int64),
            "n_relevant": relevant.sum(1),
            "n_candidates": candidates.sum(1),
            **metrics,
        }
        for name, values in per_user.items():
            columns.setdefault(name, []).append(values)
    if forced:
        logger.warning(
            "%d relevant items were bought before their upload or after selling out; "
            "kept as candidates",
            forced,
        )
    df = pd.DataFrame({name: np.concatenate(parts) for name, parts in columns.items()})
    df.insert(1, "user_id", split.user_ids[df["user"].to_numpy()])
    metric_names = list(metrics)
    summary = summarize({m: df[m].to_numpy() for m in metric_names})
    logger.info(
        "%s/%s: %d users (%d skipped), AUC %.4f",
        scorer.name, config.protocol, len(df), skipped, summary["auc"][0],
    )  # fmt: skip
    return EvalResult(
        per_user=df,
        summary=summary,
        protocol=config.protocol,
        n_users=len(df),
        skipped=skipped,
        meta={
            "scorer": scorer.name,
            "config": {"protocol": config.protocol, "ks": list(config.ks), "ndcg": config.ndcg},
            "relevant_forced_into_candidates": forced,
        },
    )


# ---------------------------------------------------------------- Table 2, Figure 3

_LABELS = {"auc": "AUC", "rr": "MRR"}
_LABELS.update({f"{m}@{k}": f"{s}@{k}" for k in (5, 10, 20, 50, 100, 200)
                for m, s in (("recall", "R"), ("precision", "P"), ("ndcg", "nDCG"))})  # fmt: skip


def table2(
    results: dict[str, EvalResult], metrics: tuple[str, ...] = TABLE2_METRICS
) -> pd.DataFrame:
    """One row per method: ``metric`` and ``metric_se`` columns, sorted by AUC descending."""
    protocols = {r.protocol for r in results.values()}
    if len(protocols) > 1:
        raise ValueError(f"results mix protocols {sorted(protocols)}")
    rows = []
    for method, result in results.items():
        row: dict = {"method": method, "n_users": result.n_users}
        for m in metrics:
            row[m], row[f"{m}_se"] = result.summary[m]
        rows.append(row)
    df = pd.DataFrame(rows).set_index("method")
    key = "auc" if "auc" in metrics else metrics[0]
    return df.sort_values(key, ascending=False, kind="stable")


def _fmt(value: float) -> str:
    """``.7204`` style: 4 decimals without the leading zero."""
    if not np.isfinite(value):
        return "–"
    text = f"{value:.4f}"
    return text.replace("0.", ".", 1) if text.startswith(("0.", "-0.")) else text


def table2_markdown(df: pd.DataFrame, protocol: str) -> str:
    """Markdown of :func:`table2`: ``mean ± se`` cells, protocol in the header."""
    metrics = [c for c in df.columns if f"{c}_se" in df.columns]
    head = ["method (users)"] + [_LABELS.get(m, m) for m in metrics]
    lines = [
        f"**Table 2, protocol `{protocol}`** (mean ± standard error over test users)",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for method, row in df.iterrows():
        cells = [f"{method} ({int(row['n_users'])})" if "n_users" in row else str(method)]
        cells += [f"{_fmt(row[m])} ± {_fmt(row[f'{m}_se'])}" for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def paired_comparison(a: EvalResult, b: EvalResult, metric: str = "auc") -> dict:
    """Paired t-test of ``a - b`` on the users both evaluated (NaNs dropped)."""
    if a.protocol != b.protocol:
        raise ValueError(f"cannot pair protocols {a.protocol!r} and {b.protocol!r}")
    joined = a.per_user[["user", metric]].merge(
        b.per_user[["user", metric]], on="user", suffixes=("_a", "_b")
    ).dropna()  # fmt: skip
    n = len(joined)
    if n < 2:
        raise ValueError(f"paired comparison needs >= 2 common users, got {n}")
    x, y = joined[f"{metric}_a"].to_numpy(), joined[f"{metric}_b"].to_numpy()
    test = stats.ttest_rel(x, y)
    diff = x - y
    half = stats.t.ppf(0.975, n - 1) * diff.std(ddof=1) / np.sqrt(n)
    mean_diff = float(diff.mean())
    return {
        "metric": metric,
        "n": n,
        "mean_a": float(x.mean()),
        "mean_b": float(y.mean()),
        "mean_diff": mean_diff,
        "ci_low": mean_diff - float(half),
        "ci_high": mean_diff + float(half),
        "statistic": float(test.statistic),
        "pvalue": float(test.pvalue),
    }


def _ablation_panel(
    ax,
    pairs: dict[str, tuple[EvalResult, EvalResult]],
    labels: tuple[str, str],
    title: str,
    small: bool = False,
) -> None:
    """Mean AUC ± s.e. per model family, guidelines vs random, with paired p-values."""
    families = list(pairs)
    x = np.arange(len(families))
    width = 0.38
    lows, highs = [], []
    for j, label in enumerate(labels):
        means = np.array([pairs[f][j].summary["auc"][0] for f in families])
        ses = np.nan_to_num([pairs[f][j].summary["auc"][1] for f in families])
        ax.bar(x + (j - 0.5) * width, means, width, yerr=ses, capsize=3, label=label)
        lows.append(means - ses)
        highs.append(means + ses)
    top = np.max(highs, axis=0)
    for i, family in enumerate(families):
        p = paired_comparison(*pairs[family], metric="auc")["pvalue"]
        ax.annotate(
            f"p = {p:.2g}",
            (x[i], top[i]),
            xytext=(0, 6),
            textcoords="offset points",
            ha="center",
            fontsize=9,
        )
    low, high = float(np.min(lows)), float(np.max(highs))
    bottom = max(0.0, low - (high - low or 0.1))
    ax.set_ylim(bottom, high + 0.15 * (high - bottom))  # room for the p-values
    ax.set_xticks(x, families)
    ax.set_ylabel("AUC (mean ± s.e.)")
    ax.set_title(title, fontsize=10 if small else None)
    ax.legend(loc="lower right", fontsize=7 if small else 8)  # fmt: skip


def _png(fig) -> bytes:
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


def ablation_figure(
    pairs: dict[str, tuple[EvalResult, EvalResult]],
    labels: tuple[str, str] = ("guidelines", "random"),
) -> bytes:
    """Figure 3 as PNG: mean AUC ± s.e. per model family, guidelines vs random, with p-values."""
    from matplotlib.figure import Figure  # lazy: only the figures draw

    fig = Figure(figsize=(1.8 + 1.6 * len(pairs), 3.6))
    _ablation_panel(
        fig.subplots(), pairs, labels, "Sampling guidelines vs uniform random negatives"
    )
    return _png(fig)


def result_from_rows(rows: pd.DataFrame, protocol: str, metrics: tuple[str, ...]) -> EvalResult:
    """An :class:`EvalResult` rebuilt from stored per-user rows (one method, one protocol)."""
    summary = summarize({m: rows[m].to_numpy() for m in metrics})
    return EvalResult(
        per_user=rows, summary=summary, protocol=protocol, n_users=len(rows), skipped=0
    )


def ablation_tests(
    per_user: pd.DataFrame,
    pairs: dict[str, tuple[str, str]],
    metrics: tuple[str, ...] = ("auc", "recall@100"),
    protocols: tuple[str, ...] = PROTOCOLS,
) -> pd.DataFrame:
    """Figure 3's paired t-tests on every protocol and metric.

    ``per_user``: rows of :attr:`EvalResult.per_user` with ``method`` and
    ``protocol`` columns (the ``evaluation_report`` asset's value); ``pairs``:
    family -> (guideline method label, random-sampling method label). Returns one
    row per (protocol, family, metric) with :func:`paired_comparison`'s fields;
    a pair absent from a protocol is left out.
    """
    rows = []
    for protocol in protocols:
        df = per_user[per_user["protocol"] == protocol]
        present = set(df["method"])
        for family, (guided, uniform) in pairs.items():
            if guided not in present or uniform not in present:
                continue
            a = result_from_rows(df[df["method"] == guided], protocol, metrics)
            b = result_from_rows(df[df["method"] == uniform], protocol, metrics)
            for metric in metrics:
                test = paired_comparison(a, b, metric)
                rows.append(
                    {"protocol": protocol, "family": family, "guidelines": guided,
                     "random": uniform, **test}
                )  # fmt: skip
    return pd.DataFrame(rows)


def ablation_figure_protocols(
    pairs_by_protocol: dict[str, dict[str, tuple[EvalResult, EvalResult]]],
    labels: tuple[str, str] = ("guidelines", "random (size-matched)"),
) -> bytes:
    """Figure 3 on several protocols side by side: one panel per protocol, as PNG."""
    from matplotlib.figure import Figure

    protocols = [p for p, pairs in pairs_by_protocol.items() if pairs]
    if not protocols:
        raise ValueError("no protocol has a guideline/random pair to plot")
    n_fam = max(len(pairs_by_protocol[p]) for p in protocols)
    fig = Figure(figsize=(len(protocols) * (1.8 + 1.6 * n_fam), 3.8))
    axes = np.atleast_1d(fig.subplots(1, len(protocols)))
    for ax, protocol in zip(axes, protocols, strict=True):
        _ablation_panel(ax, pairs_by_protocol[protocol], labels, f"protocol {protocol}", small=True)
    fig.suptitle("Sampling guidelines vs uniform random negatives, equal triple counts")
    return _png(fig)
