"""Small typed values passed between pipeline stages.

Every value is a frozen dataclass whose fields are numpy arrays, plain scalars,
strings or JSON-able dicts, so :mod:`curatornet_pipeline.core.bundle` can store
any of them as a pickle-free ``.npz`` file.

Conventions shared by every stage:

- An *item index* is the row position of an item in the catalogue, i.e. in
  ``ItemVectors.ids`` of the ``pca_embeddings`` stage (inventory order, items
  without a vector removed). All integer item arrays below use that index.
- Ragged lists (profiles, baskets) are stored CSR-style: ``offsets`` of length
  ``n + 1`` into one flat ``items`` array; list ``k`` is
  ``items[offsets[k]:offsets[k + 1]]``.
"""

import os
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

#: Partition keys of the triple-sampling strategies. The six guidelines come in
#: the order of the authors' reference code (``s1`` is its first strategy), *not*
#: the paper's numbering: see :data:`STRATEGY_INFO` for the paper's guideline
#: number of each key. The uniform BPR baseline of Figure 3 comes last.
STRATEGIES: tuple[str, ...] = (
    "s1_user_profile",
    "s2_single_item",
    "s3_artist_cluster",
    "s4_same_artist",
    "s5_next_basket",
    "s6_hide_one",
    "random",
)
GUIDELINE_STRATEGIES: tuple[str, ...] = STRATEGIES[:6]


@dataclass(frozen=True)
class Strategy:
    """What a sampling strategy is called where: partition key, paper and reference code."""

    key: str  # partition key, e.g. "s1_user_profile" (reference-code order)
    paper_guideline: int | None  # number in the paper's section 3 list; None: the baseline
    reference_number: int | None  # position in the authors' reference sampler (1..6)
    paper_wording: str  # the paper's own sentence (as implemented: docs/guidelines.md)

    def params(self) -> dict[str, str | int]:
        """Flat dict for metadata and MLflow params."""
        return {
            "strategy": self.key,
            "paper_guideline": self.paper_guideline if self.paper_guideline is not None else "none",
            "reference_strategy": (
                self.reference_number if self.reference_number is not None else "none"
            ),
            "paper_wording": self.paper_wording,
        }


#: The single source of truth for strategy numbering: partition key -> Strategy.
#: Paper numbering from the paper's section 3 ("Guidelines for sampling
#: triples"); reference numbering from the authors' sampler (REFERENCE_FACTS.md).
STRATEGY_INFO: dict[str, Strategy] = {
    s.key: s
    for s in (
        Strategy(
            "s1_user_profile", 4, 1,
            "Recommending profile items from the same user profile.",
        ),
        Strategy(
            "s2_single_item", 5, 2,
            "Create an artificial user profile of a single item purchased, and recommending "
            "profile items given this artificially created user profile.",
        ),
        Strategy(
            "s3_artist_cluster", 3, 3,
            "Recommending visually similar artworks from the favorite artists of a user.",
        ),
        Strategy(
            "s4_same_artist", 6, 4,
            "Create artificial profile with a single item, then recommend visually similar "
            "items from the same artist.",
        ),
        Strategy(
            "s5_next_basket", 2, 5,
            "Sort items purchased sequentially, and then predict next purchase in basket.",
        ),
        Strategy(
            "s6_hide_one", 1, 6,
            "Removing item from purchase basket, and predicting this missing item.",
        ),
        Strategy(
            "random", None, None,
            "Traditional BPR: negative sampled uniformly at random from the items the user "
            "did not buy (Figure 3 baseline).",
        ),
    )
}  # fmt: skip


def paper_guideline(key: str) -> int | None:
    """The paper's guideline number of a partition key (None for ``random``)."""
    if key not in STRATEGY_INFO:
        raise ValueError(f"unknown strategy {key!r}; expected one of {list(STRATEGY_INFO)}")
    return STRATEGY_INFO[key].paper_guideline


#: Guidelines in the paper's numbering: paper number -> partition key.
PAPER_GUIDELINES: dict[int, str] = {
    s.paper_guideline: s.key for s in STRATEGY_INFO.values() if s.paper_guideline is not None
}

#: VBPR has one vector per real user and no notion of baskets; of the guidelines
#: it uses the real-user, basket-free ones: the paper's 3 and 4 (Figure 3).
VBPR_GUIDELINES: tuple[str, ...] = (PAPER_GUIDELINES[4], PAPER_GUIDELINES[3])


