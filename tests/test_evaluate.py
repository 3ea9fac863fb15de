"""Evaluation protocols on a hand-made timeline, scorer sanity, Table 2 and Figure 3."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from curatornet_pipeline.core.evaluation.evaluate import (
    NEVER,
    EvalConfig,
    Timeline,
    ablation_figure,
    ablation_figure_protocols,
    ablation_tests,
    build_timeline,
    evaluate,
    paired_comparison,
    table2,
    table2_markdown,
    user_masks,
)
from curatornet_pipeline.core.types import TrainTestSplit


class FixedScorer:
    """Same score vector for every user."""

    def __init__(self, item_scores, name="fixed"):
        self.item_scores = np.asarray(item_scores, dtype=np.float32)
        self.name = name

    def score(self, profile_offsets, profile_items, users):
        return np.tile(self.item_scores, (len(users), 1))


class OracleScorer:
    """Score 1 for the items of each user's hidden basket (noise > 0 blurs it)."""

    def __init__(self, split, noise=0.0, seed=0, name="oracle"):
        self.hidden = np.zeros((len(split.user_ids), split.n_items), dtype=np.float32)
        for t, u in enumerate(split.test_users):
            items = split.test_items[split.test_item_offsets[t] : split.test_item_offsets[t + 1]]
            self.hidden[u, items] = 1.0
        self.noise, self.rng, self.name = noise, np.random.default_rng(seed), name

    def score(self, profile_offsets, profile_items, users):
        jitter = self.rng.standard_normal((len(users), self.hidden.shape[1])) * self.noise
        return (self.hidden[users] + jitter).astype(np.float32)


class RandomScorer:
    def __init__(self, n_items, seed=0, name="random"):
        self.n_items, self.rng, self.name = n_items, np.random.default_rng(seed), name

    def score(self, profile_offsets, profile_items, users):
        return self.rng.random((len(users), self.n_items)).astype(np.float32)


# Hand-made history over 8 items, all uploaded at t=100 except item 5 (t=1000).
# (user, item, time): u0 buys 0 @200, then {1, 0} @500 (hidden; 0 is a re-buy)
# u1 buys {2, 3} @300; u2 buys 3 @400, then 4 @600 (hidden); u3 buys 7 @500;
# u4 buys 6 @100 and again 6 @800 (hidden basket fully inside the profile).
# Purchase counts: 0 x2, 3 x2, 6 x2 (multi-edition); 1, 2, 4, 7 x1 (one-of-a-kind).
PURCHASES = [
    ("u0", 0, 200), ("u0", 1, 500), ("u0", 0, 500), ("u1", 2, 300), ("u1", 3, 300),
    ("u2", 3, 400), ("u2", 4, 600), ("u3", 7, 500), ("u4", 6, 100), ("u4", 6, 800),
]  # fmt: skip
IDS = np.array([f"a{i}" for i in range(8)])


def _hand_split() -> TrainTestSplit:
    return TrainTestSplit(
        user_ids=np.array(["u0", "u1", "u2", "u3", "u4"]),
        user_basket_offsets=np.array([0, 1, 2, 3, 4, 5]),
        basket_item_offsets=np.array([0, 1, 3, 4, 5, 6]),
        basket_items=np.array([0, 2, 3, 3, 7, 6], dtype=np.int32),
        basket_timestamps=np.array([200, 300, 400, 500, 100]),
        test_users=np.array([0, 2, 4], dtype=np.int32),
        test_item_offsets=np.array([0, 2, 3, 4]),
        test_items=np.array([1, 0, 4, 6], dtype=np.int32),
        test_timestamps=np.array([500, 600, 800]),
        n_items=8,
    )


def _hand_timeline() -> Timeline:
    inventory = pd.DataFrame(
        {
            "artwork_id_hash": IDS[::-1],  # inventory order differs from catalogue order
            "artist_id_hash": "x",
            "upload_timestamp": [1000 if i == 5 else 100 for i in range(8)][::-1],
        }
    )
    purchases = pd.DataFrame(
        [(u, IDS[i], t) for u, i, t in PURCHASES],
        columns=["user_id_hash", "artwork_id_hash", "purchase_timestamp"],
    )
    return build_timeline(IDS, inventory, purchases)


