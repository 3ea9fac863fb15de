"""Baskets and the train/test split: the last basket of every user with >= 2 baskets is hidden.

See ``REFERENCE_FACTS.md`` ("Preprocessing"): a basket is a user's purchases that
share one timestamp; for every user with at least two baskets the last basket is
removed before any triple is sampled and is used only for testing.

Leakage rule used throughout (:func:`hidden_pairs`): a *hidden pair* is a
``(user, item)`` with ``item`` in the user's hidden basket and **not** in the
user's training baskets. A repeat purchase (an item bought in a training basket
and again in the hidden one) is training information the user already has, so it
is not a hidden pair.
"""

import logging

import numpy as np
import pandas as pd

from curatornet_pipeline.core.ragged import offsets_from_lengths
from curatornet_pipeline.core.types import TrainTestSplit

logger = logging.getLogger(__name__)

PURCHASE_COLUMNS = ("user_id_hash", "artwork_id_hash", "purchase_timestamp")


def split_train_test(purchases: pd.DataFrame, catalogue_ids: np.ndarray) -> TrainTestSplit:
    """Group purchases into baskets and hide the last basket of users with >= 2 baskets.

    ``purchases`` is the long table (one row per purchased item); ``catalogue_ids``
    gives the item index of every item with a visual vector (its position).
    Purchases of items outside the catalogue are dropped first (counted in meta),
    so a basket made only of such items disappears. A repeated item inside one
    basket is kept once. Users are ordered by id; baskets by time within a user.
    """
    missing = [c for c in PURCHASE_COLUMNS if c not in purchases.columns]
    if missing:
        raise ValueError(f"purchases table lacks columns {missing}")
    catalogue_ids = np.asarray(catalogue_ids).astype(str)
    n_items = len(catalogue_ids)
    index = pd.Index(catalogue_ids)
    if not index.is_unique:
        raise ValueError("catalogue_ids contains duplicate ids")

    item = index.get_indexer(purchases["artwork_id_hash"].astype(str))
    known = item >= 0
    n_dropped = int((~known).sum())
    users_all, user = np.unique(
        purchases["user_id_hash"].astype(str).to_numpy(), return_inverse=True
    )
    ts = purchases["purchase_timestamp"].to_numpy(np.int64)
    user, item, ts = user[known].astype(np.int64), item[known].astype(np.int64), ts[known]

    # sort by (user, timestamp, item) and drop repeated items inside a basket
    order = np.lexsort((item, ts, user))
    user, item, ts = user[order], item[order], ts[order]
    repeat = np.zeros(len(item), bool)
    repeat[1:] = (user[1:] == user[:-1]) & (ts[1:] == ts[:-1]) & (item[1:] == item[:-1])
    n_repeat_in_basket = int(repeat.sum())
    user, item, ts = user[~repeat], item[~repeat], ts[~repeat]

    # basket boundaries: a new (user, timestamp)
    new_basket = np.ones(len(item), bool)
    new_basket[1:] = (user[1:] != user[:-1]) | (ts[1:] != ts[:-1])
    basket_start = np.flatnonzero(new_basket)  # (B_all,) row of each basket's first item
    basket_user = user[basket_start]
    basket_ts = ts[basket_start]
    basket_size = np.diff(np.append(basket_start, len(item)))

    # users kept (at least one basket after dropping) and their basket counts
    kept_users, user_first_basket, baskets_per_user = np.unique(
        basket_user, return_index=True, return_counts=True
    )
    is_last = np.zeros(len(basket_start), bool)
    is_last[user_first_basket + baskets_per_user - 1] = True
    is_test = is_last & (baskets_per_user >= 2)[np.searchsorted(kept_users, basket_user)]

    user_pos = np.searchsorted(kept_users, basket_user)  # (B_all,) index into user_ids
    basket_of_row = np.repeat(np.arange(len(basket_start)), basket_size)
    test_row = is_test[basket_of_row]

    train_b = ~is_test
    train_sizes = basket_size[train_b]
    train_per_user = np.bincount(user_pos[train_b], minlength=len(kept_users))
    test_b = np.flatnonzero(is_test)

    split = TrainTestSplit(
        user_ids=users_all[kept_users],
        user_basket_offsets=offsets_from_lengths(train_per_user),
        basket_item_offsets=offsets_from_lengths(train_sizes),
        basket_items=item[~test_row].astype(np.int32),
        basket_timestamps=basket_ts[train_b].astype(np.int64),
        test_users=user_pos[test_b].astype(np.int32),
        test_item_offsets=offsets_from_lengths(basket_size[test_b]),
        test_items=item[test_row].astype(np.int32),
        test_timestamps=basket_ts[test_b].astype(np.int64),
        n_items=n_items,
        meta={},
    )
    train_pairs = _pair_keys(*_train_rows(split), n_items)
    test_pairs = _pair_keys(
        np.repeat(split.test_users, np.diff(split.test_item_offsets)), split.test_items, n_items
    )
    meta = {
        "purchases_in": int(len(purchases)),
        "dropped_not_in_catalogue": n_dropped,
        "dropped_repeat_in_basket": n_repeat_in_basket,
        "users": int(len(kept_users)),
        "test_users": int(len(test_b)),
        "train_baskets": int(train_b.sum()),
        "test_baskets": int(len(test_b)),
        "train_purchases": int(len(split.basket_items)),
        "test_purchases": int(len(split.test_items)),
        "test_items_bought_before": int(np.isin(test_pairs, train_pairs).sum()),
        "n_items": n_items,
    }
    object.__setattr__(split, "meta", meta)
    logger.info("split: %s", meta)
    return split


def _pair_keys(users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    return users.astype(np.int64) * n_items + items.astype(np.int64)


def _train_rows(split: TrainTestSplit) -> tuple[np.ndarray, np.ndarray]:
    """(user, item) of every training purchase row."""
    baskets_per_user = np.diff(split.user_basket_offsets)
    basket_user = np.repeat(np.arange(len(split.user_ids)), baskets_per_user)
    row_user = np.repeat(basket_user, np.diff(split.basket_item_offsets))
    return row_user, split.basket_items


def training_profiles(split: TrainTestSplit) -> tuple[np.ndarray, np.ndarray]:
    """Per-user union of training items as CSR ``(offsets (U+1,), items int32)``, sorted unique."""
    keys = np.unique(_pair_keys(*_train_rows(split), split.n_items))
    users = keys // split.n_items
    counts = np.bincount(users, minlength=len(split.user_ids))
    return offsets_from_lengths(counts), (keys % split.n_items).astype(np.int32)


def hidden_pairs(split: TrainTestSplit) -> np.ndarray:
    """Sorted ``user * n_items + item`` keys of hidden pairs (see module docstring)."""
    test_keys = _pair_keys(
        np.repeat(split.test_users, np.diff(split.test_item_offsets)),
        split.test_items,
        split.n_items,
    )
    train_keys = np.unique(_pair_keys(*_train_rows(split), split.n_items))
    return np.setdiff1d(test_keys, train_keys)
