"""Train/test split: baskets by timestamp, last basket hidden for users with >= 2 baskets."""

import numpy as np
import pandas as pd
import pytest

from curatornet_pipeline.core.split.baskets import (
    hidden_pairs,
    split_train_test,
    training_profiles,
)

IDS = np.array([f"item{k}" for k in range(10)])


def _table(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["user_id_hash", "artwork_id_hash", "purchase_timestamp"])
    df["line"] = np.arange(len(df), dtype=np.int64)
    return df


def _baskets(split, user: int) -> list[list[int]]:
    b0, b1 = split.user_basket_offsets[user], split.user_basket_offsets[user + 1]
    off = split.basket_item_offsets
    return [sorted(split.basket_items[off[b] : off[b + 1]].tolist()) for b in range(b0, b1)]


def _test_basket(split, user: int) -> list[int] | None:
    rows = np.flatnonzero(split.test_users == user)
    if len(rows) == 0:
        return None
    t = rows[0]
    return sorted(
        split.test_items[split.test_item_offsets[t] : split.test_item_offsets[t + 1]].tolist()
    )


def test_hand_worked_split():
    split = split_train_test(
        _table(
            [
                ("alice", "item3", 30),  # rows out of time order on purpose
                ("alice", "item1", 10),
                ("alice", "item2", 10),  # same timestamp: one basket {1, 2}
                ("alice", "item4", 30),
                ("alice", "item4", 30),  # repeated in one basket: kept once
                ("bob", "item5", 20),  # one basket only: stays in training
                ("bob", "item6", 20),
                ("carol", "item7", 5),
                ("carol", "unknown", 6),  # not in the catalogue: dropped, basket vanishes
            ]
        ),
        IDS,
    )
    assert split.user_ids.tolist() == ["alice", "bob", "carol"]
    assert _baskets(split, 0) == [[1, 2]]
    assert _test_basket(split, 0) == [3, 4]
    assert split.test_timestamps.tolist() == [30]
    assert _baskets(split, 1) == [[5, 6]] and _test_basket(split, 1) is None
    assert _baskets(split, 2) == [[7]] and _test_basket(split, 2) is None
    assert split.meta["dropped_not_in_catalogue"] == 1
    assert split.meta["dropped_repeat_in_basket"] == 1
    assert split.meta["test_users"] == 1 and split.meta["train_baskets"] == 3
    assert split.n_items == 10
    offsets, items = training_profiles(split)
    assert offsets.tolist() == [0, 2, 4, 5] and items.tolist() == [1, 2, 5, 6, 7]


def test_repeat_purchase_is_not_a_hidden_pair():
    split = split_train_test(
        _table([("u", "item1", 1), ("u", "item2", 2), ("u", "item1", 3), ("u", "item9", 3)]), IDS
    )
    assert _test_basket(split, 0) == [1, 9]
    assert hidden_pairs(split).tolist() == [9]  # user 0 * 10 + item 9; item 1 was bought before
    assert split.meta["test_items_bought_before"] == 1


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_tables_match_a_plain_python_split(seed):
    rng = np.random.default_rng(seed)
    n = 300
    df = _table(
        list(
            zip(
                [f"u{k}" for k in rng.integers(0, 40, n)],
                [f"item{k}" for k in rng.integers(0, 12, n)],  # item10, item11 unknown
                rng.integers(0, 8, n).tolist(),
                strict=True,
            )
        )
    )
    split = split_train_test(df, IDS)
    known = df[df["artwork_id_hash"].isin(IDS)]
    assert split.meta["dropped_not_in_catalogue"] == n - len(known)
    expected = {}
    for user, g in known.groupby("user_id_hash"):
        stamps = sorted(set(g["purchase_timestamp"]))
        expected[user] = [
            sorted({int(a[4:]) for a in g.loc[g["purchase_timestamp"] == t, "artwork_id_hash"]})
            for t in stamps
        ]
    assert split.user_ids.tolist() == sorted(expected)
    for u, user in enumerate(split.user_ids):
        baskets = expected[user]
        if len(baskets) >= 2:
            assert _baskets(split, u) == baskets[:-1]
            assert _test_basket(split, u) == baskets[-1]
        else:
            assert _baskets(split, u) == baskets and _test_basket(split, u) is None
    ts = split.basket_timestamps
    for u in range(len(split.user_ids)):
        b0, b1 = split.user_basket_offsets[u], split.user_basket_offsets[u + 1]
        assert np.all(np.diff(ts[b0:b1]) > 0)
        t = np.flatnonzero(split.test_users == u)
        if len(t):
            assert split.test_timestamps[t[0]] > ts[b1 - 1]


def test_missing_column_is_an_error():
    with pytest.raises(ValueError, match="purchase_timestamp"):
        split_train_test(pd.DataFrame({"user_id_hash": ["a"], "artwork_id_hash": ["item1"]}), IDS)
