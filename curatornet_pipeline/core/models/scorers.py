"""Scorers (:class:`curatornet_pipeline.core.types.Scorer`) for every model of the evaluation.

CuratorNet (Messina et al., "CuratorNet: Visually-aware Recommendation of Art Images",
2020), VBPR (He & McAuley, AAAI 2016), VisRank (max visual similarity to the profile,
the content-based baseline of the CuratorNet paper), Random and Oracle. Scoring is numpy
only: item vectors are computed once at construction.
"""

import logging

import numpy as np
import torch

from curatornet_pipeline.core import ragged
from curatornet_pipeline.core.models.networks import VBPR, CuratorNet
from curatornet_pipeline.core.types import TrainTestSplit
from curatornet_pipeline.kernels.machine import flush_denormals

logger = logging.getLogger(__name__)


class CuratorNetScorer:
    """score(u, i) = g(P_u) . f(x_i) with f(x_i) precomputed for the whole catalogue."""

    name = "curatornet"

    def __init__(self, model: CuratorNet, features: np.ndarray, chunk: int = 8192):
        self.model = model.cpu().eval()
        self.chunk = chunk
        self.item_vectors = self.embed_items(features)  # (n_items, D)

    @torch.no_grad()
    def embed_items(self, features_new: np.ndarray) -> np.ndarray:
        """f(x) for any items, catalogue or new: (N, input_dim) -> (N, D) float32."""
        flush_denormals()
        x = np.asarray(features_new, dtype=np.float32)
        out = [
            self.model.embed_items(torch.from_numpy(x[s : s + self.chunk])).numpy()
            for s in range(0, len(x), self.chunk)
        ]
        d = self.model.config.item_layers[-1]
        return np.concatenate(out) if out else np.zeros((0, d), np.float32)

    @torch.no_grad()
    def user_vectors(self, profile_offsets: np.ndarray, profile_items: np.ndarray) -> np.ndarray:
        """g([mean || max] of the profile item vectors): (B, D) float32. Profiles must be non-empty."""
        flush_denormals()
        offsets, items = ragged.check(profile_offsets, profile_items, "profile_offsets")
        if np.any(np.diff(offsets) == 0):
            raise ValueError("CuratorNet needs at least one profile item per user")
        h = torch.from_numpy(self.item_vectors)  # (n_items, D)
        return self.model.embed_users(h, torch.from_numpy(items), torch.from_numpy(offsets)).numpy()

    def score(
        self, profile_offsets: np.ndarray, profile_items: np.ndarray, users: np.ndarray
    ) -> np.ndarray:
        return (self.user_vectors(profile_offsets, profile_items) @ self.item_vectors.T).astype(
            np.float32, copy=False
        )  # (B, n_items)


class VBPRScorer:
    """x_ui = beta_i + [gamma_u || theta_u] . [gamma_i || E f_i] + beta'.f_i for known users."""

    name = "vbpr"

    def __init__(self, model: VBPR, features: np.ndarray):
        model = model.cpu().eval()
        flush_denormals()
        with torch.no_grad():
            items = torch.arange(model.config.n_items)
            v, b = model.item_terms(items, torch.from_numpy(np.asarray(features, np.float32)))
            self.item_vectors = v.numpy()  # (n_items, K + K')
            self.item_bias = b.numpy()  # (n_items,)
            self.user_vectors = torch.cat([model.gamma_user, model.theta_user], 1).numpy()

    def score(
        self, profile_offsets: np.ndarray, profile_items: np.ndarray, users: np.ndarray
    ) -> np.ndarray:
        users = np.asarray(users, dtype=np.int64)
        if np.any(users < 0) or np.any(users >= len(self.user_vectors)):
            raise ValueError("VBPR cannot score unknown users (index -1 or beyond training users)")
        scores = self.user_vectors[users] @ self.item_vectors.T + self.item_bias  # (B, n_items)
        return scores.astype(np.float32, copy=False)


class VisRankScorer:
    """VisRank: score(u, i) = max over profile items j of cos(x_i, x_j).

    Users with an empty profile get 0 for every item.
    """

    name = "visrank"

    def __init__(self, features: np.ndarray, chunk_rows: int = 4096):
        x = np.asarray(features, dtype=np.float32)
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        self.unit = x / np.maximum(norms, 1e-12)  # (n_items, d)
        self.chunk_rows = chunk_rows

    def score(
        self, profile_offsets: np.ndarray, profile_items: np.ndarray, users: np.ndarray
    ) -> np.ndarray:
        offsets, items = ragged.check(profile_offsets, profile_items, "profile_offsets")
        n_users, n_items = len(offsets) - 1, len(self.unit)
        out = np.zeros((n_users, n_items), dtype=np.float32)
        nonempty = np.flatnonzero(np.diff(offsets) > 0)
        # chunks of whole profiles so that the (rows, n_items) similarity block stays small
        start = 0
        while start < len(nonempty):
            stop = start + 1
            base = offsets[nonempty[start]]
            while stop < len(nonempty) and offsets[nonempty[stop] + 1] - base <= self.chunk_rows:
                stop += 1
            users_k = nonempty[start:stop]
            lo, hi = offsets[users_k[0]], offsets[users_k[-1] + 1]
            sims = self.unit[items[lo:hi]] @ self.unit.T  # (rows, n_items)
            out[users_k] = np.maximum.reduceat(sims, offsets[users_k] - lo, axis=0)
            start = stop
        return out


class RandomScorer:
    """Uniform random scores, seeded."""

    name = "random"

    def __init__(self, n_items: int, seed: int = 0):
        self.n_items = n_items
        self.rng = np.random.default_rng(seed)

    def score(
        self, profile_offsets: np.ndarray, profile_items: np.ndarray, users: np.ndarray
    ) -> np.ndarray:
        return self.rng.random((len(profile_offsets) - 1, self.n_items), dtype=np.float32)


class OracleScorer:
    """Knows the hidden test baskets: 1 + noise for hidden items, noise in [0, 0.5) otherwise.

    Keyed by user index (``TrainTestSplit.test_users``); unknown users get noise only.
    """

    name = "oracle"

    def __init__(self, split: TrainTestSplit, seed: int = 0):
        self.n_items = split.n_items
        self.rng = np.random.default_rng(seed)
        self.hidden: dict[int, np.ndarray] = {
            int(u): split.test_items[split.test_item_offsets[k] : split.test_item_offsets[k + 1]]
            for k, u in enumerate(split.test_users)
        }

    def score(
        self, profile_offsets: np.ndarray, profile_items: np.ndarray, users: np.ndarray
    ) -> np.ndarray:
        users = np.asarray(users, dtype=np.int64)
        out = self.rng.random((len(users), self.n_items), dtype=np.float32) * np.float32(0.5)
        for row, u in enumerate(users):
            hidden = self.hidden.get(int(u))
            if hidden is not None:
                out[row, hidden] += np.float32(1.0)
        return out


def for_model(model, features: np.ndarray) -> "CuratorNetScorer | VBPRScorer":
    """The scorer of a trained CuratorNet or VBPR over the catalogue's ``features``."""
    cls = CuratorNetScorer if model.kind == "curatornet" else VBPRScorer
    return cls(model, features)
