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

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

#: Names of the triple-sampling strategies, in the paper's order (see
#: ``REFERENCE_FACTS.md``), followed by the uniform BPR baseline of Figure 3.
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