def _random_split(n_users=400, n_items=300, seed=0) -> TrainTestSplit:
    """Every user: one training basket of 1-4 items, one hidden basket of 1-3 items."""
    rng = np.random.default_rng(seed)
    train = [rng.choice(n_items, rng.integers(1, 5), replace=False) for _ in range(n_users)]
    test = [rng.choice(n_items, rng.integers(1, 4), replace=False) for _ in range(n_users)]
    offsets = lambda lists: np.concatenate([[0], np.cumsum([len(x) for x in lists])])  # noqa: E731
    return TrainTestSplit(
        user_ids=np.array([f"u{i}" for i in range(n_users)]),
        user_basket_offsets=np.arange(n_users + 1),
        basket_item_offsets=offsets(train),
        basket_items=np.concatenate(train).astype(np.int32),
        basket_timestamps=np.zeros(n_users, dtype=np.int64),
        test_users=np.arange(n_users, dtype=np.int32),
        test_item_offsets=offsets(test),
        test_items=np.concatenate(test).astype(np.int32),
        test_timestamps=np.ones(n_users, dtype=np.int64),
        n_items=n_items,
    )


def test_build_timeline_infers_one_of_a_kind_items():
    tl = _hand_timeline()
    assert tl.upload_timestamp.tolist() == [100] * 5 + [1000] + [100] * 2
    assert tl.one_of_a_kind.tolist() == [False, True, True, False, True, False, False, True]
    assert tl.sold_out_timestamp.tolist() == [NEVER, 500, 300, NEVER, 600, NEVER, NEVER, 500]


def test_build_timeline_rejects_items_missing_from_inventory():
    inventory = pd.DataFrame(
        {"artwork_id_hash": IDS[:7], "artist_id_hash": "x", "upload_timestamp": 100}
    )
    purchases = pd.DataFrame(columns=["user_id_hash", "artwork_id_hash", "purchase_timestamp"])
    with pytest.raises(ValueError, match="upload_timestamp"):
        build_timeline(IDS, inventory, purchases)


def test_in_stock_candidates_follow_the_timeline():
    split, tl = _hand_split(), _hand_timeline()
    offsets, items, candidates, relevant, forced = user_masks(
        split, np.array([0, 1]), "in_stock", tl
    )
    assert forced == 0
    assert offsets.tolist() == [0, 1, 2] and items.tolist() == [0, 3]
    # u0 @500: 0 in profile; 2 one-of-a-kind sold @300; 5 uploaded @1000 -> out.
    # 3 multi-edition sold before stays; 1 (own purchase) and 7 (sold same second) stay.
    assert np.flatnonzero(candidates[0]).tolist() == [1, 3, 4, 6, 7]
    assert np.flatnonzero(relevant[0]).tolist() == [1]  # re-bought item 0 is not relevant
    # u2 @600: 1, 2, 7 sold out before; 3 in profile; 5 not uploaded yet
    assert np.flatnonzero(candidates[1]).tolist() == [0, 4, 6]
    assert np.flatnonzero(relevant[1]).tolist() == [4]


def test_unbought_candidates_exclude_only_the_profile():
    _, _, candidates, relevant, _ = user_masks(_hand_split(), np.array([0, 1]), "unbought")
    assert np.flatnonzero(~candidates[0]).tolist() == [0]
    assert np.flatnonzero(~candidates[1]).tolist() == [3]
    assert np.flatnonzero(relevant[0]).tolist() == [1]


def test_evaluate_skips_users_whose_hidden_basket_is_in_their_profile():
    split, tl = _hand_split(), _hand_timeline()
    # scores prefer 5, then 2, then the relevant 1: only in_stock removes 5 and 2
    scorer = FixedScorer([0, 0.7, 0.8, 0.1, 0.2, 0.9, 0.3, 0.4])
    res = evaluate(scorer, split, EvalConfig(protocol="in_stock", ks=(1, 3)), tl)
    assert res.skipped == 1 and res.n_users == 2  # u4 re-bought item 6 only
    df = res.per_user.set_index("user_id")
    assert df.loc["u0", "n_relevant"] == 1 and df.loc["u0", "n_candidates"] == 5
    assert df.loc["u0", "rr"] == 1.0  # item 1 ranks first once 5 and 2 are out of stock
    unbought = evaluate(scorer, split, EvalConfig(protocol="unbought", ks=(1, 3)))
    assert unbought.per_user.set_index("user_id").loc["u0", "rr"] == pytest.approx(1 / 3)
    assert res.summary["rr"][0] == pytest.approx(df["rr"].mean())


