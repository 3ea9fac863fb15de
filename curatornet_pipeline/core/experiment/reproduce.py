"""The paper's experiment at a named training budget, as one function and one report.

:func:`run` takes a dataset folder in the published format and a
:class:`Budget` (triples per guideline, epochs, L2 grid, seeds, the budgets
of the curve) and runs the paper's protocol on the core functions: embed (or
read imported vectors), standard-scale + PCA + k-means, split off the last
basket, hold out one more basket of training users for validation, sample the
six guidelines and the size-matched random partition, train CuratorNet and
VBPR at every L2 weight and the random-sampling variants, evaluate every model
with VisRank, Random and Oracle on both candidate protocols, run Figure 3's
paired tests, and repeat CuratorNet/VBPR at smaller budgets for the budget
curve. :mod:`.writeup` writes it up like ``docs/reproduction.md``. Why it runs without
Dagster: docs/architecture.md, "The experiment in the core".
"""

import dataclasses
import logging
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from curatornet_pipeline.core.data import catalogue as catalogue_core
from curatornet_pipeline.core.data import formats as data_core
from curatornet_pipeline.core.data import vectors as vectors_core
from curatornet_pipeline.core.evaluation import evaluate as eval_core
from curatornet_pipeline.core.evaluation import report as report_core
from curatornet_pipeline.core.experiment import grid as experiment
from curatornet_pipeline.core.models import scorers
from curatornet_pipeline.core.sampling import triples as sampling_core
from curatornet_pipeline.core.split import baskets as split_core
from curatornet_pipeline.core.split import validation
from curatornet_pipeline.core.training import fit as fit_core
from curatornet_pipeline.core.training import train as train_core
from curatornet_pipeline.core.types import (
    GUIDELINE_STRATEGIES,
    STRATEGIES,
    STRATEGY_INFO,
    ItemVectors,
    Triplets,
)
from curatornet_pipeline.core.visual import cluster as cluster_core
from curatornet_pipeline.core.visual import embed as embed_core
from curatornet_pipeline.core.visual.store import EmbeddingStore
from curatornet_pipeline.kernels.machine import processor

logger = logging.getLogger(__name__)

#: Mean profile size of the reference sampler's triples on the real UGallery data.
REFERENCE_PROFILE_MEANS = {"all six": 1.96, "s5_next_basket": 3.5, "s6_hide_one": 2.6}

#: The paper's Table 2 ordering by AUC (methods as labelled here).
PAPER_ORDER_AUC = (
    "Oracle", "CuratorNet (0.0001)", "CuratorNet (0.001)", "VisRank", "CuratorNet (0)",
    "CuratorNet (0.01)", "VBPR (0.0001)", "VBPR (0)", "VBPR (0.001)", "VBPR (0.01)", "Random",
)  # fmt: skip
#: The paper's Table 2 values of AUC and Recall@100.
PAPER_TABLE2 = {
    "Oracle": (1.0, 1.0), "CuratorNet (0.0001)": (0.7204, 0.3200),
    "CuratorNet (0.001)": (0.7177, 0.2937), "VisRank": (0.7151, 0.2765),
    "CuratorNet (0)": (0.7131, 0.3048), "CuratorNet (0.01)": (0.7125, 0.2548),
    "VBPR (0.0001)": (0.6641, 0.2399), "VBPR (0)": (0.6543, 0.2077),
    "VBPR (0.001)": (0.6410, 0.1948), "VBPR (0.01)": (0.5489, 0.0506), "Random": (0.4973, 0.0322),
}  # fmt: skip


@dataclass(frozen=True)
class Budget:
    """How much training the reproduction affords."""

    name: str
    n_per_strategy: int  # training triples per guideline; the random partition gets 6x
    epochs: int  # same for every model, guideline and random alike
    l2_grid: tuple[float, ...] = (0.0, 1e-4, 1e-3, 1e-2)  # Table 2's lambdas
    ablation_l2: float = 1e-4  # Figure 3's lambda
    seeds: tuple[int, ...] = (0,)  # sampling, initial weights and shuffling
    curve: tuple[int, ...] = ()  # n_per_strategy of the budget curve (this one is added)
    lr: float = 1e-3  # paper: 1e-4 for 10M triples; fewer triples need larger steps
    batch_triples: int = 4096
    k: int = 100  # visual clusters (paper: 100)
    restarts: int = 20  # k-means restarts (paper: 20)
    compare_weighting: bool = True  # also train CuratorNet with guidelines 1, 2 drawn per pair
    vbpr_l2_grid: tuple[float, ...] | None = None  # VBPR's lambdas when not ``l2_grid``

    def curve_points(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.curve) | {self.n_per_strategy}))

    def stages(self) -> "Stages":
        """The stage settings of this budget: the paper's, at its triples, epochs and lr;
        every model trains all its epochs and keeps the one with the best ``val_auc``."""
        return Stages(
            pca=cluster_core.PCAConfig(),
            cluster=cluster_core.ClusterConfig(
                k=self.k, restarts=self.restarts, silhouette_sample=5000
            ),
            sampling=sampling_core.SamplingConfig(n_per_strategy=self.n_per_strategy),
            validation=validation.ValidationConfig(),
            train=train_core.TrainConfig(
                epochs=self.epochs,
                lr=self.lr,
                batch_triples=self.batch_triples,
                patience=self.epochs,
                monitor="val_auc",
            ),  # fmt: skip
            evaluation=eval_core.EvalConfig(),
        )


