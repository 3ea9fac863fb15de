"""Ranking metrics: sklearn cross-checks, hand-worked cases, tie rule, errors."""

import math

import numpy as np
import pytest
from sklearn.metrics import ndcg_score, roc_auc_score

from curatornet_pipeline.core.evaluation.metrics import ranking_metrics, summarize


def _one(scores, relevant, candidates=None, ks=(1, 3), ndcg="standard"):
    """Metrics of a single user given lists; returns plain floats."""
    s = np.array([scores], dtype=np.float64)
    rel = np.zeros_like(s, dtype=bool)
    rel[0, relevant] = True
    cand = np.ones_like(rel) if candidates is None else np.array([candidates], dtype=bool)
    return {k: float(v[0]) for k, v in ranking_metrics(s, cand, rel, ks, ndcg).items()}


def _brute_force_ranks(scores, candidates):
    """1-based rank of each item among candidates: score descending, then item index."""
    order = np.lexsort((np.arange(len(scores)), -scores))
    order = order[candidates[order]]
    rank = np.full(len(scores), -1)
    rank[order] = np.arange(1, len(order) + 1)
    return rank


@pytest.mark.parametrize("seed", range(50))
def test_auc_and_ndcg_match_sklearn_on_random_tie_free_cases(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 400))
    b = 3
    scores = rng.standard_normal((b, n))  # continuous: tie-free
    candidates = rng.random((b, n)) < rng.uniform(0.3, 1.0)
    relevant = np.zeros((b, n), dtype=bool)
    for row in range(b):
        cand = np.flatnonzero(candidates[row])
        if len(cand) < 2:
            candidates[row, :2] = True
            cand = np.flatnonzero(candidates[row])
        size = int(rng.integers(1, len(cand)))  # >= 1 relevant, >= 1 non-relevant
        relevant[row, rng.choice(cand, size, replace=False)] = True
    ks = (1, 5, 20, 100)
    got = ranking_metrics(scores, candidates, relevant, ks)
    for row in range(b):
        c = candidates[row]
        y, s = relevant[row, c], scores[row, c]
        assert got["auc"][row] == pytest.approx(roc_auc_score(y, s), abs=1e-9)
        for k in ks:
            want = ndcg_score(y[None, :], s[None, :], k=k)
            assert got[f"ndcg@{k}"][row] == pytest.approx(want, abs=1e-9)
            top = np.argsort(-s)[:k]
            assert got[f"recall@{k}"][row] == pytest.approx(y[top].sum() / y.sum(), abs=1e-12)
            assert got[f"precision@{k}"][row] == pytest.approx(y[top].sum() / k, abs=1e-12)
        first = np.flatnonzero(y[np.argsort(-s)])[0] + 1
        assert got["rr"][row] == pytest.approx(1 / first, abs=1e-12)


def test_hand_worked_ranking_at_the_top():
    # order: 0 (.9), 1 (.8), 2 (.7), 3 (.6), 4 (.5); relevant {0, 2} at ranks 1 and 3
    m = _one([0.9, 0.8, 0.7, 0.6, 0.5], [0, 2], ks=(1, 3))
    assert m["rr"] == 1.0
    assert m["recall@1"] == 0.5 and m["precision@1"] == 1.0  # 1 hit of 2; 1 hit in 1
    assert m["recall@3"] == 1.0 and m["precision@3"] == pytest.approx(2 / 3)
    assert m["ndcg@1"] == 1.0  # DCG 1 / IDCG 1
    # DCG = 1/log2(2) + 1/log2(4); IDCG of min(2, 3) = 2 hits = 1 + 1/log2(3)
    assert m["ndcg@3"] == pytest.approx((1 / 1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3)))
    # pairs vs non-relevant {1, 3, 4}: item 0 wins 3, item 2 wins 2 (3, 4) -> 5/6
    assert m["auc"] == pytest.approx(5 / 6)


def test_hand_worked_ranking_lower_down_and_reference_ndcg():
    # order: 1 (.9), 2 (.5), 3 (.3), 0 (.1); relevant {0, 2} at ranks 4 and 2
    std = _one([0.1, 0.9, 0.5, 0.3], [0, 2], ks=(2,))
    ref = _one([0.1, 0.9, 0.5, 0.3], [0, 2], ks=(2,), ndcg="reference")
    assert std["rr"] == 0.5
    assert std["recall@2"] == 0.5 and std["precision@2"] == 0.5
    # DCG = 1/log2(3); standard IDCG of 2 hits = 1 + 1/log2(3)
    assert std["ndcg@2"] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    # reference IDCG of the 1 hit inside the top 2 = 1 -> 1/log2(3) = .6309
    assert ref["ndcg@2"] == pytest.approx(1 / math.log2(3))
    # non-relevant {1, 3}: item 2 beats 3, item 0 beats nothing -> 1/4
    assert std["auc"] == pytest.approx(1 / 4)
    assert ref["auc"] == std["auc"] and ref["recall@2"] == std["recall@2"]


