"""Recommendations for any user and any artwork, without retraining, with explanations.

CuratorNet scores ``g(P_u) . f(x_i)``: a new user is served from the items they like and a
new artwork from its image, no parameter updated. Each recommendation is explained by the
liked item that contributes most to its score by leave-one-out (the score minus the score
without that item, :meth:`Recommender.contributions`); see docs/cold-start.md.
"""

import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np
import pandas as pd
import torch

from curatornet_pipeline.core.data.catalogue import UNKNOWN_CLUSTER, Catalogue
from curatornet_pipeline.core.models.scorers import CuratorNetScorer
from curatornet_pipeline.core.recommend.arrays import leave_one_out_pooled, one_thread, top_k, unit
from curatornet_pipeline.core.types import TrainTestSplit
from curatornet_pipeline.kernels.machine import flush_denormals

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recommendation:
    """One recommended artwork and why."""

    item_id: str  # artwork_id_hash
    score: float  # g(P_u) . f(x_i)
    rank: int  # 1-based
    because: str  # the liked item contributing most to ``score`` (leave-one-out)
    contribution: float  # score - score without ``because`` in the profile
    similarity: float  # cosine of the item-tower vectors of item and ``because``
    same_artist: bool  # same (known) artist as ``because``
    same_cluster: bool  # same (known) visual cluster as ``because``


def recommendations_frame(recommendations: Sequence[Recommendation]) -> pd.DataFrame:
    """One row per recommendation, columns as the fields of :class:`Recommendation`."""
    columns = [f.name for f in fields(Recommendation)]
    return pd.DataFrame([asdict(r) for r in recommendations], columns=columns)


#: The fields of one recommendation as the CLI prints it and the HTTP model answers it
#: (which puts its request's row number first), in this order.
RECORD_FIELDS: tuple[str, ...] = ("rank", "item_id", "score", "because", "contribution",
    "similarity", "artist", "cluster", "same_artist", "same_cluster")  # fmt: skip


