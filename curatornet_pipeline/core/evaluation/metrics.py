"""Ranking metrics of the paper's section 4, vectorized over a batch of users.

Every metric is computed from the *rank* of each relevant item among the
user's candidates, so one pass over ``(relevant item, catalogue)`` pairs gives
AUC, reciprocal rank and every top-k metric at once, all with the same
tie-breaking rule:

- ranks are 1-based; an item's rank is 1 + the number of candidates with a
  strictly higher score + the number of candidates with an equal score and a
  *lower item index* (ties broken by item index, ascending, deterministically);
- AUC counts tied (relevant, non-relevant) pairs as 1/2, so it does not depend
  on the tie-breaking rule and equals ``sklearn.metrics.roc_auc_score``.

This costs O(#relevant x n) per user instead of an O(n log n) sort or an
``argpartition`` of the row: with a handful of relevant items per user it is
the cheaper and exact choice, and ties at the k-th position are resolved by
the same rule as everywhere else.
"""

import logging

import numpy as np

logger = logging.getLogger(__name__)

NDCG_VARIANTS: tuple[str, ...] = ("standard", "reference")

# (pairs x items) elements held in one temporary boolean/float block
_BLOCK_ELEMENTS = 4_000_000


def relevant_ranks(
    scores: np.ndarray, candidates: np.ndarray, relevant: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rank of every relevant item among its row's candidates.

    Returns ``(row, rank, below, tied)`` per relevant item (in row-major
    order): ``rank`` is 1-based with ties broken by item index; ``below`` and
    ``tied`` count the *non-relevant* candidates with a lower and an equal
    score (what AUC needs).
    """
    rows, items = np.nonzero(relevant)
    n = scores.shape[1]
    rank = np.empty(len(rows), dtype=np.int64)
    below = np.empty(len(rows), dtype=np.int64)
    tied = np.empty(len(rows), dtype=np.int64)
    item_index = np.arange(n)
    step = max(1, _BLOCK_ELEMENTS // max(n, 1))
    for start in range(0, len(rows), step):  # blocks of (relevant item) pairs, not items
        r, i = rows[start : start + step], items[start : start + step]
        s = scores[r]  # (P, n)
        cand = candidates[r]  # (P, n)
        other = cand & ~relevant[r]  # (P, n) non-relevant candidates
        own = scores[r, i][:, None]  # (P, 1)
        higher = (s > own) & cand
        equal = (s == own) & cand
        rank[start : start + step] = (
            higher.sum(1) + (equal & (item_index[None, :] < i[:, None])).sum(1) + 1
        )
        below[start : start + step] = ((s < own) & other).sum(1)
        tied[start : start + step] = (equal & other).sum(1)
    return rows, rank, below, tied


def ranking_metrics(
    scores: np.ndarray,
    candidates: np.ndarray,
    relevant: np.ndarray,
    ks: tuple[int, ...] = (20, 100),
    ndcg: str = "standard",
) -> dict[str, np.ndarray]:
    """AUC, reciprocal rank, Recall@k, Precision@k and nDCG@k per user.

    Args:
        scores: (B, n) higher is better; only candidate entries are read.
        candidates: (B, n) bool, the items ranked for each user.
        relevant: (B, n) bool, the hidden items; must be candidates.
        ks: cut-offs for the top-k metrics.
        ndcg: ``"standard"`` divides DCG@k by the ideal DCG of
            ``min(|relevant|, k)`` hits (Järvelin & Kekäläinen; equals
            ``sklearn.metrics.ndcg_score``). ``"reference"`` reproduces a quirk
            of the authors' released evaluation: the ideal DCG of the number of
            hits *inside* the top k (0 when there is none), which inflates
            nDCG; use it only to compare with the paper's Table 2.

    Returns:
        ``{"auc", "rr", "recall@k", "precision@k", "ndcg@k"}`` each (B,)
        float64. Precision@k is hits / k even when fewer than k candidates
        exist. Rows without a relevant item get NaN everywhere; AUC is NaN for
        a row without a non-relevant candidate.
    """
    if ndcg not in NDCG_VARIANTS:
        raise ValueError(f"ndcg must be one of {NDCG_VARIANTS}, got {ndcg!r}")
    if scores.ndim != 2 or candidates.shape != scores.shape or relevant.shape != scores.shape:
        raise ValueError(
            f"scores {scores.shape}, candidates {candidates.shape} and relevant "
            f"{relevant.shape} must be the same (B, n) shape"
        )
    if any(k < 1 for k in ks):
        raise ValueError(f"every k must be >= 1, got {ks}")
    candidates = candidates.astype(bool, copy=False)
    relevant = relevant.astype(bool, copy=False)
    if (relevant & ~candidates).any():
        bad = np.nonzero((relevant & ~candidates).any(1))[0]
        raise ValueError(f"relevant items that are not candidates in rows {bad[:10].tolist()}")
    if np.isnan(scores[candidates]).any():
        raise ValueError("NaN score for a candidate item")

    b = scores.shape[0]
    n_relevant = relevant.sum(1)  # (B,)
    n_other = candidates.sum(1) - n_relevant  # (B,) non-relevant candidates
    rows, rank, below, tied = relevant_ranks(scores, candidates, relevant)
    empty = n_relevant == 0

    out: dict[str, np.ndarray] = {}
    correct = np.bincount(rows, weights=below + 0.5 * tied, minlength=b)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["auc"] = np.where(n_other > 0, correct / (n_relevant * n_other), np.nan)
    best = np.full(b, np.iinfo(np.int64).max)
    np.minimum.at(best, rows, rank)
    out["rr"] = np.where(empty, np.nan, 1.0 / np.where(empty, 1, best))

    # 1 / log2(i + 1) for ranks i = 1..max(ks), with a leading 0 for cumulative sums
    disc = np.concatenate([[0.0], 1.0 / np.log2(np.arange(2, max(ks) + 2, dtype=np.float64))])
    ideal_cum = np.cumsum(disc)  # ideal_cum[m] = IDCG of m hits
    for k in ks:
        hit = rank <= k
        hits = np.bincount(rows, weights=hit, minlength=b)
        dcg = np.bincount(rows[hit], weights=disc[rank[hit]], minlength=b)
        if ndcg == "standard":
            ideal = ideal_cum[np.minimum(n_relevant, k)]
        else:
            ideal = ideal_cum[hits.astype(np.int64)]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"recall@{k}"] = np.where(empty, np.nan, hits / n_relevant)
            out[f"precision@{k}"] = np.where(empty, np.nan, hits / k)
            out[f"ndcg@{k}"] = np.where(empty, np.nan, np.where(ideal > 0, dcg / ideal, 0.0))
    return out


def summarize(per_user: dict[str, np.ndarray]) -> dict[str, tuple[float, float]]:
    """Mean and standard error (std ddof=1 / sqrt(n)) of every metric, NaNs left out."""
    summary: dict[str, tuple[float, float]] = {}
    for name, values in per_user.items():
        v = np.asarray(values, dtype=np.float64)
        v = v[~np.isnan(v)]
        mean = float(v.mean()) if len(v) else float("nan")
        se = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")
        summary[name] = (mean, se)
    return summary
