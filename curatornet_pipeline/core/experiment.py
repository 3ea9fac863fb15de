"""The experiment's grid: which model variants exist and which triples each one trains on.

Table 2 trains CuratorNet and VBPR at every L2 weight of the grid on the
guidelines' triples; Figure 3 compares, at one L2 weight (``ablation_l2``), each
model trained on the guidelines with the same model trained on uniform random
triples. The comparison is *size-matched*: the random-sampling variant trains on
exactly as many training (and validation) triples as its guideline partner,
with the same epochs and schedule, so the paired test measures the sampling and
not the amount of data (:func:`match_size`).

- CuratorNet uses all six guidelines (:data:`~.types.GUIDELINE_STRATEGIES`).
- VBPR uses the paper's guidelines 3 and 4 (:data:`~.types.VBPR_GUIDELINES`):
  it has one vector per real user and no notion of baskets.
- The ``random`` partition is sampled at six times ``n_per_strategy``
  (:func:`~.sampling.strategy_target`), enough for CuratorNet's partner;
  VBPR's partner takes a seeded subset of it.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np

from curatornet_pipeline.core.sampling import select, take_rows
from curatornet_pipeline.core.types import (
    GUIDELINE_STRATEGIES,
    STRATEGY_INFO,
    VBPR_GUIDELINES,
    Triplets,
)

KINDS: tuple[str, ...] = ("curatornet", "vbpr")
SAMPLINGS: tuple[str, ...] = ("guidelines", "random")
FAMILY_LABEL = {"curatornet": "CuratorNet", "vbpr": "VBPR"}


@dataclass(frozen=True)
class Variant:
    """One trained model of Table 2 or Figure 3."""

    name: str  # partition key, e.g. "curatornet-l0.0001" or "vbpr-random"
    kind: str  # "curatornet" | "vbpr"
    l2: float  # weight decay lambda
    sampling: str  # "guidelines" | "random"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Variant {self.name!r}: kind must be one of {KINDS}")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"Variant {self.name!r}: sampling must be one of {SAMPLINGS}")

    @property
    def label(self) -> str:
        """Table 2 row label, e.g. 'CuratorNet (0.0001)' or 'VBPR (random sampling)'."""
        family = FAMILY_LABEL[self.kind]
        return (
            f"{family} (random sampling)"
            if self.sampling == "random"
            else f"{family} ({self.l2:g})"
        )


def variants(spec: dict[str, Any]) -> dict[str, Variant]:
    """The variants of a ``models`` spec: ``{"curatornet_l2": [...], "vbpr_l2": [...], "ablation_l2": x}``.

    One guideline variant per (kind, L2 weight), plus one random-sampling variant
    per kind at ``ablation_l2``. Ordered: CuratorNet first, then VBPR.
    """
    missing = [k for k in ("curatornet_l2", "vbpr_l2", "ablation_l2") if k not in spec]
    if missing:
        raise ValueError(f"models spec lacks {missing}")
    out: list[Variant] = []
    for kind in KINDS:
        for l2 in spec[f"{kind}_l2"]:
            out.append(Variant(f"{kind}-l{l2:g}", kind, float(l2), "guidelines"))
        out.append(Variant(f"{kind}-random", kind, float(spec["ablation_l2"]), "random"))
    return {v.name: v for v in out}


def guideline_strategies(kind: str) -> tuple[str, ...]:
    """The guideline partitions a model kind trains on: all six, or VBPR's two."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return GUIDELINE_STRATEGIES if kind == "curatornet" else VBPR_GUIDELINES


def triplet_partitions_for(variant: Variant) -> tuple[str, ...]:
    """The ``triplets`` partitions a variant trains on.

    A random-sampling variant reads the ``random`` partition, cut to its guideline
    partner's size by :func:`match_size`, so it depends on that partner's
    partitions as well (listed after ``random``).
    """
    guided = guideline_strategies(variant.kind)
    return guided if variant.sampling == "guidelines" else ("random", *guided)


def paper_guidelines_of(variant: Variant) -> str:
    """The paper's numbers of the guidelines a variant trains on, e.g. '1,2,3,4,5,6' or 'random'."""
    if variant.sampling == "random":
        return "random"
    numbers = sorted(STRATEGY_INFO[s].paper_guideline for s in guideline_strategies(variant.kind))
    return ",".join(str(n) for n in numbers)


def ablation_pairs(grid: dict[str, Variant]) -> dict[str, tuple[Variant, Variant]]:
    """Figure 3's pairs: family label -> (guideline variant, random variant) at the same L2."""
    out = {}
    for kind in KINDS:
        rand = [v for v in grid.values() if v.kind == kind and v.sampling == "random"]
        for r in rand:
            guided = [
                v
                for v in grid.values()
                if v.kind == kind and v.sampling == "guidelines" and v.l2 == r.l2
            ]
            if guided:
                out[FAMILY_LABEL[kind]] = (guided[0], r)
    return out


def training_counts(triplets: Triplets, users_only: bool = False) -> tuple[int, int]:
    """(training triples, validation triples) a model would train on; ``users_only``: VBPR."""
    keep = triplets.user >= 0 if users_only else np.ones(len(triplets), bool)
    val = np.asarray(triplets.is_validation, bool)
    return int((keep & ~val).sum()), int((keep & val).sum())


def match_size(random: Triplets, n_train: int, n_validation: int, seed: int = 0) -> Triplets:
    """A seeded subset of ``random`` with exactly ``n_train`` training and ``n_validation`` validation triples.

    Rows keep their order (the subset is a uniform choice without replacement in
    each split). Raises ``ValueError`` when ``random`` holds fewer than asked: a
    size-matched comparison must not silently train on less data.
    """
    val = np.asarray(random.is_validation, bool)
    train_rows, val_rows = np.flatnonzero(~val), np.flatnonzero(val)
    if len(train_rows) < n_train or len(val_rows) < n_validation:
        raise ValueError(
            f"random triples: {len(train_rows)} training + {len(val_rows)} validation, "
            f"size-matching needs {n_train} + {n_validation}; sample the random partition "
            "at six times n_per_strategy (SamplingConfig.size_matched_random)"
        )
    rng = np.random.default_rng([seed, n_train, n_validation])
    rows = np.sort(
        np.concatenate(
            [
                rng.choice(train_rows, n_train, replace=False),
                rng.choice(val_rows, n_validation, replace=False),
            ]
        )
    )
    meta = {
        **random.meta,
        "size_matched": {"train": n_train, "validation": n_validation, "seed": seed},
    }
    return take_rows(random, rows, meta)


def training_triples(
    variant: Variant, guideline_union: Triplets, random: Triplets, seed: int = 0
) -> Triplets:
    """The triples ``variant`` trains on, size-matched for random variants.

    ``guideline_union`` is the disjoint union of the six guidelines (the
    ``training_set`` asset); ``random`` the ``random`` partition.
    """
    guided = guideline_union
    if variant.kind == "vbpr":
        guided = select(guideline_union, VBPR_GUIDELINES)
    if variant.sampling == "guidelines":
        return guided
    n_train, n_val = training_counts(guided, users_only=variant.kind == "vbpr")
    return match_size(random, n_train, n_val, seed)