class Recommender:
    """Top-k artworks for any profile of liked items, known or new, with explanations.

    ``scorer.item_vectors`` must follow ``catalogue`` order; :meth:`add_items` grows both.
    Inference only: the model runs under ``torch.no_grad`` and is never updated.
    """

    def __init__(self, scorer: CuratorNetScorer, catalogue: Catalogue):
        if len(scorer.item_vectors) != len(catalogue):
            raise ValueError(
                f"{len(scorer.item_vectors)} item vectors for a catalogue of {len(catalogue)}"
            )
        input_dim = scorer.model.config.input_dim
        if catalogue.features.shape[1] != input_dim:
            raise ValueError(
                f"catalogue features have {catalogue.features.shape[1]} dims, the model {input_dim}"
            )
        self.scorer = scorer
        self.catalogue = catalogue
        self._position = {item: i for i, item in enumerate(catalogue.ids.tolist())}
        self._unit = unit(scorer.item_vectors)  # (n, D) for cosine explanations

    def records(self, recommendations: Sequence[Recommendation]) -> list[dict]:
        """One dict per recommendation with :data:`RECORD_FIELDS`: its fields plus the
        recommended item's artist ("" when unknown) and visual cluster (-1 when unknown)."""
        where = self.positions([r.item_id for r in recommendations])
        cat = self.catalogue
        out = []
        for r, p in zip(recommendations, where.tolist(), strict=True):
            row = {**asdict(r), "artist": str(cat.artists[p]), "cluster": int(cat.clusters[p])}
            out.append({name: row[name] for name in RECORD_FIELDS})
        return out

    @property
    def item_vectors(self) -> np.ndarray:
        """(n, D) item-tower vectors f(x_i) of the catalogue."""
        return self.scorer.item_vectors

    def add_items(
        self,
        ids: Sequence[str],
        features: np.ndarray,
        artists: Sequence[str] | None = None,
        upload_timestamp: int = 0,
    ) -> None:
        """Append new artworks: their item vectors come from the item tower, no training."""
        catalogue = self.catalogue.extend(ids, features, artists, upload_timestamp)
        vectors = self.scorer.embed_items(catalogue.features[len(self.catalogue) :])  # (m, D)
        self.scorer.item_vectors = np.concatenate([self.scorer.item_vectors, vectors])
        self._unit = np.concatenate([self._unit, unit(vectors)])
        start = len(self.catalogue)
        self._position.update({item: start + j for j, item in enumerate(catalogue.ids[start:])})
        self.catalogue = catalogue
        logger.info("added %d items; catalogue now %d", len(vectors), len(catalogue))

    def positions(self, ids: Sequence[str]) -> np.ndarray:
        """Item indices of ``ids``; ValueError naming every unknown id."""
        unknown = [i for i in ids if i not in self._position]
        if unknown:
            raise ValueError(f"unknown artwork ids (not in the catalogue): {unknown}")
        return np.fromiter((self._position[i] for i in ids), dtype=np.int64, count=len(ids))

    def _excluded(self, in_stock_only: bool, at: int | None) -> np.ndarray:
        return ~self.catalogue.in_stock(at) if in_stock_only else self.catalogue.sold_out(at)

    @torch.no_grad()
    def _user_vector(self, h_profile: np.ndarray) -> np.ndarray:
        """g([mean || max]) of one profile's item vectors (m, D) -> (D,)."""
        flush_denormals()
        h = torch.from_numpy(np.ascontiguousarray(h_profile, dtype=np.float32))
        items = torch.arange(len(h))
        offsets = torch.tensor([0, len(h)])
        with one_thread():
            return self.scorer.model.embed_users(h, items, offsets)[0].numpy()

    def _scores(self, users: np.ndarray) -> np.ndarray:
        """(B, D) user vectors -> (B, n) scores; torch's GEMM (numpy's OpenBLAS matvec is
        ~15x slower on a busy 2-core machine)."""
        flush_denormals()
        items = torch.from_numpy(self.item_vectors)  # (n, D), shares memory
        return torch.from_numpy(np.ascontiguousarray(users, np.float32)).mm(items.T).numpy()

    def recommend(
        self,
        profile_ids: Sequence[str],
        k: int = 20,
        in_stock_only: bool = False,
        extra_profile_features: np.ndarray | None = None,
        extra_profile_names: Sequence[str] | None = None,
        at: int | None = None,
    ) -> list[Recommendation]:
        """The top ``k`` items for a profile of catalogue ids plus optional new liked images.

        ``extra_profile_features`` (m, input_dim) are raw embeddings of liked images that
        are not in the catalogue (named ``extra_profile_names``, default ``new-image-j``).
        Profile items and one-of-a-kind items sold out at ``at`` (None: now) are never
        recommended; ``in_stock_only`` also drops items not yet on sale at ``at``.
        """
        positions = self.positions(list(profile_ids))
        extra = self._extra_vectors(extra_profile_features)
        names = self._profile_names(profile_ids, extra, extra_profile_names)
        if len(positions) + len(extra) == 0:
            raise ValueError("the profile is empty: give liked artwork ids or images")
        h_profile = np.concatenate([self.item_vectors[positions], extra])  # (m, D)
        u = self._user_vector(h_profile)  # (D,)
        scores = self._scores(u[None, :])[0]  # (n,)
        scores[self._excluded(in_stock_only, at)] = -np.inf
        scores[positions] = -np.inf
        top = top_k(scores[None, :], k)[0]
        top = top[np.isfinite(scores[top])]  # fewer than k candidates left
        (loo,) = self._leave_one_out([h_profile])
        return self._explain(top, scores[top], positions, h_profile, loo, names)

    def recommend_batch(
        self,
        profiles: Sequence[Sequence[str]],
        k: int = 20,
        in_stock_only: bool = False,
        at: int | None = None,
        chunk: int = 512,
    ) -> list[list[Recommendation]]:
        """:meth:`recommend` for many profiles of catalogue ids: one matrix product per chunk."""
        excluded = self._excluded(in_stock_only, at)
        out: list[list[Recommendation]] = []
        for start in range(0, len(profiles), chunk):
            batch = [list(p) for p in profiles[start : start + chunk]]
            if any(len(p) == 0 for p in batch):
                raise ValueError("every profile needs at least one artwork id")
            positions = [self.positions(p) for p in batch]
            lengths = np.array([len(p) for p in positions], dtype=np.int64)
            offsets = np.concatenate([[0], np.cumsum(lengths)])
            flat = np.concatenate(positions)
            with one_thread():  # small layers: OpenMP sync would cost more than the math
                users = self.scorer.user_vectors(offsets, flat)  # (B, D)
            scores = self._scores(users)  # (B, n)
            scores[:, excluded] = -np.inf
            scores[np.repeat(np.arange(len(batch)), lengths), flat] = -np.inf
            top = top_k(scores, k)  # (B, k')
            h = [self.item_vectors[pos] for pos in positions]  # (m_b, D) each
            loo = self._leave_one_out(h)  # one user-tower pass for the chunk
            for row, pos in enumerate(positions):
                keep = top[row][np.isfinite(scores[row, top[row]])]
                out.append(
                    self._explain(keep, scores[row, keep], pos, h[row], loo[row], list(batch[row]))
                )
        return out

    def _extra_vectors(self, features: np.ndarray | None) -> np.ndarray:
        d = self.item_vectors.shape[1]
        if features is None:
            return np.zeros((0, d), np.float32)
        x = np.asarray(features, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.scorer.model.config.input_dim:
            raise ValueError(
                f"extra_profile_features of shape {x.shape}, expected "
                f"(m, {self.scorer.model.config.input_dim})"
            )
        with one_thread():  # a few liked images: a tiny forward pass
            return self.scorer.embed_items(x)

    @staticmethod
    def _profile_names(
        profile_ids: Sequence[str], extra: np.ndarray, names: Sequence[str] | None
    ) -> list[str]:
        if names is None:
            names = [f"new-image-{j}" for j in range(len(extra))]
        if len(names) != len(extra):
            raise ValueError(f"{len(names)} extra_profile_names for {len(extra)} extra images")
        return [*profile_ids, *names]

    @torch.no_grad()
    def _leave_one_out(self, profiles: Sequence[np.ndarray]) -> list[np.ndarray | None]:
        """Per profile (m, D) of item vectors: the (m, D) user vectors without each item
        (None for a one-item profile, whose only item leaves nothing to pool)."""
        pooled = [leave_one_out_pooled(h) for h in profiles]
        rows = [p for p in pooled if p is not None]
        if not rows:
            return [None] * len(profiles)
        flush_denormals()
        with one_thread():
            users = self.scorer.model.user_tower(torch.from_numpy(np.concatenate(rows))).numpy()
        parts = iter(np.split(users, np.cumsum([len(p) for p in rows])[:-1]))
        return [None if p is None else next(parts) for p in pooled]

    def contributions(
        self,
        items: np.ndarray,  # (k,) catalogue indices of the scored items
        scores: np.ndarray,  # (k,) their scores for the whole profile
        loo_users: np.ndarray | None,  # (m, D) user vectors without each liked item
    ) -> np.ndarray:
        """(k, m) leave-one-out contributions: ``scores[:, None]`` minus each item's score
        for the profile without liked item j. A one-item profile (``loo_users`` None) has
        no user vector without its item: that item contributes the whole score."""
        if loo_users is None:
            return np.asarray(scores, np.float64)[:, None]
        without = self.item_vectors[items] @ loo_users.T  # (k, m)
        return np.asarray(scores, np.float64)[:, None] - without

    def _explain(
        self,
        top: np.ndarray,  # (k,) item indices, best first
        scores: np.ndarray,  # (k,)
        positions: np.ndarray,  # (m_known,) catalogue indices of the profile
        h_profile: np.ndarray,  # (m, D) item vectors of the profile, known items first
        loo_users: np.ndarray | None,  # (m, D) user vectors without each profile item
        names: Sequence[str],  # (m,) profile item names
    ) -> list[Recommendation]:
        if len(top) == 0:
            return []
        contribution = self.contributions(top, scores, loo_users)  # (k, m)
        best = contribution.argmax(axis=1)  # (k,) first of ties: profile order
        sims = self._unit[top] @ unit(h_profile).T  # (k, m) cosine
        cat = self.catalogue
        out = []
        for rank, (item, j) in enumerate(zip(top.tolist(), best.tolist(), strict=True), 1):
            known = j < len(positions)
            p = int(positions[j]) if known else -1
            artist = cat.artists[item]
            cluster = int(cat.clusters[item])
            out.append(
                Recommendation(
                    item_id=str(cat.ids[item]),
                    score=float(scores[rank - 1]),
                    rank=rank,
                    because=str(names[j]),
                    contribution=float(contribution[rank - 1, j]),
                    similarity=float(sims[rank - 1, j]),
                    same_artist=bool(known and artist != "" and artist == cat.artists[p]),
                    same_cluster=bool(
                        known and cluster != UNKNOWN_CLUSTER and cluster == cat.clusters[p]
                    ),
                )
            )
        return out


def recommendations_figure(
    rows: Sequence[tuple[str, Sequence[str], Sequence[Recommendation]]],
    thumbnail: Callable[[str], np.ndarray | None],
    per_row: int = 10,
) -> bytes:
    """PNG: per user, the profile thumbnails in one row and the top recommendations below.

    ``rows`` holds (user label, profile ids, recommendations); ``thumbnail(id)`` an
    (H, W, 3) uint8 image or None (a grey tile with the id is drawn instead).
    Drawn on a bare ``Figure`` with the Agg canvas: no pyplot, no global backend.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n_rows = 2 * max(len(rows), 1)
    fig = Figure(figsize=(1.25 * per_row, 1.9 * n_rows), dpi=80)
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_rows, per_row, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.axis("off")
    for r, (label, profile, recs) in enumerate(rows):
        shown = list(profile)[:per_row]
        for c, item in enumerate(shown):
            _tile(axes[2 * r, c], thumbnail(item), item[:8], "#1f77b4")
        more = f" (+{len(profile) - len(shown)} more)" if len(profile) > len(shown) else ""
        axes[2 * r, 0].set_title(f"{label}: profile{more}", loc="left", fontsize=9, x=0.0)
        for c, rec in enumerate(list(recs)[:per_row]):
            colour = "#2ca02c" if rec.same_artist else "#7f7f7f"
            text = (
                f"#{rec.rank} {rec.item_id[:8]}\n{rec.score:.2f}\n"
                f"~{rec.because[:8]} {rec.similarity:.2f}\n"
                f"{'artist ' if rec.same_artist else ''}{'cluster' if rec.same_cluster else ''}"
            )
            _tile(axes[2 * r + 1, c], thumbnail(rec.item_id), text, colour)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _tile(ax, image: np.ndarray | None, text: str, colour: str) -> None:
    ax.axis("on")
    if image is None:
        image = np.full((8, 8, 3), 200, dtype=np.uint8)
    ax.imshow(image)
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(2)
    ax.set_xlabel(text, fontsize=6)


# ----------------------------------------------------------------------------- samples


def sample_test_users(
    recommender: Recommender, split: TrainTestSplit, n_users: int, k: int
) -> list[tuple[str, list[str], list[Recommendation], set[str], int]]:
    """(user id, profile ids, top-k, hidden basket ids, time) of evenly spaced test users.

    Each user is served at the time of the hidden purchase, from the stock on sale then.
    """
    ids = recommender.catalogue.ids
    picks = np.unique(np.linspace(0, len(split.test_users) - 1, n_users).astype(int))
    out = []
    for t in picks[: len(split.test_users)]:
        user = int(split.test_users[t])
        lo, hi = split.basket_item_offsets[split.user_basket_offsets[[user, user + 1]]]
        profile = [str(i) for i in ids[np.unique(split.basket_items[lo:hi])]]
        hidden = split.test_items[split.test_item_offsets[t] : split.test_item_offsets[t + 1]]
        at = int(split.test_timestamps[t])
        recs = recommender.recommend(profile, k=k, in_stock_only=True, at=at)
        out.append((str(split.user_ids[user]), profile, recs, {str(i) for i in ids[hidden]}, at))
    return out


def sample_invariants(catalogue: Catalogue, shown: list) -> tuple[bool, bool]:
    """(no profile or sold-out item recommended, every explanation is a profile item)."""
    position = {item: i for i, item in enumerate(catalogue.ids.tolist())}
    clean = explained = True
    for _, profile, recs, _, at in shown:
        sold = catalogue.sold_out(at)
        liked = set(profile)
        clean &= all(r.item_id not in liked and not sold[position[r.item_id]] for r in recs)
        explained &= all(r.because in liked for r in recs)
    return clean, explained