def test_reference_ndcg_differs_from_standard_and_is_zero_without_hit():
    # 3 relevant {1, 2, 4}; order 0, 1, 2, 3, 4 -> hits at ranks 2 and 3 inside top 3
    scores = [0.9, 0.8, 0.7, 0.6, 0.5]
    dcg = 1 / math.log2(3) + 1 / math.log2(4)
    std = _one(scores, [1, 2, 4], ks=(3,))
    ref = _one(scores, [1, 2, 4], ks=(3,), ndcg="reference")
    assert std["ndcg@3"] == pytest.approx(dcg / (1 + 1 / math.log2(3) + 1 / math.log2(4)))
    assert ref["ndcg@3"] == pytest.approx(dcg / (1 + 1 / math.log2(3)))
    # no hit in the top 1: both variants give 0 (reference: 0 by convention, not 0/0)
    assert _one(scores, [4], ks=(1,), ndcg="reference")["ndcg@1"] == 0.0
    assert _one(scores, [4], ks=(1,))["ndcg@1"] == 0.0


def test_ties_count_half_in_auc_and_break_by_item_index_in_ranks():
    # items 0, 1, 2 tied at .5; relevant item 1; non-relevant {0, 2, 3}
    m = _one([0.5, 0.5, 0.5, 0.2], [1], ks=(1, 2))
    assert m["auc"] == pytest.approx((0.5 + 0.5 + 1) / 3)  # two ties, one win
    # tie broken by item index: item 0 comes first, item 1 is rank 2
    assert m["rr"] == 0.5
    assert m["recall@1"] == 0.0 and m["recall@2"] == 1.0
    assert m["ndcg@2"] == pytest.approx(1 / math.log2(3))


def test_tie_rule_matches_brute_force_on_integer_scores():
    rng = np.random.default_rng(7)
    scores = rng.integers(0, 5, (20, 60)).astype(np.float32)  # many ties
    candidates = rng.random((20, 60)) < 0.8
    relevant = candidates & (rng.random((20, 60)) < 0.1)
    relevant[:, 0] = candidates[:, 0] = True
    got = ranking_metrics(scores, candidates, relevant, ks=(5,))
    for row in range(20):
        rank = _brute_force_ranks(scores[row], candidates[row])
        r = rank[relevant[row]]
        assert got["rr"][row] == pytest.approx(1 / r.min())
        assert got["recall@5"][row] == pytest.approx((r <= 5).sum() / len(r))
        y, s = relevant[row, candidates[row]], scores[row, candidates[row]]
        if not y.all():
            assert got["auc"][row] == pytest.approx(roc_auc_score(y, s), abs=1e-9)


def test_non_candidates_are_not_ranked():
    # item 0 scores highest but is not a candidate; order among candidates: 3, 2, 1
    m = _one([0.9, 0.1, 0.5, 0.8], [2], candidates=[False, True, True, True], ks=(1,))
    assert m["rr"] == 0.5
    assert m["auc"] == pytest.approx(1 / 2)  # beats item 1, loses to item 3
    assert m["recall@1"] == 0.0


def test_rows_without_relevant_item_are_nan():
    scores = np.array([[0.3, 0.2, 0.1], [0.3, 0.2, 0.1]])
    relevant = np.array([[False, True, False], [False, False, False]])
    got = ranking_metrics(scores, np.ones_like(relevant), relevant, ks=(2,))
    assert got["recall@2"][0] == 1.0 and got["auc"][0] == 0.5
    for values in got.values():
        assert np.isnan(values[1])


def test_invalid_inputs_raise():
    scores = np.array([[0.3, 0.2, 0.1]])
    relevant = np.array([[True, False, False]])
    with pytest.raises(ValueError, match="not candidates"):
        ranking_metrics(scores, np.array([[False, True, True]]), relevant)
    with pytest.raises(ValueError, match="ndcg"):
        ranking_metrics(scores, np.ones_like(relevant), relevant, ndcg="authors")
    with pytest.raises(ValueError, match="NaN"):
        ranking_metrics(np.array([[np.nan, 0.2, 0.1]]), np.ones_like(relevant), relevant)
    with pytest.raises(ValueError, match="shape"):
        ranking_metrics(scores, np.ones((1, 2), dtype=bool), relevant)


def test_large_catalogue_matches_brute_force_topk():
    rng = np.random.default_rng(3)
    scores = rng.standard_normal((4, 13_297)).astype(np.float32)
    relevant = np.zeros_like(scores, dtype=bool)
    relevant[:, rng.choice(13_297, 21, replace=False)] = True
    got = ranking_metrics(scores, np.ones_like(relevant), relevant, ks=(100,))
    for row in range(4):
        top = np.argsort(-scores[row], kind="stable")[:100]
        assert got["recall@100"][row] == pytest.approx(relevant[row, top].sum() / 21)


def test_summarize_mean_and_standard_error():
    out = summarize({"auc": np.array([1.0, 2.0, 3.0, 4.0, np.nan])})
    mean, se = out["auc"]
    # NaN left out; std(ddof=1) of 1..4 = sqrt(5/3); se = sqrt(5/3) / 2
    assert mean == 2.5
    assert se == pytest.approx(math.sqrt(5 / 3) / 2)
    assert np.isnan(summarize({"x": np.array([1.0])})["x"][1])
