"""Ranking validation: held-out training baskets, scored like the test set, rank models right."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from curatornet_pipeline.core.evaluation.evaluate import EvalConfig, evaluate
from curatornet_pipeline.core.models.networks import CuratorNet, CuratorNetConfig
from curatornet_pipeline.core.models.scorers import RandomScorer, VisRankScorer
from curatornet_pipeline.core.sampling.checks import hidden_item_leaks
from curatornet_pipeline.core.sampling.triples import (
    SamplingConfig,
    build_context,
    merge_triplets,
    sample_strategy,
)
from curatornet_pipeline.core.split.baskets import split_train_test
from curatornet_pipeline.core.split.validation import (
    ValidationConfig,
    holdout_validation,
    make_evaluator,
)
from curatornet_pipeline.core.training.train import TrainConfig, train
from curatornet_pipeline.core.types import GUIDELINE_STRATEGIES

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_ARTISTS, PER_ARTIST, DIM = 30, 12, 16


def _world(seed: int = 0):
    """Users buy 3-5 baskets, mostly from one favourite artist; vectors cluster by artist."""
    rng = np.random.default_rng(seed)
    n_items = N_ARTISTS * PER_ARTIST
    ids = np.array([f"i{k:04d}" for k in range(n_items)])
    artist = np.arange(n_items) // PER_ARTIST
    centers = rng.standard_normal((N_ARTISTS, DIM)) * 2
    vectors = (centers[artist] + 0.5 * rng.standard_normal((n_items, DIM))).astype(np.float32)
    rows = []
    for u in range(240):
        fav = rng.integers(N_ARTISTS)
        for b in range(int(rng.integers(3, 6))):
            for _ in range(int(rng.integers(1, 3))):
                a = fav if rng.random() < 0.9 else rng.integers(N_ARTISTS)
                item = a * PER_ARTIST + rng.integers(PER_ARTIST)
                rows.append((f"u{u:03d}", ids[item], 100 * b))
    df = pd.DataFrame(rows, columns=["user_id_hash", "artwork_id_hash", "purchase_timestamp"])
    return split_train_test(df, ids), artist.astype(np.int32), vectors


@pytest.fixture(scope="module")
def world():
    split, artist, vectors = _world()
    train_split, val_split = holdout_validation(split)
    return split, train_split, val_split, artist, vectors


def test_holdout_keeps_the_test_basket_and_hides_the_last_training_basket(world):
    split, train_split, val_split, artist, vectors = world
    for name in ("test_users", "test_item_offsets", "test_items", "test_timestamps"):
        np.testing.assert_array_equal(getattr(train_split, name), getattr(split, name))
    per_user = np.diff(split.user_basket_offsets)
    eligible = np.flatnonzero(per_user >= 2)
    np.testing.assert_array_equal(val_split.test_users, eligible)
    np.testing.assert_array_equal(
        np.diff(train_split.user_basket_offsets), per_user - (per_user >= 2)
    )
    # the held-out basket is the user's last training basket, later than the rest
    for k, u in enumerate(val_split.test_users):
        last = split.user_basket_offsets[u + 1] - 1
        bio = split.basket_item_offsets
        held = val_split.test_items[
            val_split.test_item_offsets[k] : val_split.test_item_offsets[k + 1]
        ]
        np.testing.assert_array_equal(held, split.basket_items[bio[last] : bio[last + 1]])
        assert val_split.test_timestamps[k] == split.basket_timestamps[last]
    assert len(train_split.basket_items) + len(val_split.test_items) == len(split.basket_items)
    sample = holdout_validation(split, ValidationConfig(max_users=10, seed=1))[1]
    assert len(sample.test_users) == 10 and set(sample.test_users) <= set(eligible)


def test_no_triple_sees_a_validation_basket(world):
    split, train_split, val_split, artist, vectors = world
    ctx = build_context(train_split, artist, artist % 7, vectors)
    config = SamplingConfig(n_per_strategy=800, seed=2)
    parts = {s: sample_strategy(ctx, s, config) for s in GUIDELINE_STRATEGIES}
    union = merge_triplets(parts)
    assert hidden_item_leaks(union, val_split) == 0  # validation baskets: hidden from triples
    assert hidden_item_leaks(union, train_split) == 0  # test baskets too
    # sampling from the full split would use the validation baskets
    full = build_context(split, artist, artist % 7, vectors)
    leaky = sample_strategy(full, "s6_hide_one", config)
    assert hidden_item_leaks(leaky, val_split) > 0


def test_evaluator_computes_what_the_test_evaluation_computes(world):
    split, train_split, val_split, artist, vectors = world
    evaluator = make_evaluator(val_split, vectors)
    out = evaluator(VisRankScorer(vectors))
    direct = evaluate(VisRankScorer(vectors), val_split, EvalConfig())
    assert out["val_auc"] == pytest.approx(direct.summary["auc"][0])
    assert out["val_recall@100"] == pytest.approx(direct.summary["recall@100"][0])
    assert out["val_users"] == direct.n_users > 100
    assert {"val_auc", "val_recall@20", "val_ndcg@100", "val_precision@100"} <= set(out)


def test_evaluator_ranks_a_worse_model_below_a_better_one(world):
    split, train_split, val_split, artist, vectors = world
    evaluator = make_evaluator(val_split, vectors)
    good, bad = evaluator(VisRankScorer(vectors)), evaluator(RandomScorer(split.n_items, seed=0))
    assert good["val_auc"] > bad["val_auc"] + 0.2
    assert good["val_recall@100"] > bad["val_recall@100"]

    # CuratorNet trained on the true features vs on features shuffled across items
    ctx = build_context(train_split, artist, artist % 7, vectors)
    config = SamplingConfig(n_per_strategy=600, seed=3)
    union = merge_triplets({s: sample_strategy(ctx, s, config) for s in GUIDELINE_STRATEGIES})
    shuffled = vectors[np.random.default_rng(4).permutation(len(vectors))]
    tc = TrainConfig(epochs=4, lr=3e-3, batch_triples=256, patience=4)
    scores = {}
    for name, feats in (("true", vectors), ("shuffled", shuffled)):
        torch.manual_seed(0)
        model = CuratorNet(
            CuratorNetConfig(input_dim=DIM, item_layers=(32, 16), user_layers=(32, 16))
        )
        model.fit_scaler(feats)
        train(model, union, union, feats, tc)
        scores[name] = make_evaluator(val_split, feats)(model)
    assert scores["true"]["val_auc"] > scores["shuffled"]["val_auc"] + 0.1
    assert scores["true"]["val_recall@100"] > scores["shuffled"]["val_recall@100"]
    # the model is handed back in training mode when it was training
    model.train()
    make_evaluator(val_split, shuffled)(model)
    assert model.training


def test_validation_config_rejects_users_without_a_basket_left():
    with pytest.raises(ValueError, match="min_train_baskets"):
        ValidationConfig(min_train_baskets=1)
    assert dataclasses.asdict(ValidationConfig())["protocol"] == "unbought"
