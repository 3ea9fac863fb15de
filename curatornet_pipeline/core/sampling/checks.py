"""Checks of sampled triples: each obeys its guideline's definition, and none leaks a
held-out (test or validation) basket item into a profile or a positive."""

import numpy as np

from curatornet_pipeline.core.sampling.context import (
    IDENTICAL_TOL,
    SamplingContext,
    gather_ranges,
)
from curatornet_pipeline.core.sampling.strategies import cosine, visually_acceptable
from curatornet_pipeline.core.sampling.triples import (
    U64,
    in_sorted,
    mix64,
    profile_hashes,
    triple_hashes,
)
from curatornet_pipeline.core.split.baskets import hidden_pairs
from curatornet_pipeline.core.types import STRATEGIES, TrainTestSplit, Triplets


def hidden_item_leaks(
    triplets: Triplets, split: TrainTestSplit, content_positives: bool = False
) -> int:
    """Number of triples that leak a hidden test pair.

    Rule: with hidden pairs ``(u, i)`` as defined in :func:`.split.hidden_pairs`
    (``i`` in u's hidden basket, not in u's training baskets), a triple of a real
    user ``u >= 0`` leaks when any item of its profile forms a hidden pair with
    ``u``, or when its positive does and that positive is purchase information
    (s1, s5, s6, random: positives taken from u's baskets).

    Not counted: artificial triples (``user == -1``, single-item profiles carry no
    user); negatives (not purchase information); s3 positives, which are items
    *outside* the profile chosen by artist and cluster only, so one that happens
    to be in the hidden basket is a coincidence the sampler cannot avoid without
    reading the test basket, as the reference also cannot. Pass
    ``content_positives=True`` to count those too.
    """
    hidden = hidden_pairs(split)
    n_items = split.n_items
    real = np.flatnonzero(triplets.user >= 0)
    user = triplets.user[real].astype(np.int64)
    leak = in_sorted(hidden, user * n_items + triplets.positive[real])
    if not content_positives:
        leak &= triplets.strategy[real] != STRATEGIES.index("s3_artist_cluster")
    n_keys = int(user.max(initial=0)) + 1
    pairs, inv = np.unique(triplets.profile[real] * n_keys + user, return_inverse=True)
    prof, puser = pairs // n_keys, pairs % n_keys
    idx, row = gather_ranges(triplets.profile_offsets[prof], triplets.profile_offsets[prof + 1])
    bad = in_sorted(hidden, puser[row] * n_items + triplets.profile_items[idx])
    pair_leaks = np.bincount(row[bad], minlength=len(pairs)) > 0
    leak |= pair_leaks[inv.ravel()]
    return int(leak.sum())


def _user_profile_key(
    profile_hash: np.ndarray, positive: np.ndarray, user: np.ndarray
) -> np.ndarray:
    return triple_hashes(
        profile_hash ^ mix64(user.astype(U64) + U64(1)), positive, np.zeros_like(positive)
    )


def _valid_basket_keys(ctx: SamplingContext, strategy: str) -> np.ndarray:
    """Sorted keys of every (profile, positive, user) that s5 or s6 may produce."""
    if strategy == "s5_next_basket":
        ph = profile_hashes(ctx.next_offsets, ctx.next_items)
        bio = ctx.basket_item_offsets
        idx, row = gather_ranges(bio[ctx.next_basket], bio[ctx.next_basket + 1])
        return np.sort(_user_profile_key(ph[row], ctx.basket_items[idx], ctx.next_user[row]))
    ph = profile_hashes(ctx.hide_offsets, ctx.hide_items)
    return np.sort(_user_profile_key(ph, ctx.hide_item, ctx.hide_user))


