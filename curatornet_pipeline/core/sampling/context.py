"""What every sampling strategy reads: the settings (:class:`SamplingConfig`) and the lookup
structures precomputed once from the training baskets, the catalogue's artists and
visual clusters and the PCA vectors (:class:`SamplingContext`, :func:`build_context`)."""

import logging
from dataclasses import dataclass, field

import numpy as np

from curatornet_pipeline.core.ragged import offsets_from_lengths, range_positions, row_ids
from curatornet_pipeline.core.split.baskets import training_profiles
from curatornet_pipeline.core.types import TrainTestSplit

logger = logging.getLogger(__name__)

IDENTICAL_TOL = 1e-6  # cosine >= 1 - IDENTICAL_TOL in the same cluster counts as identical
_EXPLICIT_BELOW = 0.25  # users whose valid negatives are rarer than this get an explicit list


def _bit_lookup(bits: np.ndarray, keys: np.ndarray) -> np.ndarray:
    return ((bits[keys >> 3] >> (keys & 7).astype(np.uint8)) & 1).astype(bool)


@dataclass(frozen=True)
class SamplingConfig:
    """How many triples to draw and the constants of the guidelines."""

    n_per_strategy: int = 1_666_667  # paper: ~10M training triples split evenly over six
    validation_fraction: float = 0.05  # validation triples, as a fraction of n_per_strategy
    hard_negative_prob: float = 0.6  # negative from the positive's cluster (s1, s2, s4)
    visual_margin: float = 0.1  # s4: accept when s(q,p) > s(q,n) + margin
    max_visual_tries: int = 20  # s4: negatives tried per (q, p) before giving up
    seed: int = 0  # rng = default_rng([seed, strategy index])
    max_rounds: int = 30  # batches drawn before a strategy is declared exhausted
    max_batch: int = 2_000_000  # candidates drawn per batch (bounds memory)
    min_yield: float = 0.01  # a batch with fewer new triples per draw means exhausted
    max_negative_redraws: int = 50  # redraws of a rule-breaking negative before dropping
    # s5/s6: "user" draws a user first, then a basket (the reference); "pair" draws
    # the (user, basket) profile uniformly, weighting users by their basket count
    basket_weighting: str = "user"
    # the random partition draws 6 x n_per_strategy triples, so the random-sampling
    # variants of the ablation can train on as many triples as the guideline ones
    size_matched_random: bool = True

    def __post_init__(self) -> None:
        if self.basket_weighting not in ("user", "pair"):
            raise ValueError(
                f"basket_weighting must be 'user' or 'pair', got {self.basket_weighting!r}"
            )


