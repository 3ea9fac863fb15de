"""The six triple-sampling guidelines of CuratorNet and the uniform BPR baseline.

Definitions follow ``REFERENCE_FACTS.md`` ("Triple sampling"). Every strategy has
the signature :data:`StrategyFn`: ``(ctx, n, rng) -> CandidateTriples``; it draws
about ``n`` candidate triples in numpy batches (no Python loop per triple) and
returns those that satisfy its definition. Deduplication, hashing and the
validation split happen in :func:`curatornet_pipeline.core.sampling.triples.sample_strategy`.

Choices the reference leaves open, made here:

- Profiles are sets: sorted unique item indices.
- s1, s3, random draw the user uniformly; s2 draws the item uniformly; s4 draws
  the profile item uniformly among items whose artist has another item.
- s5 and s6 draw a user, then one of the user's baskets (s6: of >= 2 items), then the
  item, each uniformly, as the reference does; ``basket_weighting="pair"`` draws the pair
  uniformly instead (docs/guidelines.md, "Weighting of the basket guidelines").
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
from dataclasses import dataclass

import numpy as np

from curatornet_pipeline.core.sampling.context import (
    SamplingContext,
)

logger = logging.getLogger(__name__)


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


def _profile_triples(
    ctx: SamplingContext,
    n: int,
    rng: np.random.Generator,
    draw_negative: Callable[[np.ndarray], np.ndarray],
) -> CandidateTriples:
    """Profile = the user's history; positive in it; ``draw_negative(positives)`` outside it."""
    sizes = np.diff(ctx.profile_offsets)
    users = np.flatnonzero((sizes > 0) & (sizes < ctx.n_items))
    if len(users) == 0:
        return _empty(ctx.profile_offsets, ctx.profile_items)
    u = users[rng.integers(0, len(users), n)]
    pos = _uniform_in(ctx.profile_offsets, u, ctx.profile_items, rng)
    neg, ok = _fill(
        n,
        lambda r: draw_negative(pos[r]),
        lambda r, v: ~ctx.in_profile(u[r], v) & ~ctx.identical(pos[r], v),
        ctx.config.max_negative_redraws,
    )
    return _result(ctx.profile_offsets, ctx.profile_items, u, pos, neg, u, ok, n)


def s1_user_profile(ctx: SamplingContext, n: int, rng: np.random.Generator) -> CandidateTriples:
    """Profile = the user's history; positive in it; negative outside it (hard with prob. 0.6)."""
    return _profile_triples(ctx, n, rng, lambda p: _cluster_negative(ctx, p, rng))


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
    return _profile_triples(
        ctx, n, rng, lambda p: rng.integers(0, ctx.n_items, len(p), dtype=np.int32)
    )


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
