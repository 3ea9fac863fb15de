"""The generative model of the synthetic dataset (:mod:`.synth` writes its files): styles,
artists and items in upload order, users' tastes, the purchase counts and baskets fixed
first, then the items that taste, stock and time choose for every purchase slot. See
``docs/synthetic-data.md``.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from curatornet_pipeline.core.data.synth_images import jitter_style, make_styles

if TYPE_CHECKING:
    from curatornet_pipeline.core.data.synth import ScaleSpec

T0 = 1356998400  # 2013-01-01 00:00 UTC, earliest upload
DAY = 86400


@dataclass(frozen=True)
class World:
    styles: list[dict]
    artist_style: np.ndarray  # (A,) int style of each artist
    artist_params: list[dict]  # (A,) the artist's jittered style, what images render
    item_artist: np.ndarray  # (N,) int, items in upload order
    item_unique: np.ndarray  # (N,) bool, one-of-a-kind (else a print)
    item_upload: np.ndarray  # (N,) int64 unix seconds, non-decreasing
    user_styles: np.ndarray  # (U, K) float, taste over styles, rows sum to 1
    user_artists: list[np.ndarray]  # (U,) favourite artist indices


@dataclass(frozen=True)
class Plan:
    user_baskets: np.ndarray  # (U+1,) offsets into the basket axis, time order per user
    basket_user: np.ndarray  # (B,) int
    basket_time: np.ndarray  # (B,) int64, strictly increasing within a user
    basket_size: np.ndarray  # (B,) int


def _round_to_total(weights: np.ndarray, total: int) -> np.ndarray:
    """Non-negative integers proportional to ``weights`` summing to ``total`` (largest remainder)."""
    raw = np.asarray(weights, dtype=float) / np.sum(weights) * total
    out = np.floor(raw).astype(np.int64)
    out[np.argsort(-(raw - out), kind="stable")[: total - out.sum()]] += 1
    return out


def _adjust_to_total(x: np.ndarray, total: int, lo: np.ndarray, hi: np.ndarray, rng) -> None:
    """Add or remove 1 at random entries (within ``lo..hi``) until ``x`` sums to ``total``."""
    while (diff := total - int(x.sum())) != 0:
        ok = np.flatnonzero(x < hi if diff > 0 else x > lo)
        if len(ok) == 0:
            raise ValueError(f"cannot reach a total of {total} within the bounds")
        x[rng.choice(ok, min(abs(diff), len(ok)), replace=False)] += np.sign(diff)


def world(spec: "ScaleSpec", seed: int) -> World:
    """Styles, artists, items (in upload order) and user tastes."""
    rng = np.random.default_rng([seed, 0])
    K, A, N, U = spec.n_styles, spec.n_artists, spec.n_items, spec.n_users
    styles = make_styles(K, rng)
    style_pop = 1.0 / np.sqrt(np.arange(1, K + 1))  # some styles are more common
    extra = rng.choice(K, max(A - K, 0), p=style_pop / style_pop.sum())
    artist_style = rng.permutation(np.concatenate([np.arange(min(A, K)), extra]))
    artist_params = [jitter_style(styles[s], rng) for s in artist_style]
    per_artist = 1 + _round_to_total(rng.lognormal(0, 1.0, A), N - A)
    item_artist = np.repeat(np.arange(A), per_artist)
    span = spec.years * 365 * DAY
    # a quarter of the artists are there at launch, the others join over time
    start = T0 + np.maximum(rng.uniform(-0.3, 0.8, A), 0)[item_artist] * span
    upload = (start + rng.random(N) * (T0 + span - start)).astype(np.int64)
    unique = np.zeros(N, dtype=bool)
    unique[rng.choice(N, round(spec.one_of_a_kind_share * N), replace=False)] = True
    order = np.argsort(upload, kind="stable")

    item_style_count = np.bincount(artist_style[item_artist], minlength=K).astype(float)
    user_styles = np.zeros((U, K))
    user_artists = []
    for u in range(U):
        n_pref = min(int(rng.choice([1, 2, 3], p=[0.4, 0.4, 0.2])), K)
        pref = rng.choice(K, n_pref, replace=False, p=item_style_count / item_style_count.sum())
        user_styles[u, pref] = rng.dirichlet(np.full(n_pref, 2.0))
        candidates = np.flatnonzero(np.isin(artist_style, pref))
        w = per_artist[candidates] / per_artist[candidates].sum()
        n_fav = min(int(rng.integers(1, 4)), len(candidates))
        user_artists.append(np.sort(rng.choice(candidates, n_fav, replace=False, p=w)))
    return World(
        styles, artist_style, artist_params, item_artist[order], unique[order], upload[order],
        user_styles, user_artists,
    )  # fmt: skip


def user_counts(spec: "ScaleSpec", rng: np.random.Generator) -> np.ndarray:
    """(U,) purchases per user: one heaviest buyer, 4 runners-up, many singles, a Pareto tail."""
    U, P = spec.n_users, spec.n_purchases
    top5 = round(spec.top5_share * P)
    runners = _round_to_total(np.array([1.0, 0.8, 0.65, 0.55]), top5 - spec.max_user_purchases)
    n_single = int(np.ceil(spec.single_purchase_share * U))
    n_rest, rest_total, cap = U - 5 - n_single, P - top5 - n_single, int(runners.min())
    if not (runners.max() <= spec.max_user_purchases and 2 * n_rest <= rest_total <= cap * n_rest):
        raise ValueError(f"scale counts are inconsistent: {n_rest} buyers for {rest_total} items")
    shape = ((np.arange(n_rest) + 0.5) / n_rest) ** (-1 / spec.tail_exponent) - 1

    def tail(s: float) -> np.ndarray:
        return np.minimum(2 + np.floor(s * shape), cap).astype(np.int64)

    lo, hi = 0.0, 1.0
    while tail(hi).sum() < rest_total:
        hi *= 2
    for _ in range(60):
        lo, hi = (
            (lo, (lo + hi) / 2) if tail((lo + hi) / 2).sum() >= rest_total else ((lo + hi) / 2, hi)
        )
    rest = tail(hi)
    _adjust_to_total(rest, rest_total, np.full(n_rest, 2), np.full(n_rest, cap), rng)
    counts = np.concatenate([[spec.max_user_purchases], runners, np.ones(n_single, int), rest])
    return rng.permutation(counts)


def _composition(total: int, parts: int, cap: int, rng: np.random.Generator) -> np.ndarray:
    """``parts`` random sizes in ``1..cap`` summing to ``total``."""
    if not 1 <= parts <= total <= parts * cap:
        raise ValueError(f"cannot split {total} items into {parts} baskets of at most {cap}")
    sizes = 1 + rng.multinomial(total - parts, rng.dirichlet(np.full(parts, 0.7)))
    while (excess := int(np.maximum(sizes - cap, 0).sum())) > 0:
        sizes = np.minimum(sizes, cap)
        sizes += rng.multinomial(excess, (cap - sizes) / (cap - sizes).sum())
    return sizes


def plan(spec: "ScaleSpec", counts: np.ndarray, opening: int, rng: np.random.Generator) -> Plan:
    """Baskets per user, their sizes (one of exactly ``max_basket``) and timestamps.

    Purchases run from ``opening`` to 3 months after the last upload, denser later on
    (the store grows).
    """
    U, B, M = len(counts), spec.n_baskets, spec.max_basket
    if not U <= B <= counts.sum():
        raise ValueError(f"{B} baskets cannot hold {counts.sum()} purchases of {U} users")
    least = -(-counts // (M - 1))  # baskets below the maximum size hold at most M - 1
    n_b = np.maximum(1 + rng.binomial(counts - 1, (B - U) / max(int((counts - 1).sum()), 1)), least)
    _adjust_to_total(n_b, B, least, counts, rng)
    ok = (counts - n_b + 1 >= M) & (counts - M <= (n_b - 1) * (M - 1)) & ((n_b > 1) | (counts == M))
    if not ok.any():
        raise ValueError(f"no user can hold a basket of {M} items")
    big = int(np.flatnonzero(ok)[np.argmax(counts[ok])])
    sizes, times = [], []
    end = T0 + (spec.years + 0.25) * 365 * DAY
    for u in range(U):
        if u == big:
            rest = _composition(counts[u] - M, n_b[u] - 1, M - 1, rng) if n_b[u] > 1 else []
            s = rng.permutation(np.concatenate([[M], rest]).astype(np.int64))
        else:
            s = _composition(int(counts[u]), int(n_b[u]), M - 1, rng)
        t = np.sort(opening + (end - opening) * np.sqrt(rng.random(n_b[u]))).astype(np.int64)
        steps = np.arange(n_b[u])
        sizes.append(s)
        times.append(np.maximum.accumulate(t - steps) + steps)  # strictly increasing
    return Plan(
        np.concatenate([[0], np.cumsum(n_b)]), np.repeat(np.arange(U), n_b),
        np.concatenate(times), np.concatenate(sizes),
    )  # fmt: skip


UNIQUE, NEW_PRINT, REPEAT_PRINT = 0, 1, 2


def choose(
    spec: "ScaleSpec", world: World, plan: Plan, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fill every purchase slot with an item in stock, weighted by the buyer's taste.

    Slot kinds are fixed first so the one-of-a-kind share and the number of items sold
    are exact: a one-of-a-kind item in stock, a print never sold before, or a print sold
    before (popular prints sell again). Returns (basket order, item offsets, items).
    """
    P, B = int(plan.basket_size.sum()), len(plan.basket_size)
    offsets = np.concatenate([[0], np.cumsum(plan.basket_size)])
    n_unique = round(spec.one_of_a_kind_purchase_share * P)
    n_new = spec.n_items_sold - n_unique
    n_repeat = P - n_unique - n_new
    k = spec.n_self_repeats
    if not (1 <= n_new and 0 <= n_repeat and k <= min(n_new, n_repeat)):
        raise ValueError(f"n_items_sold={spec.n_items_sold} is inconsistent with {P} purchases")
    kind = np.full(P, -1, dtype=np.int8)
    link = np.full(P, -1)
    n_b = np.diff(plan.user_baskets)
    for u in rng.choice(np.flatnonzero(n_b >= 2), k, replace=False):
        src, dst = offsets[plan.user_baskets[u]], offsets[plan.user_baskets[u + 1] - 1]
        kind[src], kind[dst], link[dst] = NEW_PRINT, REPEAT_PRINT, src
    fixed = kind >= 0
    kind[~fixed] = rng.permutation(
        np.repeat([UNIQUE, NEW_PRINT, REPEAT_PRINT], [n_unique, n_new - k, n_repeat - k])
    )
    basket_order = np.lexsort((np.arange(B), plan.basket_time))
    slot_order = np.concatenate([np.arange(offsets[b], offsets[b + 1]) for b in basket_order])

    N, K = len(world.item_artist), spec.n_styles
    item_style = world.artist_style[world.item_artist]
    sold = np.zeros(N, dtype=np.int64)
    chosen = np.full(P, -1)
    current, n_up, w = -1, 0, None
    history: list[list[int]] = [[] for _ in range(spec.n_users)]  # a repeat only when linked

    def pool(kd: int, exclude: list[int]) -> np.ndarray:
        s, prints = sold[:n_up], ~world.item_unique[:n_up]
        if kd == UNIQUE:
            p = w * (world.item_unique[:n_up] & (s == 0))
        elif kd == NEW_PRINT:
            p = w * (prints & (s == 0))
        else:
            p = w * (prints & (s > 0)) * (1 + s)
        p[exclude] = 0
        return p

    for pos, slot in enumerate(slot_order):
        b = np.searchsorted(offsets, slot, side="right") - 1
        if b != current:
            current, u = b, plan.basket_user[b]
            bought = history[u]  # this basket and the buyer's earlier ones: no repeats
            n_up = int(np.searchsorted(world.item_upload, plan.basket_time[b], side="left"))
            w = (1 - spec.taste_noise) * K * world.user_styles[u, item_style[:n_up]]
            w = (w + spec.taste_noise) * np.where(
                np.isin(world.item_artist[:n_up], world.user_artists[u]), spec.artist_boost, 1.0
            )
        if link[slot] >= 0 and not world.item_unique[chosen[link[slot]]]:
            item = int(chosen[link[slot]])
        else:
            p = pool(kind[slot], bought)
            if p.sum() <= 0:  # out of stock for this kind: trade kinds with a later slot
                for other in slot_order[pos + 1 :]:
                    if not fixed[other] and kind[other] != kind[slot]:
                        if pool(kind[other], bought).sum() > 0:
                            kind[slot], kind[other] = kind[other], kind[slot]
                            break
                else:
                    raise ValueError(f"stock exhausted at basket {b}: too few items for the scale")
                p = pool(kind[slot], bought)
            c = np.cumsum(p)
            item = int(np.searchsorted(c, rng.random() * c[-1], side="right"))
        chosen[slot], sold[item] = item, sold[item] + 1
        bought.append(item)
    return basket_order, offsets, chosen
