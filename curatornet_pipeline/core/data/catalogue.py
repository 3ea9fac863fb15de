"""The catalogue every stage after the visual one reads: the items in embedding order with
their raw vectors, artists, visual clusters and stock dates (upload, sale of a
one-of-a-kind item)."""

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from curatornet_pipeline.core.types import NEVER, ItemVectors, VisualClusters

UNKNOWN_CLUSTER = -1  # cluster label of items added after clustering

#: The per-item array fields of :class:`Catalogue`, in order (all of length n).
CATALOGUE_ARRAYS: tuple[str, ...] = (
    "ids",
    "features",
    "artists",
    "clusters",
    "upload_timestamp",
    "sold_out_timestamp",
    "one_of_a_kind",
)


@dataclass(frozen=True)
class Catalogue:
    """The artworks that can be recommended, in item-index order."""

    ids: np.ndarray  # (n,) str artwork_id_hash
    features: np.ndarray  # (n, d) float32 raw visual embeddings (the model scales them)
    artists: np.ndarray  # (n,) str artist_id_hash, "" when unknown
    clusters: np.ndarray  # (n,) int64 visual cluster, UNKNOWN_CLUSTER (-1) when unknown
    upload_timestamp: np.ndarray  # (n,) int64 unix seconds the item went on sale
    sold_out_timestamp: np.ndarray  # (n,) int64 sale of a one-of-a-kind item, NEVER otherwise
    one_of_a_kind: np.ndarray  # (n,) bool, sold once (inferred from the purchase history)
    meta: dict = field(default_factory=dict)  # embedding backbone/weights (see serving)

    def __post_init__(self) -> None:
        n = len(self.ids)
        for name in CATALOGUE_ARRAYS[1:]:
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"Catalogue.{name} has {len(getattr(self, name))} rows for {n} ids"
                )
        if len(set(self.ids.tolist())) != n:
            raise ValueError("Catalogue.ids must be unique")

    @classmethod
    def from_arrays(
        cls,
        ids: Sequence[str],
        features: np.ndarray,
        artists: Sequence[str] | None = None,
        clusters: Sequence[int] | None = None,
        upload_timestamp: Sequence[int] | None = None,
        sold_out_timestamp: Sequence[int] | None = None,
        one_of_a_kind: Sequence[bool] | None = None,
        meta: dict | None = None,
    ) -> "Catalogue":
        """A catalogue with defaults: unknown artist/cluster, on sale since 0, never sold out."""
        n = len(ids)
        return cls(
            ids=np.asarray(ids, dtype=str),
            features=np.asarray(features, dtype=np.float32).reshape(n, -1),
            artists=np.asarray([""] * n if artists is None else artists, dtype=str),
            clusters=np.asarray(
                np.full(n, UNKNOWN_CLUSTER) if clusters is None else clusters, dtype=np.int64
            ),
            upload_timestamp=np.asarray(
                np.zeros(n) if upload_timestamp is None else upload_timestamp, dtype=np.int64
            ),
            sold_out_timestamp=np.asarray(
                np.full(n, NEVER) if sold_out_timestamp is None else sold_out_timestamp,
                dtype=np.int64,
            ),
            one_of_a_kind=np.asarray(
                np.zeros(n) if one_of_a_kind is None else one_of_a_kind, dtype=bool
            ),
            meta=dict(meta or {}),
        )

    def __len__(self) -> int:
        return len(self.ids)

    def sold_out(self, at: int | None = None) -> np.ndarray:
        """(n,) bool: one-of-a-kind items sold before time ``at`` (None: now, i.e. ever sold).

        An item sold at exactly ``at`` is not yet sold out, as in the evaluation's
        ``in_stock`` protocol (it is the purchase being made at ``at``).
        """
        if at is None:
            return self.one_of_a_kind & (self.sold_out_timestamp != NEVER)
        return self.one_of_a_kind & (self.sold_out_timestamp < int(at))

    def in_stock(self, at: int | None = None) -> np.ndarray:
        """(n,) bool: uploaded by ``at`` and not sold out then (None: now)."""
        uploaded = True if at is None else self.upload_timestamp <= int(at)
        return uploaded & ~self.sold_out(at)

    def extend(
        self,
        ids: Sequence[str],
        features: np.ndarray,
        artists: Sequence[str] | None = None,
        upload_timestamp: int = 0,
    ) -> "Catalogue":
        """A new catalogue with ``ids`` appended: unknown cluster, on sale, never sold out."""
        new = Catalogue.from_arrays(
            ids,
            features,
            artists=artists,
            upload_timestamp=np.full(len(ids), upload_timestamp),
        )
        if new.features.shape[1] != self.features.shape[1]:
            raise ValueError(
                f"new items have {new.features.shape[1]} features, the catalogue "
                f"{self.features.shape[1]}"
            )
        clash = sorted(set(new.ids.tolist()) & set(self.ids.tolist()))
        if clash:
            raise ValueError(f"items already in the catalogue: {clash[:10]}")
        return replace(
            self,
            **{
                name: np.concatenate([getattr(self, name), getattr(new, name)])
                for name in CATALOGUE_ARRAYS
            },
        )


def build_catalogue(
    embeddings: ItemVectors,
    clusters: VisualClusters | None,
    inventory: pd.DataFrame,
    purchases: pd.DataFrame,
) -> Catalogue:
    """The catalogue of the pipeline's stages, in ``embeddings`` order.

    Artists come from the inventory; sold-out state from the whole purchase history
    (:func:`curatornet_pipeline.core.evaluation.evaluate.build_timeline`: an item bought exactly
    once is one-of-a-kind and sold out from that sale on).
    """
    from curatornet_pipeline.core.evaluation.evaluate import build_timeline

    ids = np.asarray(embeddings.ids, dtype=str)
    timeline = build_timeline(ids, inventory, purchases)
    by_id = inventory.drop_duplicates("artwork_id_hash").set_index("artwork_id_hash")
    artists = by_id["artist_id_hash"].reindex(ids).fillna("").astype(str).to_numpy()
    labels = np.full(len(ids), UNKNOWN_CLUSTER, dtype=np.int64)
    if clusters is not None:
        where = pd.Index(clusters.ids).get_indexer(ids)
        labels[where >= 0] = clusters.labels[where[where >= 0]]
    return Catalogue(
        ids=ids,
        features=np.asarray(embeddings.vectors, dtype=np.float32),
        artists=np.asarray(artists, dtype=str),
        clusters=labels,
        upload_timestamp=timeline.upload_timestamp,
        sold_out_timestamp=timeline.sold_out_timestamp,
        one_of_a_kind=timeline.one_of_a_kind,
        meta=dict(embeddings.meta),
    )
