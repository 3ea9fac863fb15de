"""The triples of a training run as batches: each batch holds every unique item and every
distinct profile once (see :class:`~curatornet_pipeline.core.models.networks.TripletBatch`),
cut by a budget of profile items; the item tower runs once per item of a batch, the pooling
and user tower once per profile, however many triples share them.
"""

import functools
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch

from curatornet_pipeline.core import ragged
from curatornet_pipeline.core.models.networks import VBPR, CuratorNet, TripletBatch
from curatornet_pipeline.core.types import Triplets

if TYPE_CHECKING:
    from curatornet_pipeline.core.training.train import TrainConfig

# see TripleSet: at most 1/0.9 - 1 = 11% more first-layer work, for no (U, 2048) copy
WHOLE_CATALOGUE_AT = 0.9


class TripleSet:
    """The triples of one split as flat arrays, with a batch builder.

    A batch touching at least ``whole_catalogue_at`` of the catalogue runs its item tower on
    every item (``x`` is the feature matrix itself: no (U, F) gather; why:
    docs/architecture.md, "The item tower runs on the whole catalogue"). With ``own_items``
    (VBPR: SparseAdam needs the batch's own item rows) only ``x`` is the whole matrix
    (``catalogue_x``).
    """

    def __init__(
        self,
        t: Triplets,
        mask: np.ndarray,
        with_profiles: bool,
        with_users: bool,
        whole_catalogue_at: float = math.inf,
        own_items: bool = False,
    ):
        cols = [
            np.asarray(c)[mask].astype(np.int64)
            for c in (t.profile, t.positive, t.negative, t.user)
        ]
        if with_users:
            cols = [c[cols[3] >= 0] for c in cols]
        self.profile, self.positive, self.negative, self.user = cols
        self.with_profiles = with_profiles
        self.whole_catalogue_at = whole_catalogue_at
        self.own_items = own_items
        self.scaled = False  # the features given to batch() are already z-scored
        self.offsets = np.asarray(t.profile_offsets, dtype=np.int64)
        self.items = np.asarray(t.profile_items, dtype=np.int64)
        if with_profiles:
            self.sizes = self.offsets[self.profile + 1] - self.offsets[self.profile]  # (N,)
            if len(self.sizes) and self.sizes.min() < 1:
                raise ValueError("CuratorNet triples need non-empty profiles")
        else:
            self.sizes = np.zeros(len(self.positive), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.positive)

    def cuts(self, order: np.ndarray, budget: int, cap: int) -> list[tuple[int, int]]:
        """Consecutive ranges of ``order``: sum of profile sizes <= budget, count <= cap."""
        csum = np.concatenate([[0], np.cumsum(self.sizes[order])])
        ranges, start, n = [], 0, len(order)
        while start < n:
            stop = int(np.searchsorted(csum, csum[start] + budget, side="right")) - 1
            stop = min(max(stop, start + 1), start + cap, n)  # a lone giant profile still goes
            ranges.append((start, stop))
            start = stop
        return ranges

    def batch(self, idx: np.ndarray, features: torch.Tensor, device: torch.device) -> TripletBatch:
        pos, neg = self.positive[idx], self.negative[idx]
        b = len(idx)
        profile_of = None
        if self.with_profiles:
            p = self.profile[idx]
            distinct, inverse_p = np.unique(p, return_inverse=True)
            if len(distinct) < b:  # triples share profiles: pool and run g once per profile
                p, profile_of = distinct, torch.from_numpy(inverse_p.reshape(-1)).to(device)
            offsets, prof = ragged.take_rows(self.offsets, self.items, p)
        else:
            offsets = np.zeros(b + 1, dtype=np.int64)
            prof = np.zeros(0, dtype=np.int64)
        referenced = np.concatenate([prof, pos, neg])
        n_items = features.shape[0]
        used = np.zeros(n_items, dtype=bool)
        used[referenced] = True
        n_used = int(np.count_nonzero(used))
        s = len(prof)
        whole = n_used >= self.whole_catalogue_at * n_items
        catalogue_x = False
        if whole and not self.own_items:
            items_t = torch.arange(n_items, device=device)
            x, inverse = features, referenced
        else:
            items = np.flatnonzero(used)
            local = np.cumsum(used, dtype=np.int64) - 1  # catalogue index -> row of ``items``
            inverse = local[referenced]
            items_t = torch.from_numpy(items).to(device)
            if whole:  # the batch's own item rows, the features read in place
                x, catalogue_x = features, True
            else:
                x = features.index_select(0, items_t)
        return TripletBatch(
            items=items_t,
            x=x,
            profile_offsets=torch.from_numpy(offsets).to(device),
            profile_items=torch.from_numpy(inverse[:s]).to(device),
            positive=torch.from_numpy(inverse[s : s + b]).to(device),
            negative=torch.from_numpy(inverse[s + b :]).to(device),
            users=torch.from_numpy(self.user[idx]).to(device),
            scaled=self.scaled,
            profile_of=profile_of,
            catalogue_x=catalogue_x,
        )

    def batches(
        self, order: np.ndarray, config: "TrainConfig", features: torch.Tensor, device: torch.device
    ) -> Iterator[TripletBatch]:
        for start, stop in self.cuts(
            order, config.max_profile_items_per_batch, config.batch_triples
        ):
            yield self.batch(order[start:stop], features, device)


def triple_sets(
    model: CuratorNet | VBPR, train: Triplets, validation: Triplets
) -> tuple["TripleSet", "TripleSet"]:
    with_profiles = bool(model.needs_profiles)
    with_users = isinstance(model, VBPR)
    # VBPR's per-item rows (gamma_i, beta_i) stay the batch's own: only its features are read
    # from the whole catalogue
    sets = functools.partial(
        TripleSet,
        with_profiles=with_profiles,
        with_users=with_users,
        whole_catalogue_at=WHOLE_CATALOGUE_AT,
        own_items=model.kind == "vbpr",
    )
    train_set = sets(train, ~np.asarray(train.is_validation, bool))
    val_mask = (
        np.asarray(validation.is_validation, bool)
        if validation is train
        else np.ones(len(validation), dtype=bool)
    )
    val_set = sets(validation, val_mask)
    if len(train_set) == 0:
        what = "triples of real users (user >= 0)" if with_users else "training triples"
        raise ValueError(f"no {what} to train {type(model).__name__} on")
    if len(val_set) == 0:
        raise ValueError("no validation triples (is_validation) to select the best epoch")
    return train_set, val_set


@torch.no_grad()
def scaled_features(model, features: np.ndarray, device, *sets: "TripleSet") -> torch.Tensor:
    """The catalogue's features z-scored once by the model's fixed scaler (frozen inputs),
    so batches skip the per-batch (U, F) subtract and divide."""
    raw = torch.as_tensor(np.asarray(features, dtype=np.float32), device=device)
    for s in sets:
        s.scaled = True
    return model.scale(raw)
