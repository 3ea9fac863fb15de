"""Synthetic datasets in the published UGallery format, with procedurally rendered images.

``generate`` writes ``purchases.csv``, ``inventory.csv`` and ``images/<id>.jpg`` as the
real dataset is laid out, plus ``synth_truth.json`` (not part of the published format), and
with ``vectors`` a ResNet-like ``resnet_embeddings.npy`` (:mod:`.synth_vectors`). The counts
that describe the real data are hit exactly; taste, stock and time decide which item fills
each purchase slot. The generative model: ``docs/synthetic-data.md``.
"""

import argparse
import ast
import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from curatornet_pipeline.core.data import synth_world
from curatornet_pipeline.core.data.synth_images import jpeg_bytes, render
from curatornet_pipeline.core.data.synth_vectors import resnet_like_vectors, write_published_vectors

logger = logging.getLogger(__name__)

TRUTH_FILE = "synth_truth.json"


@dataclass(frozen=True)
class ScaleSpec:
    """Target counts of one scale; ``generate`` hits every count exactly."""

    n_users: int
    n_items: int
    n_artists: int
    n_styles: int  # visual styles; several artists share one
    n_purchases: int  # purchased items, summed over baskets
    n_baskets: int  # (user, timestamp) baskets
    max_user_purchases: int  # the heaviest buyer
    top5_share: float  # share of purchases held by the 5 heaviest buyers
    single_purchase_share: float  # users with exactly one purchase (> 0.5: median 1)
    tail_exponent: float  # Pareto exponent of the other buyers' counts (sets the std)
    max_basket: int  # exactly one basket has this size, all others are smaller
    one_of_a_kind_share: float  # of the inventory; the rest are prints, sold many times
    one_of_a_kind_purchase_share: float  # of the purchased items
    n_items_sold: int  # distinct items ever sold
    n_self_repeats: int  # users who buy the same print twice
    n_split_baskets: int  # baskets written as two rows sharing a timestamp
    image_size: int  # default pixels per side
    years: float = 5.0  # upload period; purchases run until 3 months after its end
    taste_noise: float = 0.2  # weight of an item outside the user's styles, relative to ~1
    artist_boost: float = 3.0  # weight multiplier of a favourite artist's items


SCALES: dict[str, ScaleSpec] = {
    # about a second, for unit tests: every split and sampling strategy has material
    "tiny": ScaleSpec(
        n_users=80, n_items=250, n_artists=15, n_styles=6, n_purchases=160, n_baskets=115,
        max_user_purchases=14, top5_share=0.25, single_purchase_share=0.55,
        tail_exponent=2.2, max_basket=5, one_of_a_kind_share=0.78,
        one_of_a_kind_purchase_share=0.817, n_items_sold=148, n_self_repeats=2,
        n_split_baskets=2, image_size=32,
    ),
    # the main job's dataset: ResNet-50 embeds all of it in minutes on two CPU cores
    "demo": ScaleSpec(
        n_users=500, n_items=2000, n_artists=120, n_styles=16, n_purchases=1200,
        n_baskets=900, max_user_purchases=40, top5_share=0.10, single_purchase_share=0.6,
        tail_exponent=2.2, max_basket=10, one_of_a_kind_share=0.78,
        one_of_a_kind_purchase_share=0.817, n_items_sold=1107, n_self_repeats=3,
        n_split_baskets=4, image_size=128,
    ),
    # the statistics of the real UGallery data (REFERENCE_FACTS.md)
    "ugallery": ScaleSpec(
        n_users=2919, n_items=13297, n_artists=573, n_styles=40, n_purchases=6535,
        n_baskets=4897, max_user_purchases=271, top5_share=0.075, single_purchase_share=0.6,
        tail_exponent=2.2, max_basket=21, one_of_a_kind_share=0.78,
        one_of_a_kind_purchase_share=0.817, n_items_sold=6030, n_self_repeats=6,
        n_split_baskets=12, image_size=128,
    ),
}  # fmt: skip


@dataclass(frozen=True)
class SynthConfig:
    """What to generate."""

    scale: str = "demo"  # a key of SCALES: tiny | demo | ugallery
    seed: int = 0  # same seed, byte-identical files
    images: bool = True  # False: CSVs and truth only (statistics, embedding-free tests)
    image_size: int | None = None  # pixels per side; None: the scale's default
    vectors: bool = False  # also write resnet_embeddings.npy (published [id, vector] rows)