def verify_strategy(triplets: Triplets, ctx: SamplingContext, strategy: str) -> list[str]:
    """Human-readable violations of ``strategy``'s definition by its triples in ``triplets``.

    Checks the stored data against the context (the training split it was sampled
    from): hashes, duplicates, negative outside the profile, no visually identical
    pair, and the strategy's own positive, profile, user, artist and cluster rules.
    An empty list means every triple conforms.
    """
    code = STRATEGIES.index(strategy)
    rows = np.flatnonzero(triplets.strategy == code)
    if len(rows) == 0:
        return [f"{strategy}: no triples"]
    problems: list[str] = []

    def report(mask: np.ndarray, what: str) -> None:
        if mask.any():
            first = int(rows[np.argmax(mask)])
            problems.append(
                f"{strategy}: {int(mask.sum())} of {len(rows)} triples {what} (first at row {first})"
            )

    n_items = ctx.n_items
    prof, pos, neg, user = (
        getattr(triplets, f)[rows] for f in ("profile", "positive", "negative", "user")
    )
    offsets, items = triplets.profile_offsets, triplets.profile_items
    ph = profile_hashes(offsets, items)[prof]
    sizes = np.diff(offsets)[prof]
    report(
        triple_hashes(ph, pos, neg) != triplets.hash[rows],
        "have a hash that does not match their content",
    )
    _, first = np.unique(triplets.hash[rows], return_index=True)
    dup = np.ones(len(rows), bool)
    dup[first] = False
    report(dup, "repeat an earlier triple")
    prof_keys = np.sort(np.repeat(np.arange(len(offsets) - 1), np.diff(offsets)) * n_items + items)
    pos_in = in_sorted(prof_keys, prof * n_items + pos)
    report(in_sorted(prof_keys, prof * n_items + neg), "have the negative inside the profile")
    same = np.flatnonzero((ctx.cluster[pos] == ctx.cluster[neg]) & (pos != neg))
    identical = pos == neg
    identical[same] = cosine(ctx, pos[same], neg[same]) >= 1 - IDENTICAL_TOL
    report(identical, "have visually identical positive and negative")

    real = user >= 0
    u = np.maximum(user, 0)
    if strategy in ("s2_single_item", "s4_same_artist"):
        report(real, "have a user but an artificial profile")
        report(sizes != 1, "have a profile that is not a single item")
        q = items[offsets[prof]]
    else:
        report(~real, "have no user")
    if strategy in ("s1_user_profile", "s3_artist_cluster", "random"):
        history = profile_hashes(ctx.profile_offsets, ctx.profile_items)[u]
        report(ph != history, "have a profile that is not the user's training history")
    if strategy in ("s1_user_profile", "random"):
        report(~pos_in, "have the positive outside the profile")
    elif strategy == "s2_single_item":
        report(pos != q, "have a positive other than the profile item")
    elif strategy == "s3_artist_cluster":
        report(pos_in, "have the positive inside the profile")
        report(
            ~ctx.user_artists[u, ctx.artist[pos]],
            "have a positive whose artist is not in the profile",
        )
        report(
            ~ctx.user_clusters[u, ctx.cluster[pos]],
            "have a positive whose cluster is not in the profile",
        )
    elif strategy == "s4_same_artist":
        report(
            (ctx.artist[pos] != ctx.artist[q]) | (pos == q),
            "have a positive that is not another item by q's artist",
        )
        report(ctx.artist[neg] == ctx.artist[q], "have a negative by the profile item's artist")
        report(
            ~visually_acceptable(ctx, q, pos, neg),
            "have a negative that is not visually acceptable",
        )
    elif strategy in ("s5_next_basket", "s6_hide_one"):
        keys = _user_profile_key(ph, pos, user)
        what = "next-basket item" if strategy == "s5_next_basket" else "hide-one pair"
        report(
            ~in_sorted(_valid_basket_keys(ctx, strategy), keys),
            f"are not a (profile, positive) {what} of its user",
        )
    if strategy in ("s3_artist_cluster", "s5_next_basket", "s6_hide_one"):
        report(
            ~ctx.history_free(u, neg),
            "have a negative whose artist or cluster is in the user's history",
        )
    return problems
