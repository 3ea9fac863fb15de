"""The six triple-sampling guidelines of CuratorNet and the uniform BPR baseline.

Definitions follow ``REFERENCE_FACTS.md`` ("Triple sampling"). Every strategy has
the signature :data:`StrategyFn`: ``(ctx, n, rng) -> CandidateTriples``; it draws
about ``n`` candidate triples in numpy batches (no Python loop per triple) and
returns those that satisfy its definition. Deduplication, hashing and the
validation split happen in :func:`curatornet_pipeline.core.sampling.sample_strategy`.

Choices the reference leaves open, made here:

- Profiles are sets: sorted unique item indices.
- s1, s3, random draw the user uniformly; s2 draws the item uniformly; s4 draws
  the profile item uniformly among items whose artist has another item.
- s5 and s6 weight users as the reference does (``basket_weighting="user"``):
  s5 draws a user uniformly among users with a next-basket profile, then the
  basket b uniformly among that user's, then the positive uniformly in basket
  b+1; s6 draws a user, then one of the user's baskets with >= 2 items, then the
  hidden item, each uniformly. ``basket_weighting="pair"`` draws the (user, b)
  profile or the (basket, hidden item) pair uniformly instead, which lets the
  heaviest buyers (hundreds of baskets) dominate both sets.
- s5: the positive is any item of basket b+1 (a repeat purchase may lie in the
  profile, as the definition allows).
- s6: the hidden item is removed from the profile entirely, also when it was
  bought in an earlier basket, so the positive is never in its own profile.
- s3, s5, s6: "the user's history" is the user's whole training history.
- A negative that breaks its rule is redrawn (at most ``max_negative_redraws``
  times); for s4 every draw counts as one of the ``max_visual_tries`` tries.
  A triple still without a valid negative is dropped.
- Visually identical pairs (``p == n`` or same cluster and cosine >= 1 - 1e-6)
  are never returned, by any strategy.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from curatornet_pipeline.core.ragged import offsets_from_lengths
from curatornet_pipeline.core.split import training_profiles
from curatornet_pipeline.core.types import TrainTestSplit

logger = logging.getLogger(__name__)

IDENTICAL_TOL = 1e-6  # cosine >= 1 - IDENTICAL_TOL in the same cluster counts as identical
_EXPLICIT_BELOW = 0.25  # users whose valid negatives are rarer than this get an explicit list


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
    s3_offsets: (
        np.ndarray
    )  # (U+1,) int64 s3 positives: outside the profile, artist and cluster in it
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


@dataclass(frozen=True)
class CandidateTriples:
    """Valid candidate triples of one strategy, before deduplication.

    The profile table depends only on the context, so it is the same on every call.
    """

    profile_offsets: np.ndarray  # (P+1,) int64 candidate profiles of the strategy
    profile_items: np.ndarray  # (sum,) int32
    profile: np.ndarray  # (N,) int64 index into the profiles above
    positive: np.ndarray  # (N,) int32
    negative: np.ndarray  # (N,) int32
    user: np.ndarray  # (N,) int32, -1 for artificial profiles
    n_rejected: int = 0  # draws dropped by the strategy's own rules


StrategyFn = Callable[[SamplingContext, int, np.random.Generator], CandidateTriples]


# ----------------------------------------------------------------------------- helpers


def _bit_lookup(bits: np.ndarray, keys: np.ndarray) -> np.ndarray:
    return ((bits[keys >> 3] >> (keys & 7).astype(np.uint8)) & 1).astype(bool)


def gather_ranges(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated ``arange(starts[k], ends[k])``; returns (indices, row of each index)."""
    lengths = (ends - starts).astype(np.int64)
    offs = offsets_from_lengths(lengths)
    row = np.repeat(np.arange(len(lengths)), lengths)
    return np.arange(offs[-1]) - offs[:-1][row] + starts[row], row