@dataclass(frozen=True)
class Stages:
    """The settings of every stage: the dataclasses the graph's settings resource builds
    (``PipelineSettings.build``), so a reproduction can run exactly a profile's settings."""

    pca: cluster_core.PCAConfig
    cluster: cluster_core.ClusterConfig
    sampling: sampling_core.SamplingConfig
    validation: validation.ValidationConfig
    train: train_core.TrainConfig
    evaluation: eval_core.EvalConfig


BUDGETS: dict[str, Budget] = {
    "smoke": Budget("smoke", 500, 2, (0.0, 1e-4), curve=(150, 300), k=20, restarts=2),
    "small": Budget("small", 10_000, 3, curve=(2_500, 5_000), restarts=5),
    "medium": Budget("medium", 30_000, 4, curve=(5_000, 12_000), restarts=10),
    "large": Budget("large", 80_000, 5, curve=(10_000, 30_000), restarts=10),
    "paper": Budget(
        "paper", 1_666_667, 10, curve=(100_000, 500_000), lr=1e-4, batch_triples=32_768
    ),
}


@dataclass
class ModelRun:
    """One trained model: its variant, budget, counts, curves and test results."""

    variant: experiment.Variant
    n_per_strategy: int
    seed: int
    train_triples: int
    validation_triples: int
    history: list[dict]  # per epoch: loss, val_accuracy, val_auc, val_recall@100, ...
    best_epoch: int
    seconds: float
    results: dict[str, eval_core.EvalResult] = field(default_factory=dict)  # per protocol
    validation: dict[str, float] = field(default_factory=dict)  # final model's val metrics


@dataclass
class Reproduction:
    """Everything the report needs."""

    budget: Budget
    settings: dict
    data_stats: dict
    triples: pd.DataFrame  # per strategy: paper number, counts, profile sizes
    runs: list[ModelRun]
    baselines: dict[str, dict[str, eval_core.EvalResult]]  # label -> protocol -> result
    baseline_validation: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0
    meta: dict = field(default_factory=dict)
    weighting_runs: dict[str, ModelRun] = field(default_factory=dict)  # "user" / "pair"


# ----------------------------------------------------------------------------- data


def load_vectors(
    paths: data_core.DatasetPaths,
    inventory: pd.DataFrame,
    embed_config: embed_core.EmbedConfig,
    store_dir: Path,
    on_missing_vectors: str = "error",
) -> ItemVectors:
    """The dataset's own vectors (published file or bundle) when it has no images folder, as
    the graph's ``item_embeddings`` reads them; else the images' vectors (cached)."""
    if paths.uses_imported_vectors():
        vectors, _ = vectors_core.load_vectors(paths, inventory, on_missing_vectors)
        return ItemVectors(
            vectors.ids, vectors.vectors, {**vectors.meta, **embed_core.imported_meta(vectors.meta)}
        )
    manifest, _ = data_core.image_manifest(paths.images, inventory)
    store = EmbeddingStore(store_dir)
    result = embed_core.embed_manifest(manifest, embed_config, store=store)
    return result.vectors


def _profile_stats(t: Triplets) -> dict:
    sizes = sampling_core.profile_sizes(t)
    if not len(sizes):
        return {"mean": float("nan")}
    out = {"mean": float(sizes.mean()), "median": float(np.median(sizes)), "max": int(sizes.max())}
    shares = sampling_core.profile_size_histogram(t)
    return {**out, **{k: v / len(sizes) for k, v in shares.items()}}


