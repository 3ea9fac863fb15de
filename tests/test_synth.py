"""The synthetic UGallery-format generator: format, exact counts, determinism, taste signal."""

import ast
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from curatornet_pipeline.core.data.synth import SCALES, SynthConfig, generate, main, stats

HEX32 = re.compile(r"^[0-9a-f]{32}$")


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _truth(root: Path) -> dict:
    return json.loads((root / "synth_truth.json").read_text())


def _flat_purchases(root: Path) -> pd.DataFrame:
    pur = pd.read_csv(root / "purchases.csv")
    pur["item"] = pur["purchased_artwork_ids_hash"].map(ast.literal_eval)
    return pur.explode("item")


def test_tiny_writes_the_published_format(tiny_data: Path) -> None:
    assert {p.name for p in tiny_data.iterdir()} == {
        "purchases.csv", "inventory.csv", "images", "synth_truth.json"
    }  # fmt: skip
    pur = pd.read_csv(tiny_data / "purchases.csv")
    inv = pd.read_csv(tiny_data / "inventory.csv")
    assert list(pur.columns) == ["user_id_hash", "purchased_artwork_ids_hash", "purchase_timestamp"]
    assert list(inv.columns) == ["artwork_id_hash", "artist_id_hash", "upload_timestamp"]
    assert pur["purchase_timestamp"].dtype == np.int64 and inv["upload_timestamp"].dtype == np.int64
    baskets = pur["purchased_artwork_ids_hash"].map(ast.literal_eval)
    assert all(isinstance(b, list) and b and all(isinstance(i, str) for i in b) for b in baskets)
    ids = set(inv["artwork_id_hash"])
    assert len(ids) == len(inv) == SCALES["tiny"].n_items
    for column in (inv["artwork_id_hash"], inv["artist_id_hash"], pur["user_id_hash"]):
        assert column.map(lambda s: bool(HEX32.match(s))).all()
    flat = _flat_purchases(tiny_data)
    assert set(flat["item"]) <= ids
    # every item was uploaded before it was bought
    upload = inv.set_index("artwork_id_hash")["upload_timestamp"]
    assert (flat["purchase_timestamp"].to_numpy() > upload[flat["item"]].to_numpy()).all()
    images = sorted((tiny_data / "images").iterdir())
    assert [p.name for p in images] == sorted(f"{i}.jpg" for i in ids)
    for path in images[:: max(len(images) // 25, 1)]:
        with Image.open(path) as img:
            assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (32, 32))
            assert "exif" not in img.info and len(img.getexif()) == 0


def test_tiny_has_the_material_the_pipeline_needs(tiny_data: Path) -> None:
    s = stats(tiny_data)
    spec = SCALES["tiny"]
    assert (s["users"], s["items"], s["artists"]) == (spec.n_users, spec.n_items, spec.n_artists)
    assert (s["purchases"], s["baskets"]) == (spec.n_purchases, spec.n_baskets)
    assert s["largest_basket"] == spec.max_basket and s["items_sold"] == spec.n_items_sold
    assert s["purchases_per_user_median"] == 1.0
    assert s["repeated_purchases"] == spec.n_self_repeats >= 1
    assert s["rows_sharing_timestamp"] >= 2 and s["rows"] == s["baskets"] + spec.n_split_baskets
    flat = _flat_purchases(tiny_data)
    per_user = flat.groupby("user_id_hash")["purchase_timestamp"].nunique()
    assert (per_user >= 2).sum() >= 10  # users with a hidden test basket


def test_one_of_a_kind_items_are_sold_at_most_once(tiny_data: Path) -> None:
    items = _truth(tiny_data)["items"]
    sales = _flat_purchases(tiny_data)["item"].value_counts()
    unique_sales = sales[[items[i]["one_of_a_kind"] for i in sales.index]]
    assert unique_sales.max() == 1
    assert (sales > 1).any()  # prints sell again


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path: Path) -> None:
    generate(SynthConfig(scale="tiny", seed=7), tmp_path / "a")
    generate(SynthConfig(scale="tiny", seed=7), tmp_path / "b")
    generate(SynthConfig(scale="tiny", seed=8), tmp_path / "c")
    a, b, c = (_files(tmp_path / x) for x in "abc")
    assert len(a) == SCALES["tiny"].n_items + 3
    assert a == b
    assert a["purchases.csv"] != c["purchases.csv"]
    assert not set(a) & set(c) - {"purchases.csv", "inventory.csv", "synth_truth.json"}


