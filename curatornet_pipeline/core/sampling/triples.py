"""Triple sampling: draw, hash, deduplicate and merge the strategies of :mod:`.strategies`.

A triple's identity is a 64-bit hash of (profile item *set*, positive, negative):
the profile hash is an order-free sum of splitmix64 mixes of its items (computed
once per distinct profile), mixed with the positive and the negative. Two
profiles with equal hashes are treated as equal (collision odds ~ N^2 / 2^64).
"""

import dataclasses
import logging

import numpy as np

from curatornet_pipeline.core.ragged import offsets_from_lengths
from curatornet_pipeline.core.sampling.context import (
    SamplingConfig,
    SamplingContext,
    build_context,
    gather_ranges,
)
from curatornet_pipeline.core.sampling.strategies import STRATEGY_FUNCS
from curatornet_pipeline.core.types import (
    GUIDELINE_STRATEGIES,
    STRATEGIES,
    STRATEGY_INFO,
    ItemVectors,
    TrainTestSplit,
    Triplets,
)

logger = logging.getLogger(__name__)

U64 = np.uint64


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, vectorised over uint64 (wrapping arithmetic)."""
    z = x.astype(U64) + U64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> U64(30))) * U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> U64(27))) * U64(0x94D049BB133111EB)
    return z ^ (z >> U64(31))


def profile_hashes(offsets: np.ndarray, items: np.ndarray) -> np.ndarray:
    """(P,) uint64 hash of every CSR profile, independent of item order."""
    cum = np.zeros(len(items) + 1, U64)
    np.cumsum(mix64(items.astype(U64) + U64(0x51ED270B)), out=cum[1:])
    total = cum[offsets[1:]] - cum[offsets[:-1]]  # wraps mod 2^64, still exact
    return mix64(total ^ mix64(np.diff(offsets).astype(U64)))


def triple_hashes(
    profile_hash: np.ndarray, positive: np.ndarray, negative: np.ndarray
) -> np.ndarray:
    """(N,) uint64 hash of (profile, positive, negative) from the profile's hash."""
    pn = (positive.astype(U64) << U64(32)) | negative.astype(np.uint32).astype(U64)
    return mix64(profile_hash ^ mix64(pn))


