"""The six sampling guidelines + random: definitions, leakage, disjoint union, reproducibility."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from curatornet_pipeline.core.experiment.grid import (
    ablation_pairs,
    guideline_strategies,
    match_size,
    paper_guidelines_of,
    training_counts,
    training_triples,
    triplet_partitions_for,
    variants,
)
from curatornet_pipeline.core.sampling.checks import hidden_item_leaks, verify_strategy
from curatornet_pipeline.core.sampling.strategies import nested_uniform
from curatornet_pipeline.core.sampling.triples import (
    STRATEGY_FUNCS,
    SamplingConfig,
    build_context,
    merge_triplets,
    sample_strategy,
    select,
    strategy_target,
)
from curatornet_pipeline.core.split.baskets import hidden_pairs, split_train_test
from curatornet_pipeline.core.types import (
    GUIDELINE_STRATEGIES,
    PAPER_GUIDELINES,
    STRATEGIES,
    STRATEGY_INFO,
    VBPR_GUIDELINES,
    paper_guideline,
)

N_ITEMS, N_ARTISTS, N_CLUSTERS = 600, 60, 12
CONFIG = SamplingConfig(n_per_strategy=1500, seed=7)


def _world(seed: int):
    """Purchases with a 270-purchase user and a 21-item basket, artist-shaped vectors."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"a{k:04d}" for k in range(N_ITEMS)])
    rows = []
    for u in range(120):
        for b in range(int(rng.integers(1, 5))):
            for _ in range(int(rng.integers(1, 4))):
                rows.append((f"u{u:03d}", ids[rng.integers(N_ITEMS)], 100 * b))
    heavy = rng.choice(N_ITEMS, 270, replace=False)
    rows += [("heavy", ids[i], 10 * (k // 5)) for k, i in enumerate(heavy[:249])]  # baskets of 5
    rows += [("heavy", ids[i], 5000) for i in heavy[249:]]  # a 21-item basket (the hidden one)
    rows += [("big", ids[i], 1) for i in rng.choice(N_ITEMS, 21, replace=False)]
    rows += [("big", ids[i], 2) for i in rng.choice(N_ITEMS, 3, replace=False)]
    df = pd.DataFrame(rows, columns=["user_id_hash", "artwork_id_hash", "purchase_timestamp"])
    df["line"] = np.arange(len(df))
    artist = rng.integers(0, N_ARTISTS, N_ITEMS).astype(np.int32)
    artist[:5] = -1  # unknown artists
    vectors = rng.standard_normal((N_ARTISTS, 8))[
        np.maximum(artist, 0)
    ] + 0.5 * rng.standard_normal((N_ITEMS, 8))
    vectors = vectors.astype(np.float32)
    vectors[11] = vectors[10] * 3  # visually identical to item 10 (cosine 1)
    cluster = rng.integers(0, N_CLUSTERS, N_ITEMS).astype(np.int32)
    cluster[11] = cluster[10]
    return split_train_test(df, ids), artist, cluster, vectors


@pytest.fixture(scope="module")
def world():
    split, artist, cluster, vectors = _world(0)
    ctx = build_context(split, artist, cluster, vectors)
    parts = {s: sample_strategy(ctx, s, CONFIG) for s in STRATEGIES}
    return split, artist, cluster, vectors, ctx, parts


def _profile(t, k: int) -> set[int]:
    p = t.profile[k]
    return set(t.profile_items[t.profile_offsets[p] : t.profile_offsets[p + 1]].tolist())


def _history(split) -> list[list[set[int]]]:
    off, items = split.basket_item_offsets, split.basket_items
    return [
        [
            set(items[off[b] : off[b + 1]].tolist())
            for b in range(split.user_basket_offsets[u], split.user_basket_offsets[u + 1])
        ]
        for u in range(len(split.user_ids))
    ]


def _cos(v: np.ndarray, a: int, b: int) -> float:
    return float(v[a] @ v[b] / np.linalg.norm(v[a]) / np.linalg.norm(v[b]))


def test_fixture_has_the_hard_cases(world):
    split, *_ = world
    sizes = np.diff(split.basket_item_offsets)
    assert sizes.max() == 21  # the "big" user's training basket
    heavy = split.user_ids.tolist().index("heavy")
    t = np.flatnonzero(split.test_users == heavy)[0]
    assert split.test_item_offsets[t + 1] - split.test_item_offsets[t] == 21
    b0, b1 = split.user_basket_offsets[heavy], split.user_basket_offsets[heavy + 1]
    assert split.basket_item_offsets[b1] - split.basket_item_offsets[b0] == 249


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_triple_meets_its_definition(world, strategy):
    split, artist, cluster, vectors, ctx, parts = world
    t = parts[strategy]
    assert verify_strategy(t, ctx, strategy) == []
    n = strategy_target(CONFIG, strategy)  # 1500; six times that for random (size-matched)
    assert n == (9000 if strategy == "random" else 1500)
    assert len(t) == n + n // 20 and t.meta["produced"] == n and not t.meta["exhausted"]
    assert np.all(t.strategy == STRATEGIES.index(strategy))
    history = _history(split)
    known = artist.astype(np.int64).copy()
    known[known < 0] = -1 - np.arange((known < 0).sum())  # unknown artists are all distinct
    for k in range(0, len(t), 7):  # a seventh of the triples, checked in plain Python
        prof, pos, neg, u = _profile(t, k), int(t.positive[k]), int(t.negative[k]), int(t.user[k])
        assert neg not in prof and pos != neg
        assert not (cluster[pos] == cluster[neg] and _cos(vectors, pos, neg) > 1 - 1e-6)
        if u >= 0:
            items = set().union(*history[u])
            arts, clus = {known[i] for i in items}, {cluster[i] for i in items}
        if strategy in ("s1_user_profile", "random"):
            assert prof == items and pos in prof
        elif strategy == "s2_single_item":
            assert u == -1 and prof == {pos}
        elif strategy == "s3_artist_cluster":
            assert prof == items and pos not in prof
            assert known[pos] in arts and cluster[pos] in clus
        elif strategy == "s4_same_artist":
            (q,) = prof
            assert u == -1 and known[pos] == known[q] and pos != q and known[neg] != known[q]
            cq, cp, cn = cluster[q], cluster[pos], cluster[neg]
            if not (cq == cp != cn):
                assert not (cq == cn != cp)
                assert _cos(vectors, q, pos) > _cos(vectors, q, neg) + 0.1 - 1e-5
        elif strategy == "s5_next_basket":
            baskets = history[u]
            assert any(
                prof == set().union(*baskets[:b]) and pos in baskets[b]
                for b in range(1, len(baskets))
            )
        elif strategy == "s6_hide_one":
            baskets = history[u]
            assert pos not in prof
            assert any(
                len(baskets[b]) >= 2
                and pos in baskets[b]
                and prof == set().union(*baskets[: b + 1]) - {pos}
                for b in range(len(baskets))
            )
        if strategy in ("s3_artist_cluster", "s5_next_basket", "s6_hide_one"):
            assert known[neg] not in arts and cluster[neg] not in clus


def test_visually_identical_items_are_never_paired(world):
    *_, ctx, parts = world
    assert ctx.identical_keys.tolist() == [10 * N_ITEMS + 11, 11 * N_ITEMS + 10]
    for t in parts.values():
        pairs = set(zip(t.positive.tolist(), t.negative.tolist(), strict=True))
        assert (10, 11) not in pairs and (11, 10) not in pairs
    t = sample_strategy(ctx, "s2_single_item", SamplingConfig(n_per_strategy=20_000, seed=3))
    assert np.any(t.positive == 10) and not np.any((t.positive == 10) & (t.negative == 11))


def test_heavy_user_and_big_basket_are_sampled(world):
    split, *_, parts = world
    heavy = split.user_ids.tolist().index("heavy")
    t = parts["s1_user_profile"]
    rows = np.flatnonzero(t.user == heavy)
    assert len(rows) > 0 and len(_profile(t, rows[0])) == 249
    big = split.user_ids.tolist().index("big")
    hide = parts["s6_hide_one"]
    assert any(len(_profile(hide, k)) == 20 for k in np.flatnonzero(hide.user == big))


def test_no_hidden_item_leaks_and_a_planted_leak_is_found(world):
    split, *_, parts = world
    for t in parts.values():
        assert hidden_item_leaks(t, split) == 0
    t = parts["s1_user_profile"]
    key = int(hidden_pairs(split)[0])
    user, item = key // split.n_items, key % split.n_items
    k = int(np.flatnonzero(t.user == user)[0])
    positive = t.positive.copy()
    positive[k] = item
    assert hidden_item_leaks(dataclasses.replace(t, positive=positive), split) == 1
    s3 = parts["s3_artist_cluster"]
    assert hidden_item_leaks(s3, split, content_positives=True) >= hidden_item_leaks(s3, split)
    items = t.profile_items.copy()
    p = t.profile[k]
    items[t.profile_offsets[p]] = item  # a hidden item inside the user's profile
    leaky = dataclasses.replace(t, profile_items=items)
    assert hidden_item_leaks(leaky, split) == int((t.profile == p).sum())


def test_verify_reports_violations(world):
    *_, ctx, parts = world
    t = parts["s3_artist_cluster"]
    negative = t.negative.copy()
    negative[3] = t.profile_items[t.profile_offsets[t.profile[3]]]  # inside the profile
    problems = verify_strategy(dataclasses.replace(t, negative=negative), ctx, "s3_artist_cluster")
    assert any("negative inside the profile" in p for p in problems)
    assert any("hash that does not match" in p for p in problems)
    t = parts["s4_same_artist"]
    positive = t.negative.copy()
    assert verify_strategy(dataclasses.replace(t, positive=positive), ctx, "s4_same_artist")
    assert verify_strategy(t, ctx, "s1_user_profile") == ["s1_user_profile: no triples"]


def test_validation_is_disjoint_and_sized(world):
    *_, parts = world
    for s, t in parts.items():
        assert t.is_validation.sum() == strategy_target(CONFIG, s) // 20
        assert len(np.unique(t.hash)) == len(t)
        assert not np.isin(t.hash[t.is_validation], t.hash[~t.is_validation]).any()


def test_merge_is_a_disjoint_union(world):
    *_, ctx, parts = world
    merged = merge_triplets(parts)
    assert len(np.unique(merged.hash)) == len(merged)
    assert not np.isin(merged.hash[merged.is_validation], merged.hash[~merged.is_validation]).any()
    rejected = merged.meta["rejected_cross_strategy"]
    assert len(merged) == sum(len(t) for t in parts.values()) - sum(rejected.values())
    assert np.all(np.diff(merged.strategy) >= 0)  # STRATEGIES order
    for s in STRATEGIES:
        assert verify_strategy(merged, ctx, s) == []
    # the same triple in two strategies survives once, in the earlier one
    s1 = parts["s1_user_profile"]
    copy = dataclasses.replace(s1, strategy=np.full(len(s1), STRATEGIES.index("random"), np.int8))
    both = merge_triplets({"s1_user_profile": s1, "random": copy})
    assert len(both) == len(s1) and both.meta["rejected_cross_strategy"]["random"] == len(s1)
    # profiles are deduplicated: profile hashes unique and each profile used
    sub = select(merged, ["s1_user_profile", "s3_artist_cluster"])
    assert set(np.unique(sub.strategy)) == {0, 2} and np.all(sub.user >= 0)
    assert len(sub.profile_offsets) - 1 == len(np.unique(sub.profile))
    assert (
        len(sub)
        == merged.meta["train_per_strategy"]["s1_user_profile"]
        + merged.meta["train_per_strategy"]["s3_artist_cluster"]
        + merged.meta["validation_per_strategy"]["s1_user_profile"]
        + merged.meta["validation_per_strategy"]["s3_artist_cluster"]
    )


def test_same_seed_same_triples_other_seed_other_triples(world):
    *_, ctx, parts = world
    config = SamplingConfig(n_per_strategy=400, seed=7)
    for s in STRATEGIES:
        a, b = sample_strategy(ctx, s, config), sample_strategy(ctx, s, config)
        for f in (
            "profile",
            "positive",
            "negative",
            "user",
            "hash",
            "is_validation",
            "profile_items",
        ):
            np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
        c = sample_strategy(ctx, s, dataclasses.replace(config, seed=8))
        assert not np.array_equal(a.hash, c.hash)


def test_exhausted_space_is_reported():
    split, artist, cluster, vectors = _world(1)
    ctx = build_context(split, artist, cluster, vectors)
    t = sample_strategy(
        ctx, "s6_hide_one", SamplingConfig(n_per_strategy=10_000_000, max_batch=200_000)
    )
    assert t.meta["exhausted"] and 0 < len(t) < 10_500_000
    assert verify_strategy(t, ctx, "s6_hide_one") == []
    exclude = sample_strategy(ctx, "s2_single_item", SamplingConfig(n_per_strategy=300)).hash
    again = sample_strategy(
        ctx, "s2_single_item", SamplingConfig(n_per_strategy=300), exclude=exclude
    )
    assert not np.isin(again.hash, exclude).any()


def test_registry_matches_strategy_names():
    assert tuple(STRATEGY_FUNCS) == STRATEGIES


def test_paper_guideline_mapping_is_complete_and_one_to_one():
    # REFERENCE_FACTS: reference 1 = paper 4, 2 = 5, 3 = 3, 4 = 6, 5 = 2, 6 = 1
    expected = {1: 4, 2: 5, 3: 3, 4: 6, 5: 2, 6: 1}
    assert tuple(STRATEGY_INFO) == STRATEGIES
    guides = [STRATEGY_INFO[s] for s in GUIDELINE_STRATEGIES]
    assert [g.reference_number for g in guides] == [1, 2, 3, 4, 5, 6]
    assert {g.reference_number: g.paper_guideline for g in guides} == expected
    assert sorted(PAPER_GUIDELINES) == [1, 2, 3, 4, 5, 6]
    assert sorted(PAPER_GUIDELINES.values()) == sorted(GUIDELINE_STRATEGIES)
    assert STRATEGY_INFO["random"].paper_guideline is None
    assert paper_guideline("s6_hide_one") == 1 and paper_guideline("s1_user_profile") == 4
    assert set(VBPR_GUIDELINES) == {PAPER_GUIDELINES[3], PAPER_GUIDELINES[4]}
    assert set(VBPR_GUIDELINES) == {"s1_user_profile", "s3_artist_cluster"}
    assert "basket" in STRATEGY_INFO[PAPER_GUIDELINES[1]].paper_wording
    with pytest.raises(ValueError, match="unknown strategy"):
        paper_guideline("s7")


def test_sampled_partitions_carry_their_paper_number(world):
    *_, parts = world
    for s, t in parts.items():
        assert t.meta["paper_guideline"] == STRATEGY_INFO[s].paper_guideline
        assert t.meta["reference_strategy"] == STRATEGY_INFO[s].reference_number


def test_nested_uniform_weights_each_level_equally():
    rng = np.random.default_rng(0)
    users = np.array([0, 0, 0, 0, 1])  # user 0 has four rows, user 1 one
    baskets = np.array([10, 11, 11, 11, 12])
    rows = nested_uniform([users, baskets], 40_000, rng)
    freq = np.bincount(rows, minlength=5) / 40_000
    np.testing.assert_allclose(freq, [0.25, 1 / 12, 1 / 12, 1 / 12, 0.5], atol=0.015)
    flat = np.bincount(nested_uniform([], 5, rng), minlength=1)
    assert flat.sum() == 5


def _heavy_buyer_world():
    """50 light users with 3 baskets of 2 items; one heavy buyer with 101 baskets of 2."""
    rng = np.random.default_rng(3)
    n_items = 1000
    ids = np.array([f"i{k:04d}" for k in range(n_items)])
    artist = np.where(
        np.arange(n_items) < 300, np.arange(n_items) % 10, 10 + np.arange(n_items) % 40
    )
    cluster = np.where(
        np.arange(n_items) < 300, np.arange(n_items) % 7, 7 + np.arange(n_items) % 30
    )
    rows = []
    for u in range(50):
        items = rng.choice(np.arange(300, n_items), 6, replace=False)
        rows += [(f"u{u:02d}", ids[i], 100 * (k // 2)) for k, i in enumerate(items)]
    heavy = rng.choice(300, 202, replace=False)
    rows += [("heavy", ids[i], 10 * (k // 2)) for k, i in enumerate(heavy)]
    df = pd.DataFrame(rows, columns=["user_id_hash", "artwork_id_hash", "purchase_timestamp"])
    split = split_train_test(df, ids)
    vectors = rng.standard_normal((n_items, 8)).astype(np.float32)
    return split, artist.astype(np.int32), cluster.astype(np.int32), vectors


@pytest.mark.parametrize("strategy", ["s5_next_basket", "s6_hide_one"])
def test_basket_strategies_weight_users_not_basket_pairs(strategy):
    split, artist, cluster, vectors = _heavy_buyer_world()
    heavy = int(np.flatnonzero(split.user_ids == "heavy")[0])
    share, mean_size = {}, {}
    for weighting in ("user", "pair"):
        config = SamplingConfig(n_per_strategy=3000, seed=1, basket_weighting=weighting)
        ctx = build_context(split, artist, cluster, vectors, config)
        t = sample_strategy(ctx, strategy, config)
        assert verify_strategy(t, ctx, strategy) == []
        share[weighting] = float(np.mean(t.user == heavy))
        mean_size[weighting] = float(np.diff(t.profile_offsets)[t.profile].mean())
    # per user: the heavy buyer is one user of 51. Per pair: s5 has 99 of 149
    # (user, b) profiles, s6 200 of 400 (basket, hidden item) pairs.
    assert abs(share["user"] - 1 / 51) < 0.012
    assert abs(share["pair"] - (99 / 149 if strategy == "s5_next_basket" else 0.5)) < 0.05
    # light users' profiles hold 2 to 4 items, the heavy buyer's up to 200
    assert mean_size["user"] < 6 < 40 < mean_size["pair"]
    with pytest.raises(ValueError, match="basket_weighting"):
        SamplingConfig(basket_weighting="basket")


def test_random_variants_train_on_as_many_triples_as_their_guideline_partner(world):
    *_, parts = world
    union = merge_triplets({s: parts[s] for s in GUIDELINE_STRATEGIES})
    grid = variants({"curatornet_l2": [0.0, 1e-4], "vbpr_l2": [1e-4], "ablation_l2": 1e-4})
    pairs = ablation_pairs(grid)
    assert {f: (a.name, b.name) for f, (a, b) in pairs.items()} == {
        "CuratorNet": ("curatornet-l0.0001", "curatornet-random"),
        "VBPR": ("vbpr-l0.0001", "vbpr-random"),
    }
    for guided, rand in pairs.values():
        vbpr = guided.kind == "vbpr"
        a = training_triples(guided, union, parts["random"])
        b = training_triples(rand, union, parts["random"])
        assert training_counts(a, users_only=vbpr) == training_counts(b, users_only=vbpr)
        assert guided.l2 == rand.l2
        per = union.meta["train_per_strategy"]
        assert training_counts(a)[0] == sum(per[s] for s in guideline_strategies(guided.kind))
        assert np.all(b.strategy == STRATEGIES.index("random"))
        assert verify_strategy(b, world[4], "random") == []  # uniform negatives, per the paper
    assert triplet_partitions_for(grid["vbpr-l0.0001"]) == VBPR_GUIDELINES
    assert paper_guidelines_of(grid["vbpr-l0.0001"]) == "3,4"
    assert paper_guidelines_of(grid["curatornet-l0"]) == "1,2,3,4,5,6"
    assert triplet_partitions_for(grid["curatornet-l0"]) == GUIDELINE_STRATEGIES
    assert triplet_partitions_for(grid["vbpr-random"])[0] == "random"
    # VBPR's random subset is seeded: same seed, same rows
    b1 = training_triples(grid["vbpr-random"], union, parts["random"], seed=3)
    b2 = training_triples(grid["vbpr-random"], union, parts["random"], seed=3)
    np.testing.assert_array_equal(b1.hash, b2.hash)
    with pytest.raises(ValueError, match="size-matching needs"):
        match_size(parts["random"], len(parts["random"]) + 1, 0)