def _triples_table(
    parts: dict[str, Triplets], union: Triplets, pair: dict[str, Triplets]
) -> pd.DataFrame:
    rows = []
    for s in STRATEGIES:
        if s not in parts:
            continue
        info = STRATEGY_INFO[s]
        produced = (
            union.meta["train_per_strategy"].get(s) if s in GUIDELINE_STRATEGIES else None
        ) or int((~parts[s].is_validation).sum())
        rows.append(
            {"paper": info.paper_guideline or "–", "key": s, "weighting": "user" if s in pair else "",
             "train_triples": produced, **_profile_stats(parts[s]),
             "reference_mean": REFERENCE_PROFILE_MEANS.get(s, float("nan"))}
        )  # fmt: skip
        if s in pair:
            rows.append(
                {"paper": info.paper_guideline, "key": s, "weighting": "pair (not used)",
                 "train_triples": int((~pair[s].is_validation).sum()), **_profile_stats(pair[s]),
                 "reference_mean": REFERENCE_PROFILE_MEANS.get(s, float("nan"))}
            )  # fmt: skip
    rows.append(
        {"paper": "1-6", "key": "union of the six", "weighting": "user",
         "train_triples": int((~union.is_validation).sum()), **_profile_stats(union),
         "reference_mean": REFERENCE_PROFILE_MEANS["all six"]}
    )  # fmt: skip
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- training


def _fit(
    variant: experiment.Variant,
    parts: dict[str, Triplets],
    n: int,
    config: train_core.TrainConfig,
    features: np.ndarray,
    n_users: int,
    evaluator: validation.Evaluator,
    split,
    stages: "Stages",
    stock: eval_core.Timeline,
) -> "ModelRun":
    """Train one variant with the graph's training stage and evaluate it on both protocols."""
    triples = fit_core.variant_triples(variant, parts, config.seed)
    n_train, n_val = experiment.training_counts(triples, variant.kind == "vbpr")
    logger.info("training %s at n=%d seed %d: %d triples", variant.name, n, config.seed, n_train)
    history: list[dict] = []

    def on_epoch(stats: train_core.EpochStats) -> None:
        row = dataclasses.asdict(stats)
        row.update(row.pop("metrics"))  # the evaluator's figures of this epoch, flat
        history.append(row)

    start = time.perf_counter()
    result = fit_core.fit(variant, triples, features, n_users, config, evaluator, on_epoch)
    model = result.model.eval()
    mr = ModelRun(
        variant, n, config.seed, n_train, n_val, history, result.best_epoch,
        time.perf_counter() - start,
    )  # fmt: skip
    mr.validation = dict(result.best_metrics)
    scorer = scorers.for_model(model, features)
    for protocol in eval_core.PROTOCOLS:
        cfg = dataclasses.replace(stages.evaluation, protocol=protocol)
        mr.results[protocol] = eval_core.evaluate(scorer, split, cfg, stock)
    return mr


# ----------------------------------------------------------------------------- the run