def _unique_rows(
    row: np.ndarray, items: np.ndarray, n_rows: int, n_items: int
) -> tuple[np.ndarray, np.ndarray]:
    """CSR of the sorted unique items of every row."""
    keys = np.unique(row.astype(np.int64) * n_items + items)
    return offsets_from_lengths(np.bincount(keys // n_items, minlength=n_rows)), (
        keys % n_items
    ).astype(np.int32)


def _csr_by(labels: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(labels, kind="stable")
    return offsets_from_lengths(np.bincount(labels, minlength=n_groups)), order.astype(np.int32)


def _uniform_in(
    offsets: np.ndarray, rows: np.ndarray, items: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """One uniform element of CSR row ``rows[k]`` for every k (rows must be non-empty)."""
    start = offsets[rows]
    size = offsets[rows + 1] - start
    return items[start + (rng.random(len(rows)) * size).astype(np.int64)]


def nested_uniform(keys: list[np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` row positions drawn level by level: a uniform value of ``keys[0]``, then a
    uniform value of ``keys[1]`` among its rows, ..., then a uniform row.

    Rows must be sorted so that rows sharing a key (and every earlier key) are
    contiguous, and a key value must not recur in another group of an earlier
    level. With ``keys=[]`` every row is equally likely.
    """
    m = len(keys[0]) if keys else 0
    lo = np.zeros(n, np.int64)
    hi = np.full(n, m if keys else 0, np.int64)
    for key in keys:
        new = np.ones(len(key), bool)
        new[1:] = key[1:] != key[:-1]
        starts = np.append(np.flatnonzero(new), len(key))  # group starts + sentinel
        first = np.searchsorted(starts, lo)
        last = np.searchsorted(starts, hi)  # groups first..last-1 lie in [lo, hi)
        g = first + (rng.random(n) * (last - first)).astype(np.int64)
        lo, hi = starts[g], starts[g + 1]
    return lo + (rng.random(n) * (hi - lo)).astype(np.int64)


def _fill(
    n: int,
    draw: Callable[[np.ndarray], np.ndarray],
    accept: Callable[[np.ndarray, np.ndarray], np.ndarray],
    redraws: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one value per row, redrawing rejected rows up to ``redraws`` times; returns (values, ok)."""
    rows = np.arange(n)
    values = draw(rows)
    ok = accept(rows, values)
    for _ in range(redraws):
        bad = np.flatnonzero(~ok)
        if len(bad) == 0:
            break
        values[bad] = draw(bad)
        ok[bad] = accept(bad, values[bad])
    return values, ok


def _cluster_negative(
    ctx: SamplingContext, positive: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Hard negative from the positive's cluster with prob. p, else from a uniform cluster."""
    n = len(positive)
    hard = rng.random(n) < ctx.config.hard_negative_prob
    uniform = ctx.nonempty_clusters[rng.integers(0, len(ctx.nonempty_clusters), n)]
    clusters = np.where(hard, ctx.cluster[positive], uniform)
    return _uniform_in(ctx.cluster_offsets, clusters, ctx.cluster_items, rng)


def _history_negative(
    ctx: SamplingContext, users: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Uniform item whose artist and cluster are absent from the user's history; (items, ok)."""
    out = np.zeros(len(users), np.int32)
    ok = np.ones(len(users), bool)
    explicit = ctx.negative_offsets[users + 1] > ctx.negative_offsets[users]
    rows = np.flatnonzero(explicit)
    out[rows] = _uniform_in(ctx.negative_offsets, users[rows], ctx.negative_items, rng)
    rows = np.flatnonzero(~explicit)
    u = users[rows]
    values, good = _fill(
        len(rows),
        lambda r: rng.integers(0, ctx.n_items, len(r), dtype=np.int32),
        lambda r, v: ctx.history_free(u[r], v),
        ctx.config.max_negative_redraws,
    )
    out[rows], ok[rows] = values, good
    return out, ok


def cosine(ctx: SamplingContext, a: np.ndarray, b: np.ndarray, chunk: int = 65_536) -> np.ndarray:
    """Cosine similarity of item pairs on the PCA vectors, in chunks to bound memory."""
    out = np.empty(len(a), np.float32)
    for s in range(0, len(a), chunk):
        x = ctx.unit_vectors[a[s : s + chunk]]
        x *= ctx.unit_vectors[b[s : s + chunk]]
        out[s : s + chunk] = x.sum(axis=1)
    return out


def _result(offsets, items, profile, positive, negative, user, ok, n_drawn) -> CandidateTriples:
    return CandidateTriples(
        profile_offsets=offsets,
        profile_items=items,
        profile=profile[ok].astype(np.int64),
        positive=positive[ok].astype(np.int32),
        negative=negative[ok].astype(np.int32),
        user=user[ok].astype(np.int32),
        n_rejected=int(n_drawn - ok.sum()),
    )


def _singles(ctx: SamplingContext) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(ctx.n_items + 1, dtype=np.int64), np.arange(ctx.n_items, dtype=np.int32)


def visually_acceptable(
    ctx: SamplingContext,
    q: np.ndarray,
    p: np.ndarray,
    n: np.ndarray,
    s_qp: np.ndarray | None = None,
) -> np.ndarray:
    """The s4 rule: accept if c(q)=c(p)!=c(n); reject if c(q)=c(n)!=c(p); else s(q,p) > s(q,n) + margin."""
    cq, cp, cn = ctx.cluster[q], ctx.cluster[p], ctx.cluster[n]
    sure = (cq == cp) & (cp != cn)
    never = (cq == cn) & (cn != cp)
    out = sure.copy()
    undecided = np.flatnonzero(~sure & ~never)
    if len(undecided):
        sqp = cosine(ctx, q[undecided], p[undecided]) if s_qp is None else s_qp[undecided]
        sqn = cosine(ctx, q[undecided], n[undecided])
        out[undecided] = sqp > sqn + np.float32(ctx.config.visual_margin)
    return out


# ----------------------------------------------------------------------------- strategies


def _empty(offsets: np.ndarray, items: np.ndarray) -> CandidateTriples:
    none = np.zeros(0, np.int32)
    return CandidateTriples(offsets, items, none.astype(np.int64), none, none, none, 0)


def _real_users(ctx: SamplingContext) -> np.ndarray:
    sizes = np.diff(ctx.profile_offsets)
    return np.flatnonzero((sizes > 0) & (sizes < ctx.n_items))


def s1_user_profile(ctx: SamplingContext, n: int, rng: np.random.Generator) -> CandidateTriples:
    """Profile = the user's history; positive in it; negative outside it (hard with prob. 0.6)."""
    users = _real_users(ctx)
    if len(users) == 0:
        return _empty(ctx.profile_offsets, ctx.profile_items)
    u = users[rng.integers(0, len(users), n)]
    pos = _uniform_in(ctx.profile_offsets, u, ctx.profile_items, rng)
    neg, ok = _fill(
        n,
        lambda r: _cluster_negative(ctx, pos[r], rng),
        lambda r, v: ~ctx.in_profile(u[r], v) & ~ctx.identical(pos[r], v),
        ctx.config.max_negative_redraws,
    )
    return _result(ctx.profile_offsets, ctx.profile_items, u, pos, neg, u, ok, n)


def s2_single_item(ctx: SamplingContext, n: int, rng: np.random.Generator) -> CandidateTriples:
    """Profile (i,); positive i; negative any other item (hard with prob. 0.6)."""
    offsets, items = _singles(ctx)
    if ctx.n_items < 2:
        return _empty(offsets, items)
    q = rng.integers(0, ctx.n_items, n, dtype=np.int32)
    neg, ok = _fill(
        n,
        lambda r: _cluster_negative(ctx, q[r], rng),
        lambda r, v: ~ctx.identical(q[r], v),
        ctx.config.max_negative_redraws,
    )
    return _result(offsets, items, q, q, neg, np.full(n, -1), ok, n)


def s3_artist_cluster(ctx: SamplingContext, n: int, rng: np.random.Generator) -> CandidateTriples:
    """Profile = history; positive outside it sharing artist and cluster; negative sharing neither."""
    sizes = np.diff(ctx.s3_offsets)
    users = np.flatnonzero((sizes > 0) & (ctx.n_negatives > 0))
    if len(users) == 0:
        return _empty(ctx.profile_offsets, ctx.profile_items)
    u = users[rng.integers(0, len(users), n)]
    pos = _uniform_in(ctx.s3_offsets, u, ctx.s3_items, rng)
    neg, ok = _history_negative(ctx, u, rng)
    return _result(ctx.profile_offsets, ctx.profile_items, u, pos, neg, u, ok, n)


def s4_same_artist(ctx: SamplingContext, n: int, rng: np.random.Generator) -> CandidateTriples:
    """Profile (q,); positive another item by q's artist; negative by another artist, visually acceptable."""
    offsets, items = _singles(ctx)
    artist_sizes = np.diff(ctx.artist_offsets)
    candidates = np.flatnonzero(artist_sizes[ctx.artist] >= 2)
    if len(candidates) == 0:
        return _empty(offsets, items)
    q = candidates[rng.integers(0, len(candidates), n)]
    a = ctx.artist[q]
    k = (rng.random(n) * (artist_sizes[a] - 1)).astype(np.int64)
    k += k >= ctx.artist_rank[q]  # skip q itself
    p = ctx.artist_items[ctx.artist_offsets[a] + k]
    s_qp = cosine(ctx, q, p)

    def accept(r: np.ndarray, v: np.ndarray) -> np.ndarray:
        ok = (ctx.artist[v] != a[r]) & ~ctx.identical(p[r], v)
        rows = np.flatnonzero(ok)
        ok[rows] = visually_acceptable(ctx, q[r[rows]], p[r[rows]], v[rows], s_qp[r[rows]])
        return ok

    neg, ok = _fill(
        n, lambda r: _cluster_negative(ctx, p[r], rng), accept, ctx.config.max_visual_tries - 1
    )
    return _result(offsets, items, q, p, neg, np.full(n, -1), ok, n)


def s5_next_basket(ctx: SamplingContext, n: int, rng: np.random.Generator) -> CandidateTriples:
    """Profile = baskets 1..b; positive in basket b+1; negative with artist and cluster absent from history."""
    profiles = np.flatnonzero(ctx.n_negatives[ctx.next_user] > 0)
    if len(profiles) == 0:
        return _empty(ctx.next_offsets, ctx.next_items)
    if ctx.config.basket_weighting == "user":  # profiles are grouped by user, in basket order
        k = profiles[nested_uniform([ctx.next_user[profiles]], n, rng)]
    else:
        k = profiles[rng.integers(0, len(profiles), n)]
    u = ctx.next_user[k]
    pos = _uniform_in(ctx.basket_item_offsets, ctx.next_basket[k], ctx.basket_items, rng)
    neg, ok = _history_negative(ctx, u, rng)
    return _result(ctx.next_offsets, ctx.next_items, k, pos, neg, u, ok, n)


def s6_hide_one(ctx: SamplingContext, n: int, rng: np.random.Generator) -> CandidateTriples:
    """Profile = baskets up to b minus one item of basket b (size >= 2); positive = that item."""
    profiles = np.flatnonzero(ctx.n_negatives[ctx.hide_user] > 0)
    if len(profiles) == 0:
        return _empty(ctx.hide_offsets, ctx.hide_items)
    if ctx.config.basket_weighting == "user":  # rows grouped by user, then basket
        keys = [ctx.hide_user[profiles], ctx.hide_basket[profiles]]
        k = profiles[nested_uniform(keys, n, rng)]
    else:
        k = profiles[rng.integers(0, len(profiles), n)]
    u = ctx.hide_user[k]
    neg, ok = _history_negative(ctx, u, rng)
    return _result(ctx.hide_offsets, ctx.hide_items, k, ctx.hide_item[k], neg, u, ok, n)


def random_triples(ctx: SamplingContext, n: int, rng: np.random.Generator) -> CandidateTriples:
    """Uniform BPR baseline: positive uniform in a user's history, negative uniform outside it."""
    users = _real_users(ctx)
    if len(users) == 0:
        return _empty(ctx.profile_offsets, ctx.profile_items)
    u = users[rng.integers(0, len(users), n)]
    pos = _uniform_in(ctx.profile_offsets, u, ctx.profile_items, rng)
    neg, ok = _fill(
        n,
        lambda r: rng.integers(0, ctx.n_items, len(r), dtype=np.int32),
        lambda r, v: ~ctx.in_profile(u[r], v) & ~ctx.identical(pos[r], v),
        ctx.config.max_negative_redraws,
    )
    return _result(ctx.profile_offsets, ctx.profile_items, u, pos, neg, u, ok, n)


#: One function per name of ``types.STRATEGIES``.
STRATEGY_FUNCS: dict[str, StrategyFn] = {
    "s1_user_profile": s1_user_profile,
    "s2_single_item": s2_single_item,
    "s3_artist_cluster": s3_artist_cluster,
    "s4_same_artist": s4_same_artist,
    "s5_next_basket": s5_next_basket,
    "s6_hide_one": s6_hide_one,
    "random": random_triples,
}


# ----------------------------------------------------------------------------- context


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
    next_offsets, next_items = _unique_rows(row, split.basket_items[idx], len(nb), n_items)

    big = np.flatnonzero(np.diff(bio) >= 2)
    hidden_rows, hb = gather_ranges(bio[big], bio[big + 1])
    hb = big[hb]  # basket of every hidden item
    hidden = split.basket_items[hidden_rows]
    idx, row = gather_ranges(first_item[hb], bio[hb + 1])
    keep = split.basket_items[idx] != hidden[row]
    hide_offsets, hide_items = _unique_rows(
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
    cluster_offsets, cluster_items = _csr_by(cluster, n_clusters)
    artist_offsets, artist_items = _csr_by(artist, n_artists)
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
