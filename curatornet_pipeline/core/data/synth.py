"""Synthetic datasets in the published UGallery format, with procedurally rendered images.

``generate`` writes ``purchases.csv``, ``inventory.csv`` and ``images/<id>.jpg`` exactly as
the real dataset is laid out, plus ``synth_truth.json`` (styles, artists, tastes: not part
of the published format, readers ignore it). The counts that describe the real data
(users, items, artists, purchases, baskets, the heavy tail of purchases per user, the
largest basket, items ever sold, the share of one-of-a-kind items) are fixed first and hit
exactly; taste, stock and time then decide *which* item fills each purchase slot. See
``docs/synthetic-data.md`` for the generative model.

With ``vectors`` it also writes ``resnet_embeddings.npy``, the published file of image
vectors, shaped like pooled post-ReLU ResNet-50 outputs (:mod:`.synth_vectors`): the
arithmetic that real vectors bring to training (sparse, non-negative inputs; subnormal
floats in the backward pass) then shows on synthetic data.
"""

import argparse
import ast
import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from curatornet_pipeline.core.data.synth_images import jitter_style, jpeg_bytes, make_styles, render
from curatornet_pipeline.core.data.synth_vectors import resnet_like_vectors, write_published_vectors

logger = logging.getLogger(__name__)

T0 = 1356998400  # 2013-01-01 00:00 UTC, earliest upload
DAY = 86400
TRUTH_FILE = "synth_truth.json"


@dataclass(frozen=True)
class ScaleSpec:
    """Target counts of one scale; ``generate`` hits every count exactly."""

    n_users: int
    n_items: int
    n_artists: int
    n_styles: int  # visual styles; several artists share one
    n_purchases: int  # purchased items, summed over baskets
    n_baskets: int  # (user, timestamp) baskets
    max_user_purchases: int  # the heaviest buyer
    top5_share: float  # share of purchases held by the 5 heaviest buyers
    single_purchase_share: float  # users with exactly one purchase (> 0.5: median 1)
    tail_exponent: float  # Pareto exponent of the other buyers' counts (sets the std)
    max_basket: int  # exactly one basket has this size, all others are smaller
    one_of_a_kind_share: float  # of the inventory; the rest are prints, sold many times
    one_of_a_kind_purchase_share: float  # of the purchased items
    n_items_sold: int  # distinct items ever sold
    n_self_repeats: int  # users who buy the same print twice
    n_split_baskets: int  # baskets written as two rows sharing a timestamp
    image_size: int  # default pixels per side
    years: float = 5.0  # upload period; purchases run until 3 months after its end
    taste_noise: float = 0.2  # weight of an item outside the user's styles, relative to ~1
    artist_boost: float = 3.0  # weight multiplier of a favourite artist's items


SCALES: dict[str, ScaleSpec] = {
    # about a second, for unit tests: every split and sampling strategy has material
    "tiny": ScaleSpec(
        n_users=80, n_items=250, n_artists=15, n_styles=6, n_purchases=160, n_baskets=115,
        max_user_purchases=14, top5_share=0.25, single_purchase_share=0.55,
        tail_exponent=2.2, max_basket=5, one_of_a_kind_share=0.78,
        one_of_a_kind_purchase_share=0.817, n_items_sold=148, n_self_repeats=2,
        n_split_baskets=2, image_size=32,
    ),
    # the main job's dataset: ResNet-50 embeds all of it in minutes on two CPU cores
    "demo": ScaleSpec(
        n_users=500, n_items=2000, n_artists=120, n_styles=16, n_purchases=1200,
        n_baskets=900, max_user_purchases=40, top5_share=0.10, single_purchase_share=0.6,
        tail_exponent=2.2, max_basket=10, one_of_a_kind_share=0.78,
        one_of_a_kind_purchase_share=0.817, n_items_sold=1107, n_self_repeats=3,
        n_split_baskets=4, image_size=128,
    ),
    # the statistics of the real UGallery data (REFERENCE_FACTS.md)
    "ugallery": ScaleSpec(
        n_users=2919, n_items=13297, n_artists=573, n_styles=40, n_purchases=6535,
        n_baskets=4897, max_user_purchases=271, top5_share=0.075, single_purchase_share=0.6,
        tail_exponent=2.2, max_basket=21, one_of_a_kind_share=0.78,
        one_of_a_kind_purchase_share=0.817, n_items_sold=6030, n_self_repeats=6,
        n_split_baskets=12, image_size=128,
    ),
}  # fmt: skip