@dataclass(frozen=True)
class SynthSummary:
    """What ``generate`` wrote."""

    out: Path  # dataset folder
    scale: str
    seed: int
    n_users: int
    n_items: int
    n_artists: int
    n_styles: int
    n_purchases: int  # purchased items, summed over baskets
    n_baskets: int  # (user, timestamp) baskets
    n_rows: int  # rows of purchases.csv (a few baskets span two rows)
    n_images: int
    image_size: int
    seconds: float  # wall time of the generation


def _ids(seed: int, kind: str, n: int) -> np.ndarray:
    """``n`` deterministic 32-hex-char ids, different for every seed and kind."""
    return np.array(
        [hashlib.md5(f"curatornet-synth/{seed}/{kind}/{i}".encode()).hexdigest() for i in range(n)]
    )


def _truth(spec, config, size, world, item_ids, artist_ids, user_ids) -> dict:
    """The generator's ground truth: styles, artists' styles, items, user tastes."""
    return {
        "note": "ground truth of the synthetic generator; not part of the published format",
        "config": {**dataclasses.asdict(config), "image_size": size},
        "spec": dataclasses.asdict(spec),
        "styles": world.styles,
        "artists": {
            artist_ids[a]: {"style": int(s), "params": world.artist_params[a]}
            for a, s in enumerate(world.artist_style)
        },
        "items": {
            item_ids[i]: {
                "artist": artist_ids[a],
                "style": int(world.artist_style[a]),
                "one_of_a_kind": bool(world.item_unique[i]),
            }
            for i, a in enumerate(world.item_artist)
        },
        "users": {
            user_ids[u]: {
                "styles": {str(k): float(world.user_styles[u, k]) for k in np.flatnonzero(row)},
                "artists": [str(artist_ids[a]) for a in world.user_artists[u]],
            }
            for u, row in enumerate(world.user_styles)
        },
    }


