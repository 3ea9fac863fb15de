"""Visual clusters: z-scored PCA of the embeddings, k-means by best silhouette, a 2-D map.

Following the reference implementation: features are standard-scaled per
dimension, reduced to 200 dimensions by PCA, and clustered with k-means
(k=100) 20 times; the run with the best silhouette coefficient is kept. UMAP
of the same PCA vectors gives the map of the paper's Figure 2.
"""

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageOps
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score
from sklearn.preprocessing import StandardScaler

from curatornet_pipeline.core.types import ItemVectors, VisualClusters

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PCAConfig:
    """Dimension reduction of the (z-scored) embeddings."""

    n_components: int = 200  # paper: 2048 -> 200; capped at n_items - 1 and the input dim
    seed: int = 0  # random_state of PCA (randomized solver on large inputs)


@dataclass(frozen=True)
class ClusterConfig:
    """k-means restarts, the best by silhouette kept."""

    k: int = 100  # number of visual clusters (paper: 100)
    restarts: int = 20  # k-means runs with seeds seed..seed+restarts-1 (paper: 20)
    seed: int = 0
    silhouette_sample: int | None = None  # items sampled for the silhouette; None: all


def reduce(vectors: ItemVectors, config: PCAConfig = PCAConfig()) -> ItemVectors:
    """Standard-scale every dimension (constant ones become 0), then PCA."""
    x = np.asarray(vectors.vectors, dtype=np.float64)  # (n, d)
    n, d = x.shape
    if n < 2:
        raise ValueError(f"PCA needs at least 2 items, got {n}")
    if not np.isfinite(x).all():
        raise ValueError("embedding vectors contain NaN or infinite values")
    scaled = StandardScaler().fit_transform(x)  # zero-variance dims: scale 1, value 0
    n_components = min(config.n_components, n - 1, d)
    pca = PCA(n_components=n_components, svd_solver="auto", random_state=config.seed)
    reduced = pca.fit_transform(scaled).astype(np.float32)  # (n, n_components)
    explained = float(pca.explained_variance_ratio_.sum())
    logger.info("PCA %d -> %d dims keeps %.1f%% of the variance", d, n_components, 100 * explained)
    meta = {
        **vectors.meta,
        "input_dim": d,
        "n_components": n_components,
        "explained_variance_ratio_sum": explained,
        "scaler": "StandardScaler (z-score per dimension; constant dimensions -> 0)",
        "pca_seed": config.seed,
    }
    return ItemVectors(ids=vectors.ids, vectors=reduced, meta=meta)


def cluster(pca: ItemVectors, config: ClusterConfig = ClusterConfig()) -> VisualClusters:
    """k-means ``config.restarts`` times; keep the run with the best silhouette."""
    x = np.asarray(pca.vectors, dtype=np.float32)  # (n, d)
    n = len(x)
    if config.k < 2:
        raise ValueError(f"k must be at least 2 (silhouette undefined), got {config.k}")
    if config.k >= n:
        raise ValueError(f"k={config.k} clusters need more than {n} items")
    if config.restarts < 1:
        raise ValueError(f"restarts must be at least 1, got {config.restarts}")
    silhouettes = np.zeros(config.restarts, dtype=np.float64)
    best: KMeans | None = None
    for r in range(config.restarts):
        km = KMeans(n_clusters=config.k, n_init=1, random_state=config.seed + r).fit(x)
        silhouettes[r] = silhouette_score(
            x,
            km.labels_,
            metric="euclidean",
            sample_size=config.silhouette_sample,
            random_state=config.seed,
        )
        logger.info(
            "k-means restart %d/%d: silhouette %.4f", r + 1, config.restarts, silhouettes[r]
        )
        if best is None or silhouettes[r] > silhouettes[:r].max(initial=-np.inf):
            best = km
    chosen = int(np.argmax(silhouettes))
    labels = best.labels_.astype(np.int32)
    sizes = np.bincount(labels, minlength=config.k)
    if (sizes == 0).any():  # sklearn relocates empty clusters; never expected
        raise RuntimeError(f"k-means left {int((sizes == 0).sum())} clusters empty")
    return VisualClusters(
        ids=np.asarray(pca.ids).astype(str),
        labels=labels,
        centroids=best.cluster_centers_.astype(np.float32),
        silhouettes=silhouettes,
        chosen=chosen,
        k=config.k,
    )


def cluster_size_histogram(labels: np.ndarray) -> dict[str, int | float]:
    """Summary of cluster sizes: count, min, median, mean, max, singletons."""
    sizes = np.bincount(np.asarray(labels))
    sizes = sizes[sizes > 0]
    return {
        "clusters": int(sizes.size),
        "min": int(sizes.min()),
        "median": float(np.median(sizes)),
        "mean": float(sizes.mean()),
        "max": int(sizes.max()),
        "singletons": int((sizes == 1).sum()),
    }