@dataclass(frozen=True)
class SynthConfig:
    """What to generate."""

    scale: str = "demo"  # a key of SCALES: tiny | demo | ugallery
    seed: int = 0  # same seed, byte-identical files
    images: bool = True  # False: CSVs and truth only (statistics, embedding-free tests)
    image_size: int | None = None  # pixels per side; None: the scale's default
    vectors: bool = False  # also write resnet_embeddings.npy (published [id, vector] rows)


@dataclass(frozen=True)
class SynthSummary:
    """What ``generate`` wrote."""

    out: Path  # dataset folder
    scale: str
    seed: int
    n_users: int
    n_items: int
    n_artists: int
    n_styles: int
    n_purchases: int  # purchased items, summed over baskets
    n_baskets: int  # (user, timestamp) baskets
    n_rows: int  # rows of purchases.csv (a few baskets span two rows)
    n_images: int
    image_size: int
    seconds: float  # wall time of the generation


@dataclass(frozen=True)
class _World:
    styles: list[dict]
    artist_style: np.ndarray  # (A,) int style of each artist
    artist_params: list[dict]  # (A,) the artist's jittered style, what images render
    item_artist: np.ndarray  # (N,) int, items in upload order
    item_unique: np.ndarray  # (N,) bool, one-of-a-kind (else a print)
    item_upload: np.ndarray  # (N,) int64 unix seconds, non-decreasing
    user_styles: np.ndarray  # (U, K) float, taste over styles, rows sum to 1
    user_artists: list[np.ndarray]  # (U,) favourite artist indices


@dataclass(frozen=True)
class _Plan:
    user_baskets: np.ndarray  # (U+1,) offsets into the basket axis, time order per user
    basket_user: np.ndarray  # (B,) int
    basket_time: np.ndarray  # (B,) int64, strictly increasing within a user
    basket_size: np.ndarray  # (B,) int


def _ids(seed: int, kind: str, n: int) -> np.ndarray:
    """``n`` deterministic 32-hex-char ids, different for every seed and kind."""
    return np.array(
        [hashlib.md5(f"curatornet-synth/{seed}/{kind}/{i}".encode()).hexdigest() for i in range(n)]
    )


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


def _world(spec: ScaleSpec, seed: int) -> _World:
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
    return _World(
        styles, artist_style, artist_params, item_artist[order], unique[order], upload[order],
        user_styles, user_artists,
    )  # fmt: skip


def _user_counts(spec: ScaleSpec, rng: np.random.Generator) -> np.ndarray:
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


def _plan(spec: ScaleSpec, counts: np.ndarray, opening: int, rng: np.random.Generator) -> _Plan:
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
    return _Plan(
        np.concatenate([[0], np.cumsum(n_b)]), np.repeat(np.arange(U), n_b),
        np.concatenate(times), np.concatenate(sizes),
    )  # fmt: skip


UNIQUE, NEW_PRINT, REPEAT_PRINT = 0, 1, 2