def in_sorted(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Whether each of ``keys`` is in ``sorted_keys``.

    Large queries first go through a byte table indexed by the keys' low bits
    (well mixed for hashes), so only the few candidates pay for a binary search.
    """
    if len(sorted_keys) == 0 or len(keys) == 0:
        return np.zeros(len(keys), bool)
    if keys.dtype == U64 and (len(keys) > 4 * len(sorted_keys) or len(keys) > 100_000):
        bits = min(max(int(np.ceil(np.log2(len(sorted_keys) * 8))), 16), 26)
        low = np.uint64((1 << bits) - 1)
        table = np.zeros(1 << bits, bool)
        table[(sorted_keys & low).astype(np.int64)] = True
        candidates = np.flatnonzero(table[(keys & low).astype(np.int64)])
        out = np.zeros(len(keys), bool)
        out[candidates] = _search(sorted_keys, keys[candidates])
        return out
    return _search(sorted_keys, keys)


def _search(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    pos = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return sorted_keys[pos] == keys


#: The profile-size buckets every report uses (sampling metadata, the triplets asset's
#: table, the reproduction's triples table).
PROFILE_SIZE_BUCKETS = ("1", "2", "3-4", "5-9", "10-19", "20-49", "50-99", "100+")
_BUCKET_EDGES = (1, 2, 3, 5, 10, 20, 50, 100, np.iinfo(np.int64).max)


def profile_sizes(t: Triplets, training_only: bool = True) -> np.ndarray:
    """The profile size of every (training) triple."""
    rows = ~np.asarray(t.is_validation, bool) if training_only else slice(None)
    return np.diff(t.profile_offsets)[t.profile[rows]]


def profile_size_histogram(t: Triplets, training_only: bool = True) -> dict[str, int]:
    """Triples per profile size, in :data:`PROFILE_SIZE_BUCKETS`."""
    counts = np.histogram(profile_sizes(t, training_only), bins=_BUCKET_EDGES)[0]
    return dict(zip(PROFILE_SIZE_BUCKETS, (int(c) for c in counts), strict=True))


def _first_unique(h: np.ndarray) -> np.ndarray:
    """Mask of the first occurrence of every value of ``h`` (sort-based: fast for 10M)."""
    mask = np.ones(len(h), bool)
    s = np.sort(h)
    dup = s[1:][s[1:] == s[:-1]]
    if len(dup):
        rows = np.flatnonzero(in_sorted(dup, h))  # every row whose value repeats
        order = rows[np.argsort(h[rows], kind="stable")]
        later = np.zeros(len(order), bool)
        later[1:] = h[order[1:]] == h[order[:-1]]
        mask[order[later]] = False
    return mask


def _compact_profiles(
    offsets: np.ndarray, items: np.ndarray, profile: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep the profiles ``profile`` refers to, merged by content hash; returns (offsets, items, profile)."""
    n_profiles = len(offsets) - 1
    used = np.flatnonzero(np.bincount(profile, minlength=n_profiles))
    idx, _ = gather_ranges(offsets[used], offsets[used + 1])
    ph = profile_hashes(offsets_from_lengths(offsets[used + 1] - offsets[used]), items[idx])
    _, first, inv = np.unique(ph, return_index=True, return_inverse=True)
    remap = np.zeros(n_profiles, np.int64)
    remap[used] = inv.ravel()
    keep = used[first]
    idx, _ = gather_ranges(offsets[keep], offsets[keep + 1])
    new_offsets = offsets_from_lengths(offsets[keep + 1] - offsets[keep])
    return new_offsets, items[idx].astype(np.int32), remap[profile]


def take_rows(t: Triplets, rows: np.ndarray, meta: dict) -> Triplets:
    """Rows ``rows`` of ``t`` with the profile table compacted and deduplicated by hash."""
    offsets, items, profile = _compact_profiles(t.profile_offsets, t.profile_items, t.profile[rows])
    return Triplets(
        profile_offsets=offsets,
        profile_items=items,
        profile=profile,
        positive=t.positive[rows],
        negative=t.negative[rows],
        user=t.user[rows],
        strategy=t.strategy[rows],
        hash=t.hash[rows],
        is_validation=t.is_validation[rows],
        meta=meta,
    )


def _describe(t: Triplets) -> dict:
    items = np.zeros(max(int(t.positive.max(initial=-1)), int(t.negative.max(initial=-1)),
                         int(t.profile_items.max(initial=-1))) + 1, bool)  # fmt: skip
    for arr in (t.positive, t.negative, t.profile_items):
        items[arr] = True
    return {
        "profile_size_histogram": profile_size_histogram(t, training_only=False),
        "profiles": int(len(t.profile_offsets) - 1),
        "users_covered": int(np.count_nonzero(np.bincount(t.user[t.user >= 0]))),
        "items_covered": int(items.sum()),
    }


def strategy_target(config: SamplingConfig, strategy: str) -> int:
    """Training triples asked of ``strategy``: ``n_per_strategy``, six times that for ``random``.

    The random partition feeds the size-matched ablation (:mod:`.experiment`):
    CuratorNet trained on random triples must see as many as CuratorNet trained on
    all six guidelines. ``config.size_matched_random=False`` asks ``n_per_strategy``.
    """
    if strategy == "random" and config.size_matched_random:
        return config.n_per_strategy * len(GUIDELINE_STRATEGIES)
    return config.n_per_strategy


def sample_strategy(
    ctx: SamplingContext,
    strategy: str,
    config: SamplingConfig | None = None,
    exclude: np.ndarray | None = None,
) -> Triplets:
    """:func:`strategy_target` unique training triples plus ``validation_fraction`` as many validation ones.

    Candidates are drawn in batches (at most ``max_batch`` each) until the target
    is met, or the space looks exhausted: a batch yields fewer than ``min_yield``
    new triples per draw, or ``max_rounds`` batches were drawn (meta ``exhausted``).
    Triples are kept in draw order; the last ones drawn are the validation triples.
    Reproducible: the generator is ``default_rng([seed, index of strategy])``.
    ``exclude``: hashes that count as already drawn (e.g. earlier strategies'
    triples, so that the merged union still reaches every strategy's target).
    """
    if strategy not in STRATEGY_FUNCS:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {list(STRATEGY_FUNCS)}")
    config = config or ctx.config
    if config != ctx.config:
        ctx = dataclasses.replace(ctx, config=config)
    code = STRATEGIES.index(strategy)
    rng = np.random.default_rng([config.seed, code])
    n_target = strategy_target(config, strategy)
    # validation: the same rounded share per n_per_strategy, so that the random
    # partition holds as many validation triples as the six guidelines together
    n_val_target = int(round(config.n_per_strategy * config.validation_fraction)) * (
        n_target // config.n_per_strategy if config.n_per_strategy else 1
    )
    target = n_target + n_val_target

    chunks: list[tuple[np.ndarray, ...]] = []
    seen = np.zeros(0, U64) if exclude is None else np.sort(np.asarray(exclude, U64))
    table = None
    produced = duplicates = rejected = rounds = 0
    rate = 1.0
    while produced < target and rounds < config.max_rounds:
        remaining = target - produced
        request = min(int(remaining / max(rate, config.min_yield) * 1.05) + 16, config.max_batch)
        cand = STRATEGY_FUNCS[strategy](ctx, request, rng)
        rounds += 1
        if table is None:
            table = (cand.profile_offsets, cand.profile_items)
            table_hash = profile_hashes(*table)
        h = triple_hashes(table_hash[cand.profile], cand.positive, cand.negative)
        fresh = _first_unique(h)
        fresh[fresh] = ~in_sorted(seen, h[fresh])
        keep = np.flatnonzero(fresh)[:remaining]
        chunks.append(
            (cand.profile[keep], cand.positive[keep], cand.negative[keep], cand.user[keep], h[keep])
        )
        seen = np.sort(np.concatenate([seen, h[keep]]))
        produced += len(keep)
        duplicates += len(h) - int(fresh.sum())
        rejected += cand.n_rejected
        rate = len(keep) / request
        if rate < config.min_yield and produced < target:
            break

    n = produced
    n_val = n_val_target if n >= target else int(round(n * n_val_target / target))
    is_val = np.zeros(n, bool)
    is_val[n - n_val :] = True
    cols = (
        [np.concatenate(c) for c in zip(*chunks, strict=True)]
        if chunks
        else [np.zeros(0, np.int64)] * 5
    )
    offsets, items, profile = (
        _compact_profiles(*table, cols[0])
        if table
        else (np.zeros(1, np.int64), np.zeros(0, np.int32), cols[0])
    )
    out = Triplets(
        profile_offsets=offsets,
        profile_items=items,
        profile=profile,
        positive=cols[1].astype(np.int32),
        negative=cols[2].astype(np.int32),
        user=cols[3].astype(np.int32),
        strategy=np.full(n, code, np.int8),
        hash=cols[4].astype(U64),
        is_validation=is_val,
        meta={
            "strategy": strategy,
            "paper_guideline": STRATEGY_INFO[strategy].paper_guideline,
            "reference_strategy": STRATEGY_INFO[strategy].reference_number,
            "target": n_target,
            "target_validation": n_val_target,
            "produced": n - n_val,
            "produced_validation": n_val,
            "exhausted": n < target,
            "rounds": rounds,
            "rejected_duplicates": int(duplicates),
            "rejected_by_definition": int(rejected),
            "seed": config.seed,
            "config": dataclasses.asdict(config),
        },
    )
    out.meta.update(_describe(out))
    logger.info(
        "%s: %d + %d validation triples (target %d), %d rounds",
        strategy,
        n - n_val,
        n_val,
        target,
        rounds,
    )
    return out


def merge_triplets(parts: dict[str, Triplets]) -> Triplets:
    """Disjoint union in ``STRATEGIES`` order.

    A training triple whose hash appeared in an earlier strategy is rejected; a
    validation triple whose hash is any kept training triple, or an earlier
    validation triple, is rejected. Counts per strategy are in meta.
    """
    unknown = set(parts) - set(STRATEGIES)
    if unknown:
        raise ValueError(f"unknown strategies {sorted(unknown)}")
    names = [s for s in STRATEGIES if s in parts]
    ps = [parts[s] for s in names]
    hashes = np.concatenate([np.zeros(0, U64)] + [p.hash for p in ps])
    is_val = np.concatenate([np.zeros(0, bool)] + [p.is_validation for p in ps])
    keep = ~is_val
    keep[keep] = _first_unique(hashes[keep])
    train_sorted = np.sort(hashes[keep])
    val = np.flatnonzero(is_val)
    val = val[~in_sorted(train_sorted, hashes[val])]
    keep[val[_first_unique(hashes[val])]] = True
    del hashes, is_val, train_sorted

    bounds = np.cumsum([0] + [len(p) for p in ps])
    masks = [keep[bounds[i] : bounds[i + 1]] for i in range(len(ps))]
    items_base = np.cumsum([0] + [len(p.profile_items) for p in ps])
    prof_base = np.cumsum([0] + [len(p.profile_offsets) - 1 for p in ps])
    offsets = np.concatenate(
        [np.zeros(1, np.int64)] + [p.profile_offsets[1:] + items_base[i] for i, p in enumerate(ps)]
    )
    items = np.concatenate([np.zeros(0, np.int32)] + [p.profile_items for p in ps])
    profile = np.concatenate(
        [np.zeros(0, np.int64)]
        + [p.profile[m] + prof_base[i] for i, (p, m) in enumerate(zip(ps, masks, strict=True))]
    )
    offsets, items, profile = _compact_profiles(offsets, items, profile)

    def cat(field: str, dtype: type) -> np.ndarray:
        return np.concatenate(
            [np.zeros(0, dtype)] + [getattr(p, field)[m] for p, m in zip(ps, masks, strict=True)]
        )

    out = Triplets(
        profile_offsets=offsets,
        profile_items=items,
        profile=profile,
        positive=cat("positive", np.int32),
        negative=cat("negative", np.int32),
        user=cat("user", np.int32),
        strategy=cat("strategy", np.int8),
        hash=cat("hash", U64),
        is_validation=cat("is_validation", bool),
        meta={
            "strategies": names,
            "rejected_cross_strategy": {
                s: int((~m).sum()) for s, m in zip(names, masks, strict=True)
            },
            "parts": {s: parts[s].meta for s in names},
        },
    )
    counts = np.bincount(out.strategy[~out.is_validation], minlength=len(STRATEGIES))
    vcounts = np.bincount(out.strategy[out.is_validation], minlength=len(STRATEGIES))
    out.meta.update(
        train_per_strategy={s: int(counts[STRATEGIES.index(s)]) for s in names},
        validation_per_strategy={s: int(vcounts[STRATEGIES.index(s)]) for s in names},
        **_describe(out),
    )
    return out


def select(triplets: Triplets, strategies: tuple[str, ...] | list[str]) -> Triplets:
    """The triples of the given strategies only (e.g. the real-user ones for VBPR)."""
    unknown = set(strategies) - set(STRATEGIES)
    if unknown:
        raise ValueError(f"unknown strategies {sorted(unknown)}")
    codes = [STRATEGIES.index(s) for s in strategies]
    rows = np.flatnonzero(np.isin(triplets.strategy, codes))
    meta = {**triplets.meta, "selected": list(strategies)}
    return take_rows(triplets, rows, meta)


def catalogue_context(
    split: TrainTestSplit, catalogue, pca: ItemVectors, config: SamplingConfig | None = None
) -> SamplingContext:
    """The sampling context of a catalogue (its artists and visual clusters) and its PCA
    vectors, from the training baskets of ``split``: what the ``triplets`` asset and
    ``curatornet reproduce`` both sample from."""
    import pandas as pd

    if not np.array_equal(catalogue.ids, pca.ids):
        raise ValueError("catalogue and pca_embeddings list different items: rematerialize both")
    artist_codes = pd.factorize(pd.Series(catalogue.artists))[0].astype(np.int32)
    return build_context(
        split, artist_codes, catalogue.clusters.astype(np.int32), pca.vectors, config
    )