def umap_2d(
    pca: ItemVectors, seed: int = 0, n_neighbors: int = 15, min_dist: float = 0.1
) -> np.ndarray:
    """UMAP of the PCA vectors to 2-D, ``(n, 2)`` float32, reproducible for a seed."""
    import umap  # slow import (numba): only when a map is drawn

    x = np.asarray(pca.vectors, dtype=np.float32)
    if len(x) < 4:
        raise ValueError(f"UMAP needs at least 4 items, got {len(x)}")
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=min(n_neighbors, len(x) - 1),
        min_dist=min_dist,
        random_state=seed,
        n_jobs=1,  # a seeded UMAP is single-threaded anyway; saying so avoids its warning
    )
    return reducer.fit_transform(x).astype(np.float32)


def load_thumbnail(path: str | Path, size: int = 48) -> np.ndarray:
    """A ``(size, size, 3)`` uint8 center crop of an image file."""
    with Image.open(path) as img:
        thumb = ImageOps.fit(img.convert("RGB"), (size, size))
    return np.asarray(thumb, dtype=np.uint8)


def cluster_map_figure(
    coords: np.ndarray,
    labels: np.ndarray,
    thumbnails: Callable[[int], np.ndarray | None] | None = None,
    n_clusters_shown: int = 4,
    per_row: int = 8,
    seed: int = 0,
) -> bytes:
    """PNG of the 2-D map colored by cluster, beside thumbnails of the largest clusters.

    ``thumbnails(i)`` returns an ``(H, W, 3)`` uint8 image of item ``i`` or None.
    Drawn on a bare ``Figure`` with the Agg canvas: no pyplot, no global backend.
    """
    coords = np.asarray(coords, dtype=np.float64)  # (n, 2)
    labels = np.asarray(labels)
    if coords.shape != (len(labels), 2):
        raise ValueError(f"coords of shape {coords.shape} for {len(labels)} labels")
    k = int(labels.max()) + 1 if len(labels) else 0
    sizes = np.bincount(labels, minlength=k)
    shown = np.argsort(-sizes, kind="stable")[: n_clusters_shown if thumbnails else 0]
    rows = max(len(shown), 1)
    width = 6 + (0.7 * per_row + 1 if len(shown) else 0)
    fig = Figure(figsize=(width, max(5.0, 0.8 * rows + 1)), dpi=100)
    FigureCanvasAgg(fig)
    cells = per_row + 1 if len(shown) else 0  # a spacer column for the row labels
    grid = fig.add_gridspec(
        rows, 1 + cells, width_ratios=[7] + [1.0] + [0.7] * per_row if cells else [7]
    )
    cmap = _colormap(k)
    ax = fig.add_subplot(grid[:, 0])
    ax.scatter(coords[:, 0], coords[:, 1], c=[cmap(c) for c in labels], s=6, linewidths=0)
    for c in shown:
        cx, cy = np.median(coords[labels == c], axis=0)
        ax.annotate(
            str(c),
            (cx, cy),
            xytext=(8, 8),
            textcoords="offset points",
            fontsize=9,
            weight="bold",
            bbox={"boxstyle": "round", "fc": "white", "alpha": 0.7},
        )
    ax.set_title(f"{len(labels)} items, {k} visual clusters (UMAP)")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.subplots_adjust(wspace=0.15)
    rng = np.random.default_rng(seed)
    for row, c in enumerate(shown):
        members = np.flatnonzero(labels == c)
        picked = rng.choice(members, size=min(per_row, len(members)), replace=False)
        for col in range(per_row):
            cell = fig.add_subplot(grid[row, 2 + col])
            cell.set_xticks([])
            cell.set_yticks([])
            for spine in cell.spines.values():
                spine.set_color(cmap(c))
                spine.set_linewidth(2)
            if col == 0:
                cell.set_ylabel(f"#{c} ({sizes[c]})", fontsize=8, rotation=0, ha="right")
            image = thumbnails(int(picked[col])) if col < len(picked) else None
            if image is not None:
                cell.imshow(image)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def _colormap(k: int) -> Callable[[int], tuple]:
    from matplotlib import colormaps

    if k <= 20:
        base = colormaps["tab20"] if k > 10 else colormaps["tab10"]
        return lambda c: base(int(c) % base.N)
    base = colormaps["turbo"]
    order = np.random.default_rng(0).permutation(k)  # neighbours get distant colours
    return lambda c: base(order[int(c)] / max(k - 1, 1))