@dataclass(frozen=True)
class SamplingContext:
    """Precomputed lookup structures shared by every strategy (built by :func:`build_context`)."""

    n_items: int
    n_users: int
    artist: np.ndarray  # (I,) int32 dense artist index; unknown (-1) artists made unique
    cluster: np.ndarray  # (I,) int32 visual cluster
    unit_vectors: np.ndarray  # (I, d) float32 L2-normalised PCA vectors
    identical_keys: np.ndarray  # sorted int64 i * I + j of visually identical pairs i != j
    cluster_offsets: np.ndarray  # (K+1,) int64, items per cluster (CSR)
    cluster_items: np.ndarray  # (I,) int32
    nonempty_clusters: np.ndarray  # (K',) int32 clusters with at least one item
    artist_offsets: np.ndarray  # (A+1,) int64, items per artist (CSR)
    artist_items: np.ndarray  # (I,) int32
    artist_rank: np.ndarray  # (I,) int64 position of each item in its artist's list
    profile_offsets: np.ndarray  # (U+1,) int64, training profile of each user (CSR)
    profile_items: np.ndarray  # (sum,) int32 sorted unique per user
    profile_bits: np.ndarray  # uint8 bitset over user * I + item of profile membership
    user_artists: np.ndarray  # (U, A) bool artists in the user's training history
    user_clusters: np.ndarray  # (U, K) bool clusters in the user's training history
    n_negatives: np.ndarray  # (U,) int64 items with artist and cluster both absent
    negative_offsets: np.ndarray  # (U+1,) int64 explicit such items for users where rare
    negative_items: np.ndarray  # (sum,) int32
    # (U+1,) int64 s3 positives: outside the profile, artist and cluster in it
    s3_offsets: np.ndarray
    s3_items: np.ndarray  # (sum,) int32
    basket_item_offsets: np.ndarray  # (B+1,) int64 training baskets (from the split)
    basket_items: np.ndarray  # (sum,) int32
    next_offsets: np.ndarray  # (P5+1,) int64 s5 profiles: items of baskets 1..b of a user
    next_items: np.ndarray  # (sum,) int32
    next_user: np.ndarray  # (P5,) int32
    next_basket: np.ndarray  # (P5,) int64 index of basket b+1 (the positives)
    hide_offsets: np.ndarray  # (P6+1,) int64 s6 profiles: baskets up to b minus the hidden item
    hide_items: np.ndarray  # (sum,) int32
    hide_user: np.ndarray  # (P6,) int32
    hide_item: np.ndarray  # (P6,) int32 the hidden item (the positive)
    hide_basket: np.ndarray  # (P6,) int64 training basket the item is hidden from
    config: SamplingConfig = field(default_factory=SamplingConfig)

    def in_profile(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Whether ``items[k]`` is in the training profile of ``users[k]`` (vectorised)."""
        return _bit_lookup(self.profile_bits, users.astype(np.int64) * self.n_items + items)

    def identical(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Whether items ``a[k]`` and ``b[k]`` are visually identical (or equal)."""
        same = a == b
        if len(self.identical_keys):
            keys = a.astype(np.int64) * self.n_items + b
            pos = np.minimum(
                np.searchsorted(self.identical_keys, keys), len(self.identical_keys) - 1
            )
            same |= self.identical_keys[pos] == keys
        return same

    def history_free(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Whether the artist and the cluster of ``items[k]`` are both absent from ``users[k]``'s history."""
        return (
            ~self.user_artists[users, self.artist[items]]
            & ~self.user_clusters[users, self.cluster[items]]
        )


def gather_ranges(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated ``arange(starts[k], ends[k])``; returns (indices, row of each index)."""
    offsets, flat = range_positions(starts, ends)
    return flat, row_ids(np.diff(offsets))


def unique_rows(
    row: np.ndarray, items: np.ndarray, n_rows: int, n_items: int
) -> tuple[np.ndarray, np.ndarray]:
    """CSR of the sorted unique items of every row."""
    keys = np.unique(row.astype(np.int64) * n_items + items)
    offsets = offsets_from_lengths(np.bincount(keys // n_items, minlength=n_rows))
    return offsets, (keys % n_items).astype(np.int32)


def csr_by(labels: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(labels, kind="stable")
    return offsets_from_lengths(np.bincount(labels, minlength=n_groups)), order.astype(np.int32)


def _identical_pairs(
    unit: np.ndarray, cluster_offsets: np.ndarray, cluster_items: np.ndarray
) -> np.ndarray:
    """Sorted keys i * I + j (i != j) of same-cluster pairs with cosine >= 1 - tol."""
    n_items = len(unit)
    keys = [np.zeros(0, np.int64)]
    for c in range(len(cluster_offsets) - 1):
        members = cluster_items[cluster_offsets[c] : cluster_offsets[c + 1]].astype(np.int64)
        x = unit[members]
        for s in range(0, len(members), 2048):
            r, col = np.nonzero(x[s : s + 2048] @ x.T >= 1 - IDENTICAL_TOL)
            r += s
            keys.append(members[r[r != col]] * n_items + members[col[r != col]])
    return np.unique(np.concatenate(keys))


def _prefix_profiles(split: TrainTestSplit, n_items: int) -> dict[str, np.ndarray]:
    """s5 next-basket profiles and s6 hide-one profiles of every user."""
    ubo, bio = split.user_basket_offsets, split.basket_item_offsets
    basket_user = np.repeat(np.arange(len(split.user_ids)), np.diff(ubo))
    first_item = bio[ubo[basket_user]]  # (B,) first training item row of the basket's user
    local = np.arange(len(basket_user)) - ubo[basket_user]

    nb = np.flatnonzero(local >= 1)  # basket b+1 of every next-basket profile
    idx, row = gather_ranges(first_item[nb], bio[nb])
    next_offsets, next_items = unique_rows(row, split.basket_items[idx], len(nb), n_items)

    big = np.flatnonzero(np.diff(bio) >= 2)
    hidden_rows, hb = gather_ranges(bio[big], bio[big + 1])
    hb = big[hb]  # basket of every hidden item
    hidden = split.basket_items[hidden_rows]
    idx, row = gather_ranges(first_item[hb], bio[hb + 1])
    keep = split.basket_items[idx] != hidden[row]
    hide_offsets, hide_items = unique_rows(
        row[keep], split.basket_items[idx][keep], len(hb), n_items
    )
    return {
        "next_offsets": next_offsets,
        "next_items": next_items,
        "next_user": basket_user[nb].astype(np.int32),
        "next_basket": nb.astype(np.int64),
        "hide_offsets": hide_offsets,
        "hide_items": hide_items,
        "hide_user": basket_user[hb].astype(np.int32),
        "hide_item": hidden.astype(np.int32),
        "hide_basket": hb.astype(np.int64),
    }


def build_context(
    split: TrainTestSplit,
    artist_of_item: np.ndarray,
    cluster_of_item: np.ndarray,
    pca_vectors: np.ndarray,
    config: SamplingConfig | None = None,
) -> SamplingContext:
    """Precompute every lookup the strategies need, from training baskets only.

    ``artist_of_item`` (I,) int: artist of each catalogue item (-1: unknown, each
    such item gets an artist of its own); ``cluster_of_item`` (I,) int >= 0;
    ``pca_vectors`` (I, d) for the cosine similarity.
    """
    n_items = split.n_items
    for name, arr in (("artist_of_item", artist_of_item), ("cluster_of_item", cluster_of_item)):
        if len(arr) != n_items:
            raise ValueError(f"{name} has {len(arr)} entries for {n_items} catalogue items")
    if len(pca_vectors) != n_items:
        raise ValueError(f"pca_vectors has {len(pca_vectors)} rows for {n_items} catalogue items")
    cluster = np.asarray(cluster_of_item, np.int64)
    if n_items and cluster.min() < 0:
        raise ValueError("cluster_of_item has negative labels")
    raw_artist = np.asarray(artist_of_item, np.int64).copy()
    unknown = np.flatnonzero(raw_artist < 0)
    raw_artist[unknown] = raw_artist.max(initial=0) + 1 + np.arange(len(unknown))
    _, artist = np.unique(raw_artist, return_inverse=True)
    n_artists, n_clusters = int(artist.max(initial=-1)) + 1, int(cluster.max(initial=-1)) + 1

    unit = np.asarray(pca_vectors, np.float32).copy()
    norms = np.linalg.norm(unit, axis=1, keepdims=True)
    unit /= np.where(norms > 0, norms, 1)
    cluster_offsets, cluster_items = csr_by(cluster, n_clusters)
    artist_offsets, artist_items = csr_by(artist, n_artists)
    artist_rank = np.empty(n_items, np.int64)
    artist_rank[artist_items] = np.arange(n_items) - artist_offsets[artist[artist_items]]

    profile_offsets, profile_items = training_profiles(split)
    n_users = len(split.user_ids)
    prof_user = np.repeat(np.arange(n_users), np.diff(profile_offsets))
    keys = prof_user * n_items + profile_items
    bits = np.zeros((n_users * n_items + 7) // 8, np.uint8)
    np.bitwise_or.at(bits, keys >> 3, (1 << (keys & 7)).astype(np.uint8))
    user_artists = np.zeros((n_users, n_artists), bool)
    user_artists[prof_user, artist[profile_items]] = True
    user_clusters = np.zeros((n_users, n_clusters), bool)
    user_clusters[prof_user, cluster[profile_items]] = True

    # items whose artist or cluster is in the history, by inclusion-exclusion
    both = np.bincount(cluster * n_artists + artist, minlength=n_clusters * n_artists)
    both = both.reshape(n_clusters, n_artists).astype(np.float64)
    blocked = (
        user_clusters @ np.bincount(cluster, minlength=n_clusters).astype(np.float64)
        + user_artists @ np.bincount(artist, minlength=n_artists).astype(np.float64)
        - ((user_clusters.astype(np.float64) @ both) * user_artists).sum(axis=1)
    )
    n_negatives = n_items - np.rint(blocked).astype(np.int64)
    rare = np.flatnonzero((n_negatives > 0) & (n_negatives < _EXPLICIT_BELOW * n_items))
    neg_counts = np.zeros(n_users, np.int64)
    neg_items = [np.zeros(0, np.int32)]
    for s in range(0, len(rare), 256):
        sub = rare[s : s + 256]
        free = ~user_artists[sub][:, artist] & ~user_clusters[sub][:, cluster]
        r, col = np.nonzero(free)
        neg_counts[sub] = np.bincount(r, minlength=len(sub))
        neg_items.append(col.astype(np.int32))

    ua_user, ua_artist = np.nonzero(user_artists)
    idx, row = gather_ranges(artist_offsets[ua_artist], artist_offsets[ua_artist + 1])
    s3_item, s3_user = artist_items[idx], ua_user[row]
    keep = user_clusters[s3_user, cluster[s3_item]] & ~_bit_lookup(
        bits, s3_user * n_items + s3_item
    )
    ctx = SamplingContext(
        n_items=n_items,
        n_users=n_users,
        artist=artist.astype(np.int32),
        cluster=cluster.astype(np.int32),
        unit_vectors=unit,
        identical_keys=_identical_pairs(unit, cluster_offsets, cluster_items),
        cluster_offsets=cluster_offsets,
        cluster_items=cluster_items,
        nonempty_clusters=np.flatnonzero(np.diff(cluster_offsets) > 0).astype(np.int32),
        artist_offsets=artist_offsets,
        artist_items=artist_items,
        artist_rank=artist_rank,
        profile_offsets=profile_offsets,
        profile_items=profile_items,
        profile_bits=bits,
        user_artists=user_artists,
        user_clusters=user_clusters,
        n_negatives=n_negatives,
        negative_offsets=offsets_from_lengths(neg_counts),
        negative_items=np.concatenate(neg_items),
        s3_offsets=offsets_from_lengths(np.bincount(s3_user[keep], minlength=n_users)),
        s3_items=s3_item[keep].astype(np.int32),
        basket_item_offsets=split.basket_item_offsets,
        basket_items=split.basket_items,
        config=config or SamplingConfig(),
        **_prefix_profiles(split, n_items),
    )
    logger.info(
        "sampling context: %d users, %d items, %d artists, %d clusters, %d identical pairs",
        n_users,
        n_items,
        n_artists,
        n_clusters,
        len(ctx.identical_keys) // 2,
    )
    return ctx