def generate(config: SynthConfig, out: Path) -> SynthSummary:
    """Write a synthetic dataset in the published format (plus ``synth_truth.json``) to ``out``."""
    if config.scale not in SCALES:
        raise ValueError(f"unknown scale {config.scale!r}; choose one of {sorted(SCALES)}")
    spec = SCALES[config.scale]
    size = config.image_size or spec.image_size
    if size < 16:
        raise ValueError(f"image_size must be >= 16 pixels, got {size}")
    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    world = synth_world.world(spec, config.seed)
    counts = synth_world.user_counts(spec, np.random.default_rng([config.seed, 1]))
    opening = int(world.item_upload[len(world.item_upload) // 20]) + synth_world.DAY  # 5% uploaded
    plan = synth_world.plan(spec, counts, opening, np.random.default_rng([config.seed, 2]))
    basket_order, offsets, chosen = synth_world.choose(
        spec, world, plan, np.random.default_rng([config.seed, 3])
    )
    item_ids = _ids(config.seed, "item", spec.n_items)
    artist_ids = _ids(config.seed, "artist", spec.n_artists)
    user_ids = _ids(config.seed, "user", spec.n_users)

    pd.DataFrame(
        {
            "artwork_id_hash": item_ids,
            "artist_id_hash": artist_ids[world.item_artist],
            "upload_timestamp": world.item_upload,
        }
    ).to_csv(out / "inventory.csv", index=False, lineterminator="\n")
    rng = np.random.default_rng([config.seed, 4])
    multi = np.flatnonzero(plan.basket_size >= 2)
    split = set(rng.choice(multi, min(spec.n_split_baskets, len(multi)), replace=False).tolist())
    rows = []
    for b in basket_order:
        items = [str(i) for i in item_ids[chosen[offsets[b] : offsets[b + 1]]]]
        user, ts = user_ids[plan.basket_user[b]], int(plan.basket_time[b])
        cut = int(rng.integers(1, len(items))) if b in split else len(items)
        rows.extend((user, repr(part), ts) for part in (items[:cut], items[cut:]) if part)
    pd.DataFrame(
        rows, columns=["user_id_hash", "purchased_artwork_ids_hash", "purchase_timestamp"]
    ).to_csv(out / "purchases.csv", index=False, lineterminator="\n")
    truth = _truth(spec, config, size, world, item_ids, artist_ids, user_ids)
    (out / TRUTH_FILE).write_text(json.dumps(truth, sort_keys=True, indent=1) + "\n")

    if config.vectors:
        vectors = resnet_like_vectors(
            world.item_artist, np.random.default_rng([config.seed, 6]),
            group_parent=world.artist_style,
        )  # fmt: skip
        write_published_vectors(out / "resnet_embeddings.npy", item_ids, vectors)
    if config.images:
        (out / "images").mkdir(exist_ok=True)
        for i, item in enumerate(item_ids):
            img = render(world.artist_params[world.item_artist[i]], size,
                         np.random.default_rng([config.seed, 5, i]))  # fmt: skip
            (out / "images" / f"{item}.jpg").write_bytes(jpeg_bytes(img))
            if (i + 1) % 2000 == 0:
                logger.info("rendered %d/%d images", i + 1, len(item_ids))
        stale = len(list((out / "images").glob("*.jpg"))) - len(item_ids)
        if stale > 0:
            logger.warning("%s/images holds %d images of another dataset", out, stale)
    summary = SynthSummary(
        out=out, scale=config.scale, seed=config.seed, n_users=spec.n_users,
        n_items=spec.n_items, n_artists=spec.n_artists, n_styles=spec.n_styles,
        n_purchases=int(plan.basket_size.sum()),
        n_baskets=len(plan.basket_size), n_rows=len(rows),
        n_images=spec.n_items if config.images else 0, image_size=size,
        seconds=time.perf_counter() - started,
    )  # fmt: skip
    logger.info("synthetic %s dataset in %s (%.1f s)", config.scale, out, summary.seconds)
    return summary


def stats(out: Path) -> dict:
    """Statistics of a dataset folder, from its CSVs (plus one-of-a-kind shares if truth exists)."""
    out = Path(out)
    inv = pd.read_csv(out / "inventory.csv")
    pur = pd.read_csv(out / "purchases.csv")
    pur["items"] = pur["purchased_artwork_ids_hash"].map(ast.literal_eval)
    flat = pur.explode("items")
    per_user = flat.groupby("user_id_hash").size()
    baskets = flat.groupby(["user_id_hash", "purchase_timestamp"]).size()
    rows_per_basket = pur.groupby(["user_id_hash", "purchase_timestamp"]).size()
    per_item = flat["items"].value_counts()
    sold_once = per_item[per_item == 1]
    top = per_user.sort_values(ascending=False)
    result = {
        "users": int(per_user.size),
        "items": int(len(inv)),
        "artists": int(inv["artist_id_hash"].nunique()),
        "purchases": int(len(flat)),
        "baskets": int(baskets.size),
        "rows": int(len(pur)),
        "purchases_per_user_median": float(per_user.median()),
        "purchases_per_user_mean": float(per_user.mean()),
        "purchases_per_user_std": float(per_user.std()),
        "purchases_per_user_max": int(per_user.max()),
        "top5_user_share": float(top.iloc[:5].sum() / len(flat)),
        "largest_basket": int(baskets.max()),
        "items_sold": int(per_item.size),
        "sold_once_share_of_sold_items": float(len(sold_once) / per_item.size),
        "sold_once_share_of_purchases": float(len(sold_once) / len(flat)),
        "repeated_purchases": int((flat.groupby(["user_id_hash", "items"]).size() > 1).sum()),
        "rows_sharing_timestamp": int(rows_per_basket[rows_per_basket > 1].sum()),
        "purchased_items_missing_from_inventory": int(
            (~per_item.index.isin(inv["artwork_id_hash"])).sum()
        ),
    }
    if (out / TRUTH_FILE).exists():
        unique = {k for k, v in json.loads((out / TRUTH_FILE).read_text())["items"].items()
                  if v["one_of_a_kind"]}  # fmt: skip
        result["one_of_a_kind_share_of_items"] = float(inv["artwork_id_hash"].isin(unique).mean())
        result["one_of_a_kind_share_of_purchases"] = float(flat["items"].isin(unique).mean())
    return result


def main(argv: list[str] | None = None) -> int:
    """``curatornet synth``: generate a dataset and print its summary and statistics."""
    parser = argparse.ArgumentParser(prog="curatornet synth", description=__doc__.split("\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--no-images", action="store_true", help="CSVs and truth only")
    parser.add_argument("--image-size", type=int, default=None, help="pixels per side")
    parser.add_argument("--vectors", action="store_true",
                        help="also write resnet_embeddings.npy: ResNet-like image vectors, "
                             "as the published dataset has them")  # fmt: skip
    args = parser.parse_args(argv)
    summary = generate(
        SynthConfig(args.scale, args.seed, not args.no_images, args.image_size, args.vectors),
        args.out,
    )
    print(f"wrote the synthetic '{summary.scale}' dataset (seed {summary.seed}) to "
          f"{summary.out} in {summary.seconds:.1f} s")  # fmt: skip
    for key, value in stats(summary.out).items():
        print(f"  {key:40s} {value:.4g}" if isinstance(value, float) else f"  {key:40s} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
