"""Recommendation: new users and new artworks served without training, with explanations.

A tiny CuratorNet is trained once on four planted visual groups (user u likes group
u % 4). Users and artworks outside that training are then served through the item
and user towers only; the MLflow path uses a real SQLite store.
"""

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from curatornet_pipeline.core.bundle import save_bundle
from curatornet_pipeline.core.data.catalogue import Catalogue
from curatornet_pipeline.core.models.networks import CuratorNet, CuratorNetConfig, save_model
from curatornet_pipeline.core.models.scorers import CuratorNetScorer
from curatornet_pipeline.core.recommend.recommender import (
    RECORD_FIELDS,
    Recommender,
    recommendations_figure,
    recommendations_frame,
)
from curatornet_pipeline.core.training.train import TrainConfig, train
from curatornet_pipeline.core.types import NEVER, ItemVectors, Triplets, VisualClusters

D_IN, GROUPS, N_ITEMS = 16, 4, 80
SMALL = CuratorNetConfig(input_dim=D_IN, item_layers=(16, 8), user_layers=(16, 8, 8))
FAST = TrainConfig(lr=3e-3, lr_decay=0.9, epochs=6, patience=3, batch_triples=128, device="cpu")
SOLD = {3: 1_000, 7: 2_000}  # one-of-a-kind items sold at these times
PNG = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class World:
    """Planted groups: catalogue features, a trained model, and unseen items per group."""

    def __init__(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.centers = rng.normal(0, 1, (GROUPS, D_IN)) * 2
        self.group = np.arange(N_ITEMS) % GROUPS
        self.features = self.sample(self.group, rng)
        self.ids = np.array([f"art{i:03d}" for i in range(N_ITEMS)])
        self.rng = rng

    def sample(self, groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        noise = rng.normal(0, 0.7, (len(groups), D_IN))
        return (self.centers[groups] + noise + 5).astype(np.float32)

    def triplets(self, n: int = 1600) -> Triplets:
        rng = np.random.default_rng(1)
        offsets, flat, pos, neg = [0], [], [], []
        for t in range(n):
            liked = np.flatnonzero(self.group == t % GROUPS)
            size = int(rng.integers(1, 6))
            chosen = rng.choice(liked, size + 1, replace=False)
            flat += chosen[:size].tolist()
            offsets.append(len(flat))
            pos.append(chosen[size])
            neg.append(rng.choice(np.flatnonzero(self.group != t % GROUPS)))
        return Triplets(
            profile_offsets=np.asarray(offsets, np.int64),
            profile_items=np.asarray(flat, np.int32),
            profile=np.arange(n, dtype=np.int64),
            positive=np.asarray(pos, np.int32),
            negative=np.asarray(neg, np.int32),
            user=np.full(n, -1, np.int32),
            strategy=np.zeros(n, np.int8),
            hash=np.arange(n, dtype=np.uint64),
            is_validation=rng.random(n) < 0.2,
        )

    def catalogue(self) -> Catalogue:
        sold = np.full(N_ITEMS, NEVER, np.int64)
        one = np.zeros(N_ITEMS, bool)
        for i, t in SOLD.items():
            sold[i], one[i] = t, True
        upload = np.zeros(N_ITEMS, np.int64)
        upload[-4:] = 5_000  # the last four items go on sale late
        return Catalogue.from_arrays(
            self.ids,
            self.features,
            artists=[f"artist{g}-{i % 3}" for i, g in enumerate(self.group)],
            clusters=self.group,
            upload_timestamp=upload,
            sold_out_timestamp=sold,
            one_of_a_kind=one,
            meta={"backbone": "synthetic"},
        )


@pytest.fixture(scope="module")
def world() -> World:
    return World()


@pytest.fixture(scope="module")
def trained(world: World) -> CuratorNet:
    torch.manual_seed(0)
    model = CuratorNet(SMALL)
    model.fit_scaler(world.features)
    triplets = world.triplets()
    result = train(model, triplets, triplets, world.features, FAST)
    assert result.best_val_accuracy > 0.85  # the planted signal was learned
    return result.model.eval()


def _recommender(model: CuratorNet, world: World) -> Recommender:
    catalogue = world.catalogue()
    return Recommender(CuratorNetScorer(model, catalogue.features), catalogue)


def _untrained() -> CuratorNet:
    torch.manual_seed(3)
    return CuratorNet(SMALL).eval()


class _StepCounter:
    """Counts optimizer steps of every torch optimizer while active."""

    def __enter__(self):
        from torch.optim.optimizer import register_optimizer_step_pre_hook

        self.steps = 0
        self.handle = register_optimizer_step_pre_hook(self._hook)
        return self

    def _hook(self, *_args):
        self.steps += 1

    def __exit__(self, *exc):
        self.handle.remove()


def test_new_user_and_new_artwork_are_served_without_training(trained, world):
    rec = _recommender(trained, world)
    trained.zero_grad(set_to_none=True)
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    with _StepCounter() as counter:
        # positive control: the counter sees a real optimizer step
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([p], lr=0.1)
        p.sum().backward()
        opt.step()
        assert counter.steps == 1
        counter.steps = 0

        # a user absent from training: four group-0 items liked
        profile = [str(i) for i in world.ids[world.group == 0][:4]]
        top = rec.recommend(profile, k=10)
        # artworks absent from training: ten of group 0, ten of group 2
        new_groups = np.repeat([0, 2], 10)
        new_ids = [f"new{g}-{j}" for j, g in enumerate(new_groups)]
        rec.add_items(new_ids, world.sample(new_groups, np.random.default_rng(9)))
        after_add = rec.recommend(profile, k=200)
    assert counter.steps == 0
    assert all(torch.equal(before[k], v) for k, v in trained.state_dict().items())
    assert all(p.grad is None for p in trained.parameters())

    group_of = {str(i): int(g) for i, g in zip(world.ids, world.group, strict=True)}
    assert sum(group_of[r.item_id] == 0 for r in top) >= 9  # the liked group, not memorised
    rank = {r.item_id: r.rank for r in after_add}
    liked_new = [rank[i] for i in new_ids[:10]]
    other_new = [rank[i] for i in new_ids[10:]]
    assert max(liked_new) < min(other_new)  # new artworks ranked by their look at once
    assert sum(r <= 20 for r in liked_new) >= 5
    assert len(rec.catalogue) == N_ITEMS + 20 and len(rec.item_vectors) == N_ITEMS + 20


def test_scores_are_the_towers_dot_product(trained, world):
    rec = _recommender(trained, world)
    rec.add_items(["fresh"], world.sample(np.array([1]), np.random.default_rng(5)))
    profile = ["art001", "art005", "fresh"]
    with torch.no_grad():
        x = torch.from_numpy(rec.catalogue.features)
        h = trained.embed_items(x)
        rows = torch.tensor([1, 5, N_ITEMS])
        u = trained.embed_users(h, rows, torch.tensor([0, 3]))[0]
        expected = (h @ u).numpy()
    for r in rec.recommend(profile, k=N_ITEMS):
        assert r.score == pytest.approx(float(expected[rec.positions([r.item_id])[0]]), abs=1e-5)


def test_profile_and_sold_out_items_are_never_recommended(world):
    rec = _recommender(_untrained(), world)
    profile = ["art000", "art001", "art002"]
    everything = {r.item_id for r in rec.recommend(profile, k=1000)}
    assert not everything & set(profile)
    assert not everything & {"art003", "art007"}  # sold one-of-a-kind items
    assert len(everything) == N_ITEMS - 3 - 2
    # before those sales, the items were for sale
    earlier = {r.item_id for r in rec.recommend(profile, k=1000, at=500)}
    assert {"art003", "art007"} <= earlier
    between = {r.item_id for r in rec.recommend(profile, k=1000, at=1_500)}
    assert "art003" not in between and "art007" in between
    # in stock only: items uploaded later are dropped too
    late = {str(i) for i in world.ids[-4:]}
    assert late <= earlier
    in_stock = {r.item_id for r in rec.recommend(profile, k=1000, at=500, in_stock_only=True)}
    assert not in_stock & late and len(in_stock) == N_ITEMS - 3 - 4
    batch = rec.recommend_batch([profile, ["art010"]], k=1000)
    assert {r.item_id for r in batch[0]} == everything
    assert "art010" not in {r.item_id for r in batch[1]}
    assert not {r.item_id for r in batch[1]} & {"art003", "art007"}


def _scores_without_each(rec: Recommender, profile: list[str]) -> np.ndarray:
    """(n, m): every item's score for the profile less liked item j, through the model's
    own pooling and user tower (not the recommender's leave-one-out shortcut)."""
    pos = rec.positions(profile)
    rows = [np.delete(pos, j) for j in range(len(pos))]
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
    users = rec.scorer.user_vectors(offsets, np.concatenate(rows))  # (m, D)
    return rec.item_vectors @ users.T


def test_every_explanation_names_a_profile_item(trained, world):
    rec = _recommender(trained, world)
    profile = ["art000", "art013", "art026", "art039"]  # one item of each group
    unit = rec.item_vectors / np.linalg.norm(rec.item_vectors, axis=1, keepdims=True)
    cat = rec.catalogue
    recs = rec.recommend(profile, k=30)
    assert [r.rank for r in recs] == list(range(1, 31))
    assert all(a.score >= b.score for a, b in zip(recs, recs[1:], strict=False))
    for r in recs:
        assert r.because in profile
        i, j = rec.positions([r.item_id, r.because])
        assert r.similarity == pytest.approx(float(unit[i] @ unit[j]), abs=1e-5)
        assert r.same_artist == (cat.artists[i] == cat.artists[j])
        assert r.same_cluster == (cat.clusters[i] == cat.clusters[j])
    assert any(r.same_cluster for r in recs) and any(r.same_artist for r in recs)
    assert any(not r.same_artist for r in recs)
    df = recommendations_frame(recs)
    assert list(df.columns[:5]) == ["item_id", "score", "rank", "because", "contribution"]
    assert len(df) == 30


def test_because_is_the_liked_item_contributing_most(trained, world):
    """Leave-one-out, recomputed here through the model's own pooling: each explanation
    names the liked item without which the score drops most, by that drop; over the whole
    catalogue the explanations spread over the liked items as those drops say."""
    rec = _recommender(trained, world)
    profile = ["art000", "art013", "art026", "art039"]  # one item of each planted group
    without = _scores_without_each(rec, profile)  # (n, m)
    recs = rec.recommend(profile, k=N_ITEMS)
    expected_because = set()
    for r in recs:
        (i,) = rec.positions([r.item_id])
        drops = r.score - without[i]  # (m,)
        j = int(np.argmax(drops))
        assert r.because == profile[j]
        assert r.contribution == pytest.approx(float(drops[j]), abs=1e-4)
        expected_because.add(profile[j])
    # the model's numbers decide how many liked items explain something; here all four
    # groups are represented, and the drops single out more than one of them
    assert {r.because for r in recs} == expected_because and len(expected_because) >= 3
    # the items of a liked item's group are explained by that liked item, mostly
    group_of = dict(zip(world.ids.tolist(), world.group.tolist(), strict=True))
    agree = [group_of[r.because] == group_of[r.item_id] for r in recs]
    assert np.mean(agree) > 0.5
    # batch and single profiles agree, contributions included
    (batch,) = rec.recommend_batch([profile], k=N_ITEMS)
    assert [r.because for r in batch] == [r.because for r in recs]
    assert np.allclose([r.contribution for r in batch], [r.contribution for r in recs], atol=1e-4)


def test_one_liked_item_takes_the_whole_score(trained, world):
    rec = _recommender(trained, world)
    for r in rec.recommend(["art007"], k=5):
        assert r.because == "art007" and r.contribution == pytest.approx(r.score)


def test_leave_one_out_pooling_matches_the_model():
    from curatornet_pipeline.core.models.networks import pool_profiles
    from curatornet_pipeline.core.recommend.arrays import leave_one_out_pooled

    rng = np.random.default_rng(2)
    h = rng.normal(size=(5, 6)).astype(np.float32)
    h[3, 2] = h[1, 2] = h[:, 2].max() + 1  # a tie at the maximum of one dimension
    got = leave_one_out_pooled(h)
    for j in range(5):
        rows = torch.tensor([i for i in range(5) if i != j])
        want = pool_profiles(torch.from_numpy(h), rows, torch.tensor([0, 4]))[0].numpy()
        np.testing.assert_allclose(got[j], want, rtol=1e-6, atol=1e-6)
    assert leave_one_out_pooled(h[:1]) is None


def test_unknown_ids_and_empty_profiles_raise(world):
    rec = _recommender(_untrained(), world)
    with pytest.raises(ValueError, match=r"nope1.*nope2"):
        rec.recommend(["art000", "nope1", "nope2"])
    with pytest.raises(ValueError, match="nope3"):
        rec.recommend_batch([["art000"], ["nope3"]])
    with pytest.raises(ValueError, match="empty"):
        rec.recommend([])
    with pytest.raises(ValueError, match="already in the catalogue"):
        rec.add_items(["art000"], world.features[:1])
    with pytest.raises(ValueError, match="features"):
        rec.add_items(["x"], np.zeros((1, D_IN + 1), np.float32))


def test_batch_matches_single_profiles(trained, world):
    rec = _recommender(trained, world)
    rng = np.random.default_rng(4)
    profiles = [
        list(rng.choice(world.ids, int(rng.integers(1, 6)), replace=False)) for _ in range(9)
    ]
    batch = rec.recommend_batch(profiles, k=7, chunk=4)
    for profile, got in zip(profiles, batch, strict=True):
        single = rec.recommend(profile, k=7)
        assert [r.item_id for r in got] == [r.item_id for r in single]
        assert [r.because for r in got] == [r.because for r in single]
        assert np.allclose([r.score for r in got], [r.score for r in single], atol=1e-5)


def test_liked_images_outside_the_catalogue_join_the_profile(trained, world):
    rec = _recommender(trained, world)
    known = rec.recommend(["art004", "art008"], k=12)
    # the same two artworks given as images (raw features), not as catalogue ids
    as_images = rec.recommend(
        [], k=14, extra_profile_features=world.features[[4, 8]], extra_profile_names=["a", "b"]
    )
    as_images = [r for r in as_images if r.item_id not in ("art004", "art008")][:12]
    assert [r.item_id for r in as_images] == [r.item_id for r in known]
    assert np.allclose([r.score for r in as_images], [r.score for r in known], atol=1e-5)
    assert {r.because for r in as_images} <= {"a", "b"}
    assert not any(r.same_artist or r.same_cluster for r in as_images)  # unknown for images
    with pytest.raises(ValueError, match="expected"):
        rec.recommend(["art004"], extra_profile_features=np.zeros((1, 3)))


def test_recommendations_figure_is_a_png(trained, world):
    rec = _recommender(trained, world)
    recs = rec.recommend(["art000"], k=10)
    png = recommendations_figure(
        [("user 1", ["art000"], recs), ("user 2", list(world.ids[:12]), recs)],
        lambda i: None if i.endswith("1") else np.zeros((8, 8, 3), np.uint8),
    )
    assert png.startswith(PNG) and len(png) > 1000


# ----------------------------------------------------------------------------- serving


def _write_storage(root: Path, world: World) -> None:
    (root / "bundles").mkdir(parents=True)
    (root / "tables").mkdir(parents=True)
    embeddings = ItemVectors(ids=world.ids, vectors=world.features, meta={"backbone": "synthetic"})
    clusters = VisualClusters(
        ids=world.ids,
        labels=world.group.astype(np.int32),
        centroids=np.zeros((GROUPS, 2), np.float32),
        silhouettes=np.zeros(1),
        chosen=0,
        k=GROUPS,
    )
    for name, value in (("item_embeddings", embeddings), ("visual_clusters", clusters)):
        with open(root / "bundles" / f"{name}.npz", "wb") as f:
            save_bundle(value, f)
    inventory = pd.DataFrame(
        {
            "artwork_id_hash": world.ids,
            "artist_id_hash": [f"artist{g}" for g in world.group],
            "upload_timestamp": np.zeros(N_ITEMS, np.int64),
        }
    )
    inventory.to_parquet(root / "tables" / "inventory.parquet", index=False)
    # art003 bought once (one-of-a-kind, sold out); art005 twice (an edition, stays)
    purchases = pd.DataFrame(
        {
            "user_id_hash": ["u1", "u2", "u3"],
            "artwork_id_hash": ["art003", "art005", "art005"],
            "purchase_timestamp": np.array([100, 200, 300], np.int64),
        }
    )
    purchases.to_parquet(root / "tables" / "purchases.parquet", index=False)


def test_champion_from_the_mlflow_registry_is_served(trained, world, mlflow_store, tmp_path):
    """The registered pyfunc carries its catalogue: no asset storage needed to serve it."""
    from mlflow import MlflowClient

    from curatornet_pipeline import serving
    from curatornet_pipeline.mlflow_model import log_recommender

    name = "curatornet_test_serving"  # not the pipeline's model: other tests may register it
    model_file = tmp_path / "model.pt"
    save_model(model_file, trained, {"inputs": {}})
    client = MlflowClient(tracking_uri=mlflow_store, registry_uri=mlflow_store)
    experiment = client.get_experiment_by_name("curatornet")
    run = client.create_run(experiment.experiment_id)
    scratch = set(Path(tempfile.gettempdir()).glob("curatornet-catalogue-*"))
    source = log_recommender(client, run.info.run_id, model_file, world.catalogue(), ["art000"])
    # the catalogue's scratch copy is gone once it is in the model folder
    assert set(Path(tempfile.gettempdir()).glob("curatornet-catalogue-*")) == scratch
    client.set_terminated(run.info.run_id)
    client.create_registered_model(name)
    version = client.create_model_version(name, source, run_id=run.info.run_id).version
    client.set_registered_model_alias(name, "champion", version)

    served = serving.load_recommender("champion", storage=str(tmp_path / "empty"), name=name)
    pins = serving.load_pyfunc("champion", name=name).metadata.metadata["requirements"]
    assert {p.split("==")[0] for p in pins} == {"mlflow", "torch", "numpy", "pandas"}
    assert served.catalogue.artists[0] == "artist0-0"
    assert served.catalogue.sold_out().tolist().count(True) == 2
    profile = ["art000", "art004"]
    got = served.recommend(profile, k=N_ITEMS)
    reference = _recommender(trained, world).recommend(profile, k=N_ITEMS)
    assert [r.item_id for r in got] == [r.item_id for r in reference]
    assert "art003" not in [r.item_id for r in got]  # sold out
    # by version and by run id, the same model
    for ref in (str(version), run.info.run_id):
        other = serving.load_recommender(ref, name=name)
        assert [r.item_id for r in other.recommend(profile, k=5)] == [r.item_id for r in got[:5]]
    with pytest.raises(LookupError, match="no_such_alias"):
        serving.load_recommender("no_such_alias", name=name)
    # a model file ranks the asset storage's catalogue
    storage = tmp_path / "storage"
    _write_storage(storage, world)
    by_file = serving.load_recommender(str(model_file), storage=str(storage))
    assert [r.item_id for r in by_file.recommend(profile, k=3)][:1] == [got[0].item_id]
    with pytest.raises(FileNotFoundError, match="item_embeddings"):
        serving.load_recommender(str(model_file), storage=str(tmp_path / "empty"))


def _image(path: Path, colour: tuple[int, int, int]) -> Path:
    img = Image.new("RGB", (40, 30), colour)
    img.putpixel((3, 4), (255 - colour[0], 0, 0))
    img.save(path)
    return path


def test_new_images_are_embedded_like_the_catalogue(tmp_path):
    from curatornet_pipeline.core.visual.embed import EmbedConfig, embed_manifest
    from curatornet_pipeline.serving import embed_images

    a = _image(tmp_path / "a.png", (200, 30, 30))
    b = _image(tmp_path / "b.jpg", (20, 30, 220))
    config = EmbedConfig(backbone="resnet18", weights="none", image_size=32, num_workers=0)
    manifest = pd.DataFrame(
        {"artwork_id_hash": ["A", "B"], "path": [str(a), str(b)], "content_hash": ["1", "2"]}
    )
    catalogue = embed_manifest(manifest, config).vectors
    got = embed_images([a, b], catalogue.meta)
    assert got.shape == (2, 512)
    np.testing.assert_allclose(got, catalogue.vectors, atol=1e-5)

    broken = tmp_path / "broken.png"
    broken.write_bytes(PNG + b"not really")
    with pytest.raises(ValueError, match="broken.png"):
        embed_images([a, broken], catalogue.meta)
    with pytest.raises(ValueError, match="missing.png"):
        embed_images([tmp_path / "missing.png"], catalogue.meta)
    with pytest.raises(ValueError, match="is a directory"):
        embed_images([tmp_path], catalogue.meta)
    other = {**catalogue.meta, "weights_id": "sha256:0123", "weights": "file:/nope sha256:0123"}
    with pytest.raises(ValueError, match="/nope"):
        embed_images([a], other)
    with pytest.raises(ValueError, match="imported"):
        embed_images([a], {"source": "imported"})


def test_model_file_round_trip_keeps_recommendations(trained, world, tmp_path):
    from curatornet_pipeline.core.models.networks import load_model

    save_model(tmp_path / "m.pt", trained)
    loaded, _ = load_model(tmp_path / "m.pt")
    a = _recommender(trained, world).recommend(["art002"], k=5)
    b = _recommender(loaded, world).recommend(["art002"], k=5)
    assert [r.item_id for r in a] == [r.item_id for r in b]
    assert np.allclose([r.score for r in a], [r.score for r in b])


# ----------------------------------------------------------------------------- the asset


@pytest.mark.slow
def test_sample_recommendations_asset_and_cli(
    tiny_data, mlflow_store, tmp_path, monkeypatch, capsys
):
    """Ancestors of the asset, then the asset, on the tiny dataset; then the CLI on them."""
    import dagster as dg
    from mlflow import MlflowClient

    from curatornet_pipeline import cli
    from curatornet_pipeline.core.bundle import load_bundle
    from curatornet_pipeline.definitions import build_resources, defs
    from tests.graph_support import materialize_graph

    storage = tmp_path / "storage"
    monkeypatch.setenv("CURATORNET_STORAGE", str(storage))
    key = dg.AssetKey("sample_recommendations")
    graph = defs.resolve_asset_graph()
    selection = dg.AssetSelection.assets(key).upstream().resolve(graph)
    instance = dg.DagsterInstance.ephemeral()
    resources = build_resources(profile="tiny", data_root=str(tiny_data))
    results = materialize_graph(instance, resources, {k.to_user_string() for k in selection})
    assert all(r.success for r in results)

    last = results[-1]
    checks = last.get_asset_check_evaluations()
    assert {c.check_name for c in checks} == {
        "excludes_profile_and_sold_out",
        "explained_by_profile_items",
    }
    assert all(c.passed for c in checks)
    table = pd.read_parquet(storage / "tables" / "sample_recommendations.parquet")
    assert table["user_id"].nunique() == 4 and (table.groupby("user_id").size() == 10).all()
    with open(storage / "bundles" / "train_test_split.npz", "rb") as f:
        split = load_bundle(f)
    with open(storage / "bundles" / "item_embeddings.npz", "rb") as f:
        ids = load_bundle(f).ids
    for user, rows in table.groupby("user_id"):
        u = int(np.flatnonzero(split.user_ids == user)[0])
        b0, b1 = split.user_basket_offsets[u], split.user_basket_offsets[u + 1]
        lo, hi = split.basket_item_offsets[b0], split.basket_item_offsets[b1]
        profile = set(ids[split.basket_items[lo:hi]].tolist())
        assert set(rows["because"]) <= profile and not set(rows["item_id"]) & profile
    png = storage / "figures" / "sample_recommendations" / "sample_recommendations.png"
    assert png.read_bytes().startswith(PNG)
    mat = last.asset_materializations_for_node("sample_recommendations")[0]
    run_id = mat.metadata["mlflow_run_id"].value
    client = MlflowClient(tracking_uri=mlflow_store)
    logged = [a.path for a in client.list_artifacts(run_id, "figures")]
    assert logged == ["figures/sample_recommendations.png"]

    shown = mat.metadata["recommendations"].value  # a typed table with short ids
    assert [c.name for c in shown.schema.columns][:3] == ["user", "rank", "artwork"]
    assert len(shown.records) == len(table)
    assert all(len(r.data["artwork"]) == 8 for r in shown.records)

    # the CLI serves the registered champion (pyfunc with its catalogue), new image included
    champion = dg.AssetSelection.assets(dg.AssetKey("champion")).upstream().resolve(graph)
    done = {k.to_user_string() for k in selection}
    rest = {k.to_user_string() for k in champion} - done
    assert all(r.success for r in materialize_graph(instance, resources, rest))
    liked = table["because"].iloc[0]
    image = next((tiny_data / "images").iterdir())
    assert cli.main(["recommend", "--items", liked, "--k", "5", "--add-image", str(image)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == list(RECORD_FIELDS)  # the fields of the HTTP answer
    assert len(out) == 6 and all(line.split()[3] == liked for line in out[1:])
    assert cli.main(["recommend", "--items", "no-such-artwork"]) == 2
    assert "no-such-artwork" in capsys.readouterr().err


def test_a_package_that_differs_from_the_models_pin_is_one_warning(caplog) -> None:
    """MLflow's own check is skipped on load (1.5 s cold); the model's pins are compared."""
    from curatornet_pipeline import serving

    pins = ["numpy==0.0.1", f"pandas=={pd.__version__}", "no-such-package==1.0"]
    with caplog.at_level("WARNING", logger="curatornet_pipeline.serving"):
        serving._warn_on_drift("models:/m@champion", pins)
    assert [r.getMessage() for r in caplog.records] == [
        f"models:/m@champion was saved with numpy==0.0.1; this environment has "
        f"numpy=={np.__version__}",
        "models:/m@champion was saved with no-such-package==1.0; this environment has no "
        "no-such-package",
    ]