def test_relevant_item_outside_the_timeline_is_forced_into_candidates():
    split, tl = _hand_split(), _hand_timeline()
    upload = tl.upload_timestamp.copy()
    upload[4] = 5000  # item 4 "bought" by u2 @600 before its upload
    late = Timeline(tl.ids, upload, tl.sold_out_timestamp, tl.one_of_a_kind)
    res = evaluate(FixedScorer(np.arange(8)), split, EvalConfig(protocol="in_stock"), late)
    assert res.meta["relevant_forced_into_candidates"] == 1
    assert res.per_user.set_index("user_id").loc["u2", "n_candidates"] == 3


def test_in_stock_without_timeline_and_bad_config_raise():
    with pytest.raises(ValueError, match="Timeline"):
        evaluate(FixedScorer(np.arange(8)), _hand_split(), EvalConfig(protocol="in_stock"))
    with pytest.raises(ValueError, match="protocol"):
        EvalConfig(protocol="all")
    with pytest.raises(ValueError, match="returned"):
        evaluate(FixedScorer(np.arange(7)), _hand_split())


def test_oracle_is_perfect_and_random_is_near_half():
    split = _random_split()
    oracle = evaluate(OracleScorer(split), split, EvalConfig(ks=(5, 20), batch_users=64))
    for metric in ("auc", "recall@5", "ndcg@5", "recall@20", "ndcg@20", "rr"):
        assert oracle.summary[metric][0] == pytest.approx(1.0)
    rand = evaluate(RandomScorer(split.n_items), split, EvalConfig(ks=(5, 20), batch_users=64))
    mean, se = rand.summary["auc"]
    assert rand.n_users + rand.skipped == 400
    assert abs(mean - 0.5) < 0.04 and 0 < se < 0.03
    assert rand.summary["recall@20"][0] < 0.2


def test_batch_size_does_not_change_results():
    split = _random_split(n_users=50)
    scorer = FixedScorer(np.random.default_rng(1).random(split.n_items))
    a = evaluate(scorer, split, EvalConfig(batch_users=7)).per_user
    b = evaluate(scorer, split, EvalConfig(batch_users=256)).per_user
    pd.testing.assert_frame_equal(a, b)


def _results():
    split = _random_split(n_users=300)
    cfg = EvalConfig(batch_users=128)
    return {
        "Random": evaluate(RandomScorer(split.n_items, seed=2), split, cfg),
        "Oracle": evaluate(OracleScorer(split), split, cfg),
        "Noisy": evaluate(OracleScorer(split, noise=0.6, seed=3, name="noisy"), split, cfg),
    }


def test_table2_sorted_by_auc_with_standard_errors():
    df = table2(_results())
    assert df.index.tolist() == ["Oracle", "Noisy", "Random"]
    assert {"auc", "auc_se", "ndcg@100", "ndcg@100_se", "rr_se"} <= set(df.columns)
    assert df.loc["Oracle", "auc"] == 1.0 and df.loc["Noisy", "auc_se"] > 0
    text = table2_markdown(df, "unbought")
    assert "`unbought`" in text and "| method (users) | AUC | R@20 |" in text
    assert "| Oracle (300) | 1.0000 ± .0000 |" in text
    assert len(text.strip().splitlines()) == 4 + 3  # title, blank, head, rule, rows


