"""The paper's experiment as data: which models are trained, on which triples, compared how.

Table 2 trains CuratorNet and VBPR at every weight decay of a grid on the
guidelines' triples; Figure 3 trains each family once more, at one weight
decay, on uniformly sampled triples, and compares the two per user. This module
names those variants, the triplet partitions each one reads, and the pairs the
ablation compares, so the Dagster layer, the reports and the command line all
agree on them.
"""

from dataclasses import dataclass, field

from curatornet_pipeline.core.types import GUIDELINE_STRATEGIES

#: VBPR learns one vector per real user and has no notion of baskets: of the
#: guidelines it can use only the real-user, basket-free ones -- the paper's
#: guidelines 3 and 4 (reference cells 3 and 1), by elimination (Figure 3).
VBPR_STRATEGIES: tuple[str, ...] = ("s1_user_profile", "s3_artist_cluster")

#: Model families and the triplet partitions their guideline variants read.
FAMILY_STRATEGIES: dict[str, tuple[str, ...]] = {
    "curatornet": GUIDELINE_STRATEGIES,
    "vbpr": VBPR_STRATEGIES,
}
FAMILY_LABELS = {"curatornet": "CuratorNet", "vbpr": "VBPR"}
RANDOM_STRATEGY = "random"


@dataclass(frozen=True)
class ModelGrid:
    """The weight decays of Table 2 per family and the one of the sampling ablation."""

    curatornet_l2: tuple[float, ...] = (0.0, 1e-4, 1e-3, 1e-2)  # paper, Table 2
    vbpr_l2: tuple[float, ...] = (0.0, 1e-4, 1e-3, 1e-2)  # paper, Table 2
    ablation_l2: float = 1e-4  # Figure 3: both samplings at this lambda

    def l2_grid(self, family: str) -> tuple[float, ...]:
        return tuple(float(x) for x in getattr(self, f"{family}_l2"))


@dataclass(frozen=True)
class Variant:
    """One trained model of Table 2 or Figure 3."""

    family: str  # "curatornet" | "vbpr"
    l2: float  # weight decay lambda
    sampling: str  # "guidelines" | "random"
    strategies: tuple[str, ...] = field(default=())  # triplet partitions it trains on

    @property
    def name(self) -> str:
        """Stable id, e.g. ``curatornet-l0.0001`` or ``vbpr-random``."""
        suffix = "random" if self.sampling == "random" else f"l{self.l2:g}"
        return f"{self.family}-{suffix}"

    @property
    def label(self) -> str:
        """Row label of Table 2, e.g. ``CuratorNet (0.0001)``."""
        family = FAMILY_LABELS[self.family]
        return (
            f"{family} (random sampling)"
            if self.sampling == "random"
            else f"{family} ({self.l2:g})"
        )


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


def guideline_variant(family: str, l2: float) -> Variant:
    return Variant(family, float(l2), "guidelines", FAMILY_STRATEGIES[family])


def random_variant(family: str, grid: ModelGrid) -> Variant:
    return Variant(family, float(grid.ablation_l2), "random", (RANDOM_STRATEGY,))


def variants(grid: ModelGrid) -> list[Variant]:
    """Every model the experiment trains: the Table 2 grid, then the ablation's."""
    out = [guideline_variant(f, l2) for f in FAMILY_STRATEGIES for l2 in grid.l2_grid(f)]
    out += [random_variant(f, grid) for f in FAMILY_STRATEGIES]
    return out


def variant_by_label(grid: ModelGrid) -> dict[str, Variant]:
    return {v.label: v for v in variants(grid)}


def ablation_pairs(grid: ModelGrid, available: set[str]) -> dict[str, tuple[str, str]]:
    """Figure 3's comparisons: family label -> (guideline label, random-sampling label).

    Only pairs whose two models are both ``available`` (Table 2 labels) are returned.
    """
    out = {}
    for family in FAMILY_STRATEGIES:
        guided = guideline_variant(family, grid.ablation_l2).label
        uniform = random_variant(family, grid).label
        if guided in available and uniform in available:
            out[FAMILY_LABELS[family]] = (guided, uniform)
    return out