def test_image_size_and_no_images_options(tmp_path: Path) -> None:
    generate(SynthConfig(scale="tiny", image_size=48), tmp_path / "big")
    first = next((tmp_path / "big" / "images").iterdir())
    assert Image.open(first).size == (48, 48)
    summary = generate(SynthConfig(scale="tiny", images=False), tmp_path / "none")
    assert summary.n_images == 0 and not (tmp_path / "none" / "images").exists()
    assert _truth(tmp_path / "none")["config"]["images"] is False


def test_vectors_option_writes_resnet_like_vectors_in_the_published_file(tmp_path: Path) -> None:
    """``vectors``: resnet_embeddings.npy as published ([id, vector] rows, read by the
    importer), its vectors shaped like pooled post-ReLU ResNet-50 outputs (issue 31) and
    following the items' artists and styles."""
    from curatornet_pipeline.core.data.vectors import import_embeddings

    generate(SynthConfig(scale="tiny", images=False, vectors=True), tmp_path)
    imported = import_embeddings(tmp_path / "resnet_embeddings.npy", tmp_path / "out.npz")
    inv = pd.read_csv(tmp_path / "inventory.csv")
    assert imported.ids.tolist() == inv["artwork_id_hash"].tolist()
    x = imported.vectors
    assert x.shape == (SCALES["tiny"].n_items, 2048) and x.min() == 0
    assert 0.28 < (x == 0).mean() < 0.40 and x.mean() == pytest.approx(0.45, rel=1e-3)
    assert 2.5 < x.max() < 5
    truth = _truth(tmp_path)["items"]
    style = np.array([truth[i]["style"] for i in imported.ids])
    artist = np.array([truth[i]["artist"] for i in imported.ids])
    unit = x - x.mean(0)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    cos = unit @ unit.T
    off_diagonal = ~np.eye(len(x), dtype=bool)
    same_artist = cos[(artist[:, None] == artist[None]) & off_diagonal].mean()
    same_style = cos[(style[:, None] == style[None]) & (artist[:, None] != artist[None])].mean()
    other = cos[style[:, None] != style[None]].mean()
    assert same_artist > same_style > other + 0.1


def test_bad_configs_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown scale"):
        generate(SynthConfig(scale="huge"), tmp_path)
    with pytest.raises(ValueError, match="image_size"):
        generate(SynthConfig(scale="tiny", image_size=4), tmp_path)


@pytest.mark.parametrize("scale", ["tiny", "demo"])
def test_purchases_follow_user_tastes(tmp_path: Path, scale: str) -> None:
    generate(SynthConfig(scale=scale, images=False), tmp_path)
    truth = _truth(tmp_path)
    style = {i: v["style"] for i, v in truth["items"].items()}
    artist = {i: v["artist"] for i, v in truth["items"].items()}
    inventory_share = pd.Series(style).value_counts(normalize=True)
    flat = _flat_purchases(tmp_path)
    hits, chance, fav = [], [], []
    for user, items in flat.groupby("user_id_hash")["item"]:
        taste = truth["users"][user]
        pref = [int(k) for k in taste["styles"]]
        hits.append(np.mean([style[i] in pref for i in items]))
        chance.append(inventory_share.reindex(pref, fill_value=0).sum())
        fav.append(np.mean([artist[i] in taste["artists"] for i in items]))
    assert np.mean(hits) > 0.6
    assert np.mean(hits) > 2.0 * np.mean(chance)
    assert np.mean(fav) > 0.15