def test_paired_comparison_matches_scipy_and_detects_a_difference():
    res = _results()
    out = paired_comparison(res["Noisy"], res["Random"], "auc")
    a = res["Noisy"].per_user.set_index("user")["auc"]
    b = res["Random"].per_user.set_index("user")["auc"].loc[a.index]
    want = stats.ttest_rel(a, b)
    assert out["n"] == len(a)
    assert out["statistic"] == pytest.approx(want.statistic)
    assert out["pvalue"] == pytest.approx(want.pvalue) and out["pvalue"] < 1e-6
    assert out["mean_diff"] == pytest.approx((a - b).mean()) and out["mean_diff"] > 0.1
    assert out["ci_low"] < out["mean_diff"] < out["ci_high"] and out["ci_low"] > 0
    # two random scorers: no significant difference, CI around 0
    split = _random_split(n_users=300)
    r1 = evaluate(RandomScorer(split.n_items, seed=5), split)
    r2 = evaluate(RandomScorer(split.n_items, seed=6), split)
    null = paired_comparison(r1, r2)
    assert null["ci_low"] < 0 < null["ci_high"]


def test_ablation_figure_is_a_png():
    res = _results()
    png = ablation_figure(
        {"CuratorNet": (res["Noisy"], res["Random"]), "VBPR": (res["Oracle"], res["Noisy"])}
    )
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000


def test_build_timeline_counts_duplicate_rows_once_and_ignores_unknown_items():
    rows = [(u, IDS[i], t) for u, i, t in PURCHASES]
    rows += [("u3", IDS[7], 500), ("zz", "not-in-catalogue", 100)]  # exact duplicate, unknown
    purchases = pd.DataFrame(
        rows, columns=["user_id_hash", "artwork_id_hash", "purchase_timestamp"]
    )
    inventory = pd.DataFrame({"artwork_id_hash": IDS, "artist_id_hash": "x",
                              "upload_timestamp": 100})  # fmt: skip
    tl = build_timeline(IDS, inventory, purchases)
    assert tl.one_of_a_kind[7] and tl.sold_out_timestamp[7] == 500
    assert tl.one_of_a_kind.sum() == 4


def test_ablation_tests_cover_both_protocols():
    split = _random_split(n_users=300)
    timeline = Timeline(
        ids=np.array([f"a{i}" for i in range(split.n_items)]),
        upload_timestamp=np.zeros(split.n_items, np.int64),
        sold_out_timestamp=np.where(np.arange(split.n_items) % 3 == 0, 0, NEVER),
        one_of_a_kind=np.arange(split.n_items) % 3 == 0,
    )
    methods = {
        "CuratorNet (0.0001)": OracleScorer(split, noise=0.6, seed=3),
        "CuratorNet (random sampling)": RandomScorer(split.n_items, seed=2),
        "VBPR (0.0001)": RandomScorer(split.n_items, seed=4),
        "VBPR (random sampling)": RandomScorer(split.n_items, seed=5),
    }
    rows, pairs_by_protocol = [], {}
    for protocol in ("unbought", "in_stock"):
        cfg = EvalConfig(protocol=protocol)
        res = {m: evaluate(s, split, cfg, timeline) for m, s in methods.items()}
        rows += [r.per_user.assign(method=m, protocol=protocol) for m, r in res.items()]
        pairs_by_protocol[protocol] = {
            "CuratorNet": (res["CuratorNet (0.0001)"], res["CuratorNet (random sampling)"]),
            "VBPR": (res["VBPR (0.0001)"], res["VBPR (random sampling)"]),
        }
    per_user = pd.concat(rows, ignore_index=True)
    pairs = {
        "CuratorNet": ("CuratorNet (0.0001)", "CuratorNet (random sampling)"),
        "VBPR": ("VBPR (0.0001)", "VBPR (random sampling)"),
    }
    out = ablation_tests(per_user, pairs)
    assert len(out) == 2 * 2 * 2  # protocols x families x (auc, recall@100)
    assert set(out["protocol"]) == {"unbought", "in_stock"}
    cn = out[(out["family"] == "CuratorNet") & (out["metric"] == "auc")]
    assert (cn["pvalue"] < 1e-6).all() and (cn["mean_diff"] > 0.1).all()
    vb = out[(out["family"] == "VBPR") & (out["metric"] == "auc")]
    assert (vb["pvalue"] > 1e-3).all()  # two random scorers
    # the in_stock protocol ranks fewer candidates: its AUCs differ from unbought's
    assert not np.isclose(cn["mean_a"].iloc[0], cn["mean_a"].iloc[1])
    png = ablation_figure_protocols(pairs_by_protocol)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000
    assert ablation_tests(per_user, {"X": ("nope", "VBPR (0.0001)")}).empty
