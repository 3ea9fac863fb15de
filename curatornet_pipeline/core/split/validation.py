"""A ranking validation signal: held-out baskets of training users, ranked like the test set
(why not triple accuracy: docs/architecture.md, "Epochs and the champion are chosen on a
ranking of held-out baskets").

- :func:`holdout_validation` removes, before any triple is sampled, the last *training*
  basket of users with at least ``min_train_baskets`` training baskets (optionally a
  seeded sample of them); the test baskets are untouched.
- :func:`make_evaluator` returns ``evaluator(model_or_scorer) -> {"val_auc",
  "val_recall@100", ...}``, computed by :func:`.evaluate.evaluate` on the validation split
  exactly as the test evaluation; ``train(..., evaluator=fn)`` takes it.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from curatornet_pipeline.core.evaluation.evaluate import EvalConfig, Timeline, evaluate
from curatornet_pipeline.core.models.networks import VBPR, CuratorNet
from curatornet_pipeline.core.models.scorers import CuratorNetScorer, VBPRScorer
from curatornet_pipeline.core.ragged import offsets_from_lengths
from curatornet_pipeline.core.types import Scorer, TrainTestSplit

logger = logging.getLogger(__name__)

Evaluator = Callable[[object], dict[str, float]]


@dataclass(frozen=True)
class ValidationConfig:
    """Which training baskets are held out for validation, and how they are ranked."""

    min_train_baskets: int = 2  # users with at least this many training baskets give their last
    max_users: int | None = None  # seeded sample of the eligible users; None: all of them
    seed: int = 0  # of that sample
    protocol: str = "unbought"  # candidate protocol, as EvalConfig
    ks: tuple[int, ...] = (20, 100)  # cut-offs, as Table 2
    batch_users: int = 256

    def __post_init__(self) -> None:
        if self.min_train_baskets < 2:
            raise ValueError(
                "min_train_baskets must be >= 2: a user needs a basket left to train on"
            )


def holdout_validation(
    split: TrainTestSplit, config: ValidationConfig = ValidationConfig()
) -> tuple[TrainTestSplit, TrainTestSplit]:
    """``(train_split, validation_split)``: the last training basket of eligible users held out.

    ``train_split`` is ``split`` without the held-out baskets (sample triples and
    train on it; its test baskets are ``split``'s, unchanged). ``validation_split``
    has the same training baskets and the held-out baskets in its ``test_*``
    arrays, so :func:`.evaluate.evaluate` ranks them as it ranks the test set.
    """
    per_user = np.diff(split.user_basket_offsets)
    eligible = np.flatnonzero(per_user >= config.min_train_baskets)
    if config.max_users is not None and len(eligible) > config.max_users:
        rng = np.random.default_rng(config.seed)
        eligible = np.sort(rng.choice(eligible, config.max_users, replace=False))
    held = split.user_basket_offsets[eligible + 1] - 1  # (V,) last training basket of each
    keep_basket = np.ones(len(split.basket_timestamps), bool)
    keep_basket[held] = False
    sizes = np.diff(split.basket_item_offsets)
    keep_row = np.repeat(keep_basket, sizes)
    new_per_user = per_user.copy()
    new_per_user[eligible] -= 1
    bio = split.basket_item_offsets
    val_items = np.concatenate(
        [np.zeros(0, np.int32)] + [split.basket_items[bio[b] : bio[b + 1]] for b in held]
    )
    common = dict(
        user_ids=split.user_ids,
        user_basket_offsets=offsets_from_lengths(new_per_user),
        basket_item_offsets=offsets_from_lengths(sizes[keep_basket]),
        basket_items=split.basket_items[keep_row],
        basket_timestamps=split.basket_timestamps[keep_basket],
        n_items=split.n_items,
    )
    meta = {
        "validation_users": int(len(eligible)),
        "validation_purchases": int(len(val_items)),
        "min_train_baskets": config.min_train_baskets,
        "seed": config.seed,
    }
    val_split = TrainTestSplit(
        **common,
        test_users=eligible.astype(np.int32),
        test_item_offsets=offsets_from_lengths(sizes[held]),
        test_items=val_items.astype(np.int32),
        test_timestamps=split.basket_timestamps[held],
        meta={"validation_of": meta},
    )
    logger.info(
        "validation: last training basket of %d users held out (%d purchases)",
        len(eligible),
        len(val_items),
    )
    return training_split(split, val_split), val_split


def training_split(split: TrainTestSplit, val_split: TrainTestSplit) -> TrainTestSplit:
    """``split`` with only ``val_split``'s training baskets left (its test baskets kept):
    what sampling and training may read once the validation baskets are held out."""
    if not np.array_equal(split.user_ids, val_split.user_ids):
        raise ValueError("the split and its validation split list different users")
    return replace(
        split,
        user_basket_offsets=val_split.user_basket_offsets,
        basket_item_offsets=val_split.basket_item_offsets,
        basket_items=val_split.basket_items,
        basket_timestamps=val_split.basket_timestamps,
        meta={**split.meta, "validation_holdout": val_split.meta["validation_of"]},
    )


def as_scorer(model_or_scorer: object, features: np.ndarray | None) -> Scorer:
    """A Scorer as is; a CuratorNet or VBPR wrapped with the catalogue ``features``."""
    if isinstance(model_or_scorer, CuratorNet | VBPR):
        if features is None:
            raise ValueError("scoring a model needs the item features")
        cls = CuratorNetScorer if isinstance(model_or_scorer, CuratorNet) else VBPRScorer
        return cls(model_or_scorer, features)
    if not hasattr(model_or_scorer, "score"):
        raise TypeError(f"{type(model_or_scorer).__name__} is neither a model nor a Scorer")
    return model_or_scorer  # type: ignore[return-value]


def make_evaluator(
    val_split: TrainTestSplit,
    features: np.ndarray | None = None,
    config: ValidationConfig = ValidationConfig(),
    timeline: Timeline | None = None,
) -> Evaluator:
    """``evaluator(model_or_scorer) -> {"val_auc": ..., "val_recall@100": ..., ...}``.

    Means over validation users of every metric :func:`.evaluate.evaluate`
    computes (AUC, Recall/Precision/nDCG at ``config.ks``, MRR), prefixed
    ``val_``; ``val_users`` is the number of users ranked. A model is scored on
    CPU in eval mode and handed back on its device in its previous mode, so the
    evaluator can run between training epochs.
    """
    eval_config = EvalConfig(protocol=config.protocol, ks=config.ks, batch_users=config.batch_users)

    def evaluator(model_or_scorer: object) -> dict[str, float]:
        restore = None
        if isinstance(model_or_scorer, torch.nn.Module):
            param = next(model_or_scorer.parameters(), None)
            device = param.device if param is not None else torch.device("cpu")
            restore = (device, model_or_scorer.training)
        try:
            scorer = as_scorer(model_or_scorer, features)
            result = evaluate(scorer, val_split, eval_config, timeline)
        finally:
            if restore is not None:
                model_or_scorer.to(restore[0]).train(restore[1])
        out = {f"val_{m}": float(mean) for m, (mean, _) in result.summary.items()}
        out["val_users"] = float(result.n_users)
        return out

    return evaluator