def test_styles_are_visually_separable(tiny_data: Path) -> None:
    """Nearest-centroid on 8x8 thumbnails recovers the style far above chance (1/6)."""
    items = _truth(tiny_data)["items"]
    ids = sorted(items)
    feats = np.stack(
        [
            np.asarray(Image.open(tiny_data / "images" / f"{i}.jpg").resize((8, 8)), float).ravel()
            for i in ids
        ]
    )
    labels = np.array([items[i]["style"] for i in ids])
    train = np.arange(len(ids)) % 2 == 0
    styles = np.unique(labels[train])
    centroids = np.stack([feats[train & (labels == k)].mean(0) for k in styles])
    dist = ((feats[~train, None, :] - centroids[None]) ** 2).sum(-1)
    accuracy = np.mean(styles[dist.argmin(1)] == labels[~train])
    assert accuracy > 0.8


def test_stats_on_a_hand_made_dataset(tmp_path: Path) -> None:
    pd.DataFrame(
        {
            "artwork_id_hash": ["a", "b", "c", "d"],
            "artist_id_hash": ["x", "x", "y", "y"],
            "upload_timestamp": [1, 1, 1, 1],
        }
    ).to_csv(tmp_path / "inventory.csv", index=False)
    pd.DataFrame(
        {
            "user_id_hash": ["u", "u", "u", "v"],
            "purchased_artwork_ids_hash": ["['a', 'b']", "['c']", "['a']", "['a']"],
            "purchase_timestamp": [10, 10, 20, 30],
        }
    ).to_csv(tmp_path / "purchases.csv", index=False)
    s = stats(tmp_path)
    assert (s["users"], s["items"], s["artists"]) == (2, 4, 2)
    assert (s["purchases"], s["baskets"], s["rows"]) == (5, 3, 4)
    assert s["largest_basket"] == 3  # rows 1 and 2 share user u and timestamp 10
    assert (s["purchases_per_user_median"], s["purchases_per_user_max"]) == (2.5, 4)
    assert s["items_sold"] == 3 and s["sold_once_share_of_sold_items"] == pytest.approx(2 / 3)
    assert s["sold_once_share_of_purchases"] == pytest.approx(2 / 5)
    assert s["repeated_purchases"] == 1  # u bought a twice
    assert s["rows_sharing_timestamp"] == 2
    assert "one_of_a_kind_share_of_items" not in s  # no truth file


def test_main_prints_the_summary(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--scale", "tiny", "--seed", "3", "--out", str(tmp_path), "--no-images"]) == 0
    printed = capsys.readouterr().out
    assert "tiny" in printed and re.search(r"users\s+80\b", printed)
    assert not (tmp_path / "images").exists()


@pytest.mark.slow
def test_ugallery_scale_reproduces_the_published_statistics(tmp_path: Path) -> None:
    generate(SynthConfig(scale="ugallery", images=False), tmp_path)
    s = stats(tmp_path)
    targets = {
        "users": 2919,
        "items": 13297,
        "artists": 573,
        "purchases": 6535,
        "baskets": 4897,
        "purchases_per_user_mean": 2.24,
        "purchases_per_user_std": 5.97,
        "purchases_per_user_max": 271,
        "top5_user_share": 0.075,
        "largest_basket": 21,
        "items_sold": 6030,
        "one_of_a_kind_share_of_items": 0.78,
        "one_of_a_kind_share_of_purchases": 0.817,
    }
    for key, target in targets.items():
        assert s[key] == pytest.approx(target, rel=0.03), key
    assert s["purchases_per_user_median"] == 1.0
    assert 1 <= s["repeated_purchases"] <= 20 and s["rows_sharing_timestamp"] >= 2
    assert s["purchased_items_missing_from_inventory"] == 0