def run(
    root: Path,
    budget: Budget,
    embed_config: embed_core.EmbedConfig,
    store_dir: Path,
    stages: "Stages | None" = None,
    on_missing_vectors: str = "error",
) -> Reproduction:
    """The paper's protocol at ``budget`` on the dataset in ``root`` (see the module docstring).

    Every stage is the function the graph's asset of that stage calls, with ``stages``
    (default: the budget's, :meth:`Budget.stages`); the budget's seeds and curve points
    replace the sampling and training seeds and the triples per guideline.
    """
    started = time.perf_counter()
    stages = stages or budget.stages()
    paths = data_core.DatasetPaths(root)
    inventory = data_core.read_inventory(paths.inventory)
    purchases, purchase_report = data_core.read_purchases(paths.purchases, inventory)
    vectors = load_vectors(paths, inventory, embed_config, store_dir, on_missing_vectors)
    t0 = time.perf_counter()
    pca = cluster_core.reduce(vectors, stages.pca)
    clusters = cluster_core.cluster(pca, stages.cluster)
    cluster_seconds = time.perf_counter() - t0
    catalogue = catalogue_core.build_catalogue(vectors, clusters, inventory, purchases)
    split = split_core.split_train_test(purchases, catalogue.ids)
    _, val_split = validation.holdout_validation(split, stages.validation)
    train_split = validation.training_split(split, val_split)
    stock = report_core.timeline(catalogue)
    features = catalogue.features
    n_users = len(val_split.user_ids)
    evaluator = validation.make_evaluator(val_split, features, stages.validation, stock)

    runs: list[ModelRun] = []
    weighting_runs: dict[str, ModelRun] = {}
    triples_table = pd.DataFrame()
    grid = experiment.variants(
        {"curatornet_l2": list(budget.l2_grid),
         "vbpr_l2": list(budget.vbpr_l2_grid or budget.l2_grid),
         "ablation_l2": budget.ablation_l2}
    )  # fmt: skip
    pairs = experiment.ablation_pairs(grid)
    curve_variants = [v for pair in pairs.values() for v in pair]
    for seed in budget.seeds:
        for n in sorted(budget.curve_points(), reverse=True):
            main = n == budget.n_per_strategy
            if not main and seed != budget.seeds[0]:
                continue
            config = dataclasses.replace(stages.sampling, n_per_strategy=n, seed=seed)
            ctx = sampling_core.catalogue_context(train_split, catalogue, pca, config)
            parts = {s: sampling_core.sample_strategy(ctx, s, config) for s in STRATEGIES}
            if main and seed == budget.seeds[0]:
                union = sampling_core.merge_triplets({s: parts[s] for s in GUIDELINE_STRATEGIES})
                pair_cfg = dataclasses.replace(config, basket_weighting="pair")
                pair_ctx = dataclasses.replace(ctx, config=pair_cfg)
                pair = {
                    s: sampling_core.sample_strategy(pair_ctx, s, pair_cfg)
                    for s in ("s5_next_basket", "s6_hide_one")
                }
                triples_table = _triples_table(parts, union, pair)
            tc = dataclasses.replace(stages.train, seed=seed)
            todo = list(grid.values()) if main else curve_variants

            def fit(variant: experiment.Variant, parts: dict, n=n, tc=tc):
                return _fit(variant, parts, n, tc, features, n_users, evaluator, split, stages,
                            stock)  # fmt: skip

            runs += [fit(variant, parts) for variant in todo]
            if main and seed == budget.seeds[0] and budget.compare_weighting:
                # guidelines 1 and 2 drawn per (user, basket) pair instead of per user
                variant = grid[f"curatornet-l{budget.ablation_l2:g}"]
                weighting_runs["pair"] = fit(variant, {**parts, **pair})
                weighting_runs["user"] = next(
                    r for r in runs if r.variant == variant and r.n_per_strategy == n
                )

    baselines: dict[str, dict[str, eval_core.EvalResult]] = {}
    baseline_validation: dict[str, dict[str, float]] = {}
    references = report_core.reference_scorers(features, split)
    for label, scorer in references.items():
        baselines[label] = {
            p: eval_core.evaluate(
                scorer, split, dataclasses.replace(stages.evaluation, protocol=p), stock
            )
            for p in eval_core.PROTOCOLS
        }
        if label != "Oracle":  # the oracle knows test baskets, not validation ones
            baseline_validation[label] = evaluator(scorer)

    data_stats = {
        "users": int(purchase_report.get("users", n_users)),
        "items (catalogue with a vector)": len(pca.ids),
        "artists": int(inventory["artist_id_hash"].nunique()),
        "purchased items (rows of the long table)": len(purchases),
        "baskets": int(purchase_report.get("baskets", 0)),
        "test users (last basket hidden)": len(split.test_users),
        "validation users (last training basket held out)": len(val_split.test_users),
        "training purchases after both hold-outs": len(train_split.basket_items),
        "PCA explained variance": round(float(pca.meta["explained_variance_ratio_sum"]), 4),
        "best silhouette": round(float(clusters.silhouettes.max()), 4),
    }
    embedding_keys = (
        "source", "backbone", "weights", "weights_id", "transform", "imported_file",
        "imported_sha256",
    )  # fmt: skip
    settings = {
        "budget": dataclasses.asdict(budget),
        "embedding": {k: vectors.meta.get(k) for k in embedding_keys if k in vectors.meta},
        "pca": {"n_components": int(pca.meta["n_components"]), "scaler": pca.meta["scaler"]},
        "clusters": {
            **dataclasses.asdict(stages.cluster),
            "seconds": round(cluster_seconds, 1),
        },  # fmt: skip
        "sampling": dataclasses.asdict(stages.sampling),
        "train": dataclasses.asdict(stages.train),
        "validation": dataclasses.asdict(stages.validation),
        "selection": f"the epoch with the best {stages.train.monitor} (ranking validation on "
        f"held-out baskets); patience {stages.train.patience} of {stages.train.epochs} epochs",
    }
    rep = Reproduction(
        budget, settings, data_stats, triples_table, runs, baselines, baseline_validation
    )
    rep.weighting_runs = weighting_runs
    rep.seconds = time.perf_counter() - started
    rep.meta = {
        "processor": processor(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    return rep