def _choose(
    spec: ScaleSpec, world: _World, plan: _Plan, rng: np.random.Generator
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


def _truth(spec, config, size, world, item_ids, artist_ids, user_ids) -> dict:
    """The generator's ground truth: styles, artists' styles, items, user tastes."""
    return {
        "note": "ground truth of the synthetic generator; not part of the published format",
        "config": {**dataclasses.asdict(config), "image_size": size},
        "spec": dataclasses.asdict(spec),
        "styles": world.styles,
        "artists": {
            artist_ids[a]: {"style": int(s), "params": world.artist_params[a]}
            for a, s in enumerate(world.artist_style)
        },
        "items": {
            item_ids[i]: {
                "artist": artist_ids[a],
                "style": int(world.artist_style[a]),
                "one_of_a_kind": bool(world.item_unique[i]),
            }
            for i, a in enumerate(world.item_artist)
        },
        "users": {
            user_ids[u]: {
                "styles": {str(k): float(world.user_styles[u, k]) for k in np.flatnonzero(row)},
                "artists": [str(artist_ids[a]) for a in world.user_artists[u]],
            }
            for u, row in enumerate(world.user_styles)
        },
    }


def generate(config: SynthConfig, out: Path) -> SynthSummary:
    """Write a synthetic dataset in the published format (plus ``synth_truth.json``) to ``out``."""
    if config.scale not in SCALES:
        raise ValueError(f"unknown scale {config.scale!r}; choose one of {sorted(SCALES)}")
    spec = SCALES[config.scale]
    size = config.image_size or spec.image_size
    if size < 16:
        raise ValueError(f"image_size must be >= 16 pixels, got {size}")
    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    world = _world(spec, config.seed)
    counts = _user_counts(spec, np.random.default_rng([config.seed, 1]))
    opening = int(world.item_upload[len(world.item_upload) // 20]) + DAY  # 5% uploaded
    plan = _plan(spec, counts, opening, np.random.default_rng([config.seed, 2]))
    basket_order, offsets, chosen = _choose(
        spec, world, plan, np.random.default_rng([config.seed, 3])
    )
    item_ids = _ids(config.seed, "item", spec.n_items)
    artist_ids = _ids(config.seed, "artist", spec.n_artists)
    user_ids = _ids(config.seed, "user", spec.n_users)

    pd.DataFrame(
        {
            "artwork_id_hash": item_ids,
            "artist_id_hash": artist_ids[world.item_artist],
            "upload_timestamp": world.item_upload,
        }
    ).to_csv(out / "inventory.csv", index=False, lineterminator="\n")
    rng = np.random.default_rng([config.seed, 4])
    multi = np.flatnonzero(plan.basket_size >= 2)
    split = set(rng.choice(multi, min(spec.n_split_baskets, len(multi)), replace=False).tolist())
    rows = []
    for b in basket_order:
        items = [str(i) for i in item_ids[chosen[offsets[b] : offsets[b + 1]]]]
        user, ts = user_ids[plan.basket_user[b]], int(plan.basket_time[b])
        cut = int(rng.integers(1, len(items))) if b in split else len(items)
        rows.extend((user, repr(part), ts) for part in (items[:cut], items[cut:]) if part)
    pd.DataFrame(
        rows, columns=["user_id_hash", "purchased_artwork_ids_hash", "purchase_timestamp"]
    ).to_csv(out / "purchases.csv", index=False, lineterminator="\n")
    truth = _truth(spec, config, size, world, item_ids, artist_ids, user_ids)
    (out / TRUTH_FILE).write_text(json.dumps(truth, sort_keys=True, indent=1) + "\n")

    if config.vectors:
        vectors = resnet_like_vectors(
            world.item_artist, np.random.default_rng([config.seed, 6]),
            group_parent=world.artist_style,
        )  # fmt: skip
        write_published_vectors(out / "resnet_embeddings.npy", item_ids, vectors)
    if config.images:
        (out / "images").mkdir(exist_ok=True)
        for i, item in enumerate(item_ids):
            img = render(world.artist_params[world.item_artist[i]], size,
                         np.random.default_rng([config.seed, 5, i]))  # fmt: skip
            (out / "images" / f"{item}.jpg").write_bytes(jpeg_bytes(img))
            if (i + 1) % 2000 == 0:
                logger.info("rendered %d/%d images", i + 1, len(item_ids))
        stale = len(list((out / "images").glob("*.jpg"))) - len(item_ids)
        if stale > 0:
            logger.warning("%s/images holds %d images of another dataset", out, stale)
    summary = SynthSummary(
        out=out, scale=config.scale, seed=config.seed, n_users=spec.n_users,
        n_items=spec.n_items, n_artists=spec.n_artists, n_styles=spec.n_styles,
        n_purchases=int(plan.basket_size.sum()),
        n_baskets=len(plan.basket_size), n_rows=len(rows),
        n_images=spec.n_items if config.images else 0, image_size=size,
        seconds=time.perf_counter() - started,
    )  # fmt: skip
    logger.info("synthetic %s dataset in %s (%.1f s)", config.scale, out, summary.seconds)
    return summary


def stats(out: Path) -> dict:
    """Statistics of a dataset folder, from its CSVs (plus one-of-a-kind shares if truth exists)."""
    out = Path(out)
    inv = pd.read_csv(out / "inventory.csv")
    pur = pd.read_csv(out / "purchases.csv")
    pur["items"] = pur["purchased_artwork_ids_hash"].map(ast.literal_eval)
    flat = pur.explode("items")
    per_user = flat.groupby("user_id_hash").size()
    baskets = flat.groupby(["user_id_hash", "purchase_timestamp"]).size()
    rows_per_basket = pur.groupby(["user_id_hash", "purchase_timestamp"]).size()
    per_item = flat["items"].value_counts()
    sold_once = per_item[per_item == 1]
    top = per_user.sort_values(ascending=False)
    result = {
        "users": int(per_user.size),
        "items": int(len(inv)),
        "artists": int(inv["artist_id_hash"].nunique()),
        "purchases": int(len(flat)),
        "baskets": int(baskets.size),
        "rows": int(len(pur)),
        "purchases_per_user_median": float(per_user.median()),
        "purchases_per_user_mean": float(per_user.mean()),
        "purchases_per_user_std": float(per_user.std()),
        "purchases_per_user_max": int(per_user.max()),
        "top5_user_share": float(top.iloc[:5].sum() / len(flat)),
        "largest_basket": int(baskets.max()),
        "items_sold": int(per_item.size),
        "sold_once_share_of_sold_items": float(len(sold_once) / per_item.size),
        "sold_once_share_of_purchases": float(len(sold_once) / len(flat)),
        "repeated_purchases": int((flat.groupby(["user_id_hash", "items"]).size() > 1).sum()),
        "rows_sharing_timestamp": int(rows_per_basket[rows_per_basket > 1].sum()),
        "purchased_items_missing_from_inventory": int(
            (~per_item.index.isin(inv["artwork_id_hash"])).sum()
        ),
    }
    if (out / TRUTH_FILE).exists():
        unique = {k for k, v in json.loads((out / TRUTH_FILE).read_text())["items"].items()
                  if v["one_of_a_kind"]}  # fmt: skip
        result["one_of_a_kind_share_of_items"] = float(inv["artwork_id_hash"].isin(unique).mean())
        result["one_of_a_kind_share_of_purchases"] = float(flat["items"].isin(unique).mean())
    return result


def main(argv: list[str] | None = None) -> int:
    """``curatornet synth``: generate a dataset and print its summary and statistics."""
    parser = argparse.ArgumentParser(prog="curatornet synth", description=__doc__.split("\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--no-images", action="store_true", help="CSVs and truth only")
    parser.add_argument("--image-size", type=int, default=None, help="pixels per side")
    parser.add_argument("--vectors", action="store_true",
                        help="also write resnet_embeddings.npy: ResNet-like image vectors, "
                             "as the published dataset has them")  # fmt: skip
    args = parser.parse_args(argv)
    summary = generate(
        SynthConfig(args.scale, args.seed, not args.no_images, args.image_size, args.vectors),
        args.out,
    )
    print(f"wrote the synthetic '{summary.scale}' dataset (seed {summary.seed}) to "
          f"{summary.out} in {summary.seconds:.1f} s")  # fmt: skip
    for key, value in stats(summary.out).items():
        print(f"  {key:40s} {value:.4g}" if isinstance(value, float) else f"  {key:40s} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
