"""The experiment's grid: which model variants exist and which triples each one trains on.

Table 2 trains CuratorNet and VBPR at every L2 weight of the grid on the guidelines'
triples; Figure 3 compares, at ``ablation_l2``, each with the same model trained on exactly
as many uniform random triples (:func:`match_size`), so the paired test measures the
sampling, not the amount of data.

- CuratorNet uses all six guidelines (:data:`~.types.GUIDELINE_STRATEGIES`).
- VBPR uses the paper's guidelines 3 and 4 (:data:`~.types.VBPR_GUIDELINES`):
  it has one vector per real user and no notion of baskets.
- The ``random`` partition is sampled at six times ``n_per_strategy``
  (:func:`~.sampling.strategy_target`), enough for CuratorNet's partner;
  VBPR's partner takes a seeded subset of it.

The Dagster layer partitions the models by these variants: one asset per
family over its weight decays (:func:`l2_key`), and one for the
random-sampling pair, each reading exactly the triplet partitions
:func:`triplet_partitions_for` names.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np

from curatornet_pipeline.core.sampling.triples import select, take_rows
from curatornet_pipeline.core.types import (
    GUIDELINE_STRATEGIES,
    STRATEGY_INFO,
    VBPR_GUIDELINES,
    Triplets,
)

KINDS: tuple[str, ...] = ("curatornet", "vbpr")
SAMPLINGS: tuple[str, ...] = ("guidelines", "random")
FAMILY_LABEL = {"curatornet": "CuratorNet", "vbpr": "VBPR"}
FAMILY_LABELS = FAMILY_LABEL
RANDOM_STRATEGY = "random"
#: Model families and the triplet partitions their guideline variants read.
FAMILY_STRATEGIES: dict[str, tuple[str, ...]] = {
    "curatornet": GUIDELINE_STRATEGIES,
    "vbpr": VBPR_GUIDELINES,
}


@dataclass(frozen=True)
class ModelGrid:
    """The weight decays of Table 2 per family and the one of the sampling ablation."""

    curatornet_l2: tuple[float, ...] = (0.0, 1e-4, 1e-3, 1e-2)  # paper, Table 2
    vbpr_l2: tuple[float, ...] = (0.0, 1e-4, 1e-3, 1e-2)  # paper, Table 2
    ablation_l2: float = 1e-4  # Figure 3: both samplings at this lambda

    def l2_grid(self, family: str) -> tuple[float, ...]:
        return tuple(float(x) for x in getattr(self, f"{family}_l2"))

    def spec(self) -> dict[str, Any]:
        return {
            "curatornet_l2": list(self.curatornet_l2),
            "vbpr_l2": list(self.vbpr_l2),
            "ablation_l2": self.ablation_l2,
        }


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
    def family(self) -> str:
        return self.kind

    @property
    def strategies(self) -> tuple[str, ...]:
        """The triplet partitions this variant reads (see :func:`triplet_partitions_for`)."""
        return triplet_partitions_for(self)

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


def l2_key(l2: float) -> str:
    """Partition key of a weight decay: ``l0``, ``l0.0001``."""
    return f"l{float(l2):g}"


def l2_from_key(key: str) -> float:
    if not key.startswith("l"):
        raise ValueError(f"model partition {key!r}: expected 'l<lambda>', e.g. 'l0.0001'")
    try:
        return float(key[1:])
    except ValueError as exc:
        raise ValueError(f"model partition {key!r}: {key[1:]!r} is not a number") from exc


def guideline_variant(kind: str, l2: float) -> Variant:
    return Variant(f"{kind}-{l2_key(l2)}", kind, float(l2), "guidelines")


def random_variant(kind: str, grid: ModelGrid) -> Variant:
    return Variant(f"{kind}-random", kind, float(grid.ablation_l2), "random")


def ablation_label_pairs(grid: ModelGrid, available: set[str]) -> dict[str, tuple[str, str]]:
    """Figure 3's comparisons by Table 2 label: family -> (guideline label, random label).

    Only pairs whose two models are both ``available`` are returned.
    """
    out = {}
    for kind in KINDS:
        guided = guideline_variant(kind, grid.ablation_l2).label
        uniform = random_variant(kind, grid).label
        if guided in available and uniform in available:
            out[FAMILY_LABEL[kind]] = (guided, uniform)
    return out


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


def validation_auc(payload: dict) -> float:
    """A trained model's validation AUC at its best epoch (its held-out training baskets),
    from its payload's ``extra``; NaN for a model trained without the validation hold-out.
    The champion and the sample recommendations choose the weight decay on it."""
    value = (payload.get("extra", {}).get("best_validation") or {}).get("val_auc")
    return float("nan") if value is None else float(value)


#: The model assets of the graph: one per family over its weight decays, and the
#: random-sampling pair (partitioned by family).
MODEL_ASSETS = ("curatornet_models", "vbpr_models", "random_sampling_models")


def label_of(asset_partition: str, grid: ModelGrid) -> str | None:
    """Table 2 label of a model asset partition such as ``vbpr_models[l0.0001]``."""
    asset, _, partition = asset_partition.rstrip("]").partition("[")
    if asset == "random_sampling_models":
        return random_variant(partition, grid).label
    if asset in MODEL_ASSETS:
        family = asset.removesuffix("_models")
        return guideline_variant(family, l2_from_key(partition)).label
    return None
