"""Visual clusters: PCA with z-scoring, best-of-restarts k-means, UMAP map, figure."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score, silhouette_score

from curatornet_pipeline.core.types import ItemVectors
from curatornet_pipeline.core.visual.cluster import (
    ClusterConfig,
    PCAConfig,
    cluster,
    cluster_map_figure,
    cluster_size_histogram,
    load_thumbnail,
    reduce,
    umap_2d,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def blobs() -> tuple[ItemVectors, np.ndarray]:
    x, truth = make_blobs(n_samples=300, n_features=50, centers=5, cluster_std=2.0, random_state=0)
    ids = np.array([f"item{i:03d}" for i in range(len(x))])
    return ItemVectors(ids=ids, vectors=x.astype(np.float32), meta={"backbone": "test"}), truth


def test_reduce_scales_then_projects(blobs) -> None:
    vectors, _ = blobs
    x = vectors.vectors.copy()
    x[:, 7] = 3.0  # a constant dimension must not produce NaN
    reduced = reduce(ItemVectors(vectors.ids, x), PCAConfig(n_components=10))
    assert reduced.vectors.shape == (300, 10) and reduced.vectors.dtype == np.float32
    assert np.isfinite(reduced.vectors).all()
    assert list(reduced.ids) == list(vectors.ids)
    assert reduced.meta["n_components"] == 10
    assert 0 < reduced.meta["explained_variance_ratio_sum"] <= 1
    assert "StandardScaler" in reduced.meta["scaler"]
    # capped by n_items - 1
    small = reduce(ItemVectors(vectors.ids[:6], vectors.vectors[:6]), PCAConfig())
    assert small.vectors.shape == (6, 5)


def test_clusters_recover_blobs(blobs) -> None:
    vectors, truth = blobs
    reduced = reduce(vectors, PCAConfig(n_components=20))
    result = cluster(reduced, ClusterConfig(k=5, restarts=3))
    assert adjusted_rand_score(truth, result.labels) > 0.9
    assert result.silhouettes.shape == (3,)
    assert result.chosen == int(np.argmax(result.silhouettes))
    assert np.bincount(result.labels, minlength=5).min() > 0
    assert result.centroids.shape == (5, 20) and result.k == 5
    assert result.labels.dtype == np.int32
    assert list(result.ids) == list(vectors.ids)
    hist = cluster_size_histogram(result.labels)
    assert hist["clusters"] == 5 and hist["min"] + hist["max"] <= 300


def test_best_silhouette_is_kept_over_bad_restarts() -> None:
    # 15 overlapping blobs: restarts end in different local optima
    x, _ = make_blobs(n_samples=240, n_features=5, centers=15, cluster_std=1.5, random_state=3)
    result = cluster(
        ItemVectors(np.arange(240).astype(str), x.astype(np.float32)),
        ClusterConfig(k=15, restarts=6, seed=0),
    )
    assert result.silhouettes.max() - result.silhouettes.min() > 0.01
    assert result.chosen == int(np.argmax(result.silhouettes)) != 0
    assert silhouette_score(x, result.labels) == pytest.approx(result.silhouettes.max(), abs=1e-4)


def test_z_scoring_makes_clusters_scale_invariant(blobs) -> None:
    vectors, _ = blobs
    config = ClusterConfig(k=5, restarts=3)
    base = cluster(reduce(vectors, PCAConfig(n_components=20)), config)
    x = vectors.vectors.copy()
    x[:, 0] *= 1000.0  # without scaling this dimension would dominate PCA and k-means
    scaled = cluster(reduce(ItemVectors(vectors.ids, x), PCAConfig(n_components=20)), config)
    assert adjusted_rand_score(base.labels, scaled.labels) > 0.9


def test_k_not_below_items_is_rejected(blobs) -> None:
    vectors, _ = blobs
    few = ItemVectors(vectors.ids[:5], vectors.vectors[:5])
    with pytest.raises(ValueError, match="k=5"):
        cluster(few, ClusterConfig(k=5, restarts=1))


def test_umap_and_figure(blobs, tmp_path: Path) -> None:
    vectors, _ = blobs
    reduced = reduce(
        ItemVectors(vectors.ids[:120], vectors.vectors[:120]), PCAConfig(n_components=10)
    )
    coords = umap_2d(reduced, seed=0)
    assert coords.shape == (120, 2) and np.isfinite(coords).all()
    labels = cluster(reduced, ClusterConfig(k=5, restarts=1)).labels

    path = tmp_path / "thumb.png"
    Image.new("RGB", (80, 40), (10, 200, 30)).save(path)
    thumb = load_thumbnail(path, size=16)
    assert thumb.shape == (16, 16, 3) and thumb.dtype == np.uint8
    assert tuple(thumb[8, 8]) == (10, 200, 30)

    asked: list[int] = []

    def thumbnails(i: int) -> np.ndarray | None:
        asked.append(i)
        return thumb if i % 2 else None

    png = cluster_map_figure(coords, labels, thumbnails, n_clusters_shown=3, per_row=4)
    assert png.startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(png)) as image:
        assert image.size[0] > 400 and image.size[1] > 300
    assert len(asked) == 12 and len(set(asked)) == 12
    largest = np.argsort(-np.bincount(labels))[:3]
    assert set(labels[asked]) == set(largest)
    assert cluster_map_figure(coords, labels, None).startswith(PNG_SIGNATURE)


def test_umap_on_tiny_input() -> None:
    x = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    coords = umap_2d(ItemVectors(np.arange(8).astype(str), x))
    assert coords.shape == (8, 2) and np.isfinite(coords).all()