@dataclass(frozen=True)
class ItemVectors:
    """Item ids with one vector each (embeddings or PCA-reduced embeddings)."""

    ids: np.ndarray  # (n,) unicode str, artwork_id_hash
    vectors: np.ndarray  # (n, d) float32
    meta: dict = field(default_factory=dict)  # backbone, weights, scaler/pca info

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.vectors):
            raise ValueError(f"{len(self.ids)} ids for {len(self.vectors)} vectors")


@dataclass(frozen=True)
class VisualClusters:
    """k-means labels of the catalogue items, best run by silhouette."""

    ids: np.ndarray  # (n,) str, same order as pca_embeddings
    labels: np.ndarray  # (n,) int32 in [0, k)
    centroids: np.ndarray  # (k, d) float32, in PCA space
    silhouettes: np.ndarray  # (restarts,) float64, silhouette of every restart
    chosen: int  # index of the restart kept
    k: int


@dataclass(frozen=True)
class TrainTestSplit:
    """Baskets per user with the last basket of every user with >= 2 baskets hidden.

    Only ``train_*`` arrays may feed sampling, profiles or training statistics;
    ``test_*`` arrays feed evaluation only.
    """

    user_ids: np.ndarray  # (U,) str, every user with at least one training basket
    # training baskets, grouped by user, in time order within a user
    user_basket_offsets: np.ndarray  # (U+1,) int64 into the basket axis
    basket_item_offsets: np.ndarray  # (B+1,) int64 into basket_items
    basket_items: np.ndarray  # (sum,) int32 item indices
    basket_timestamps: np.ndarray  # (B,) int64 unix seconds
    # hidden last baskets
    test_users: np.ndarray  # (T,) int32 indices into user_ids
    test_item_offsets: np.ndarray  # (T+1,) int64 into test_items
    test_items: np.ndarray  # (sum,) int32 item indices of the hidden basket
    test_timestamps: np.ndarray  # (T,) int64 unix seconds of the hidden basket
    n_items: int  # catalogue size
    meta: dict = field(default_factory=dict)  # counts: dropped purchases, users, baskets


@dataclass(frozen=True)
class Triplets:
    """Training triples (profile, positive, negative) with deduplicated profiles."""

    profile_offsets: np.ndarray  # (P+1,) int64 into profile_items
    profile_items: np.ndarray  # (sum,) int32 item indices
    profile: np.ndarray  # (N,) int64 index into profiles
    positive: np.ndarray  # (N,) int32 item index
    negative: np.ndarray  # (N,) int32 item index
    user: np.ndarray  # (N,) int32 index into TrainTestSplit.user_ids, -1 if artificial
    strategy: np.ndarray  # (N,) int8 index into STRATEGIES
    hash: np.ndarray  # (N,) uint64 hash of (profile items, positive, negative)
    is_validation: np.ndarray  # (N,) bool, True for the held-out validation triples
    meta: dict = field(default_factory=dict)  # counts, seed, config

    def __len__(self) -> int:
        return len(self.positive)


class Scorer(Protocol):
    """What evaluation and recommendation need of any model.

    CuratorNet, VBPR, VisRank, Random and Oracle all implement it, so every
    model goes through the same evaluation code. Candidate filtering (profile
    items, out-of-stock items) is the caller's job: ``score`` rates the whole
    catalogue.
    """

    name: str

    def score(
        self,
        profile_offsets: np.ndarray,  # (B+1,) int64 into profile_items
        profile_items: np.ndarray,  # (sum,) int32 item indices of each profile
        users: np.ndarray,  # (B,) int32 index into TrainTestSplit.user_ids, -1 if unknown
    ) -> np.ndarray:  # (B, n_items) float32, higher is better
        ...


#: Sold-out time of items that never leave stock (the in-stock protocol's timeline).
NEVER: int = int(np.iinfo(np.int64).max)


class DataError(ValueError):
    """A problem in an input file, located by file, line (1-based) and field."""

    def __init__(
        self,
        reason: str,
        file: str | os.PathLike,
        line: int | None = None,
        field: str | None = None,
        row: int | None = None,
    ) -> None:
        self.reason = reason
        self.file = str(file)
        self.line = line
        self.field = field
        self.row = row  # 0-based array row, for files without lines (.npy)
        parts = [self.file]
        if line is not None:
            parts.append(f"line {line}")
        if row is not None:
            parts.append(f"row {row}")
        if field is not None:
            parts.append(f"field '{field}'")
        super().__init__(f"{', '.join(parts)}: {reason}")

    def __reduce__(self):  # keep the attributes across pickling (multiprocess executors)
        return (type(self), (self.reason, self.file, self.line, self.field, self.row))
