"""Image vectors for the synthetic datasets, shaped like pooled post-ReLU ResNet-50 outputs,
and the published file that holds them (``resnet_embeddings.npy``).

Real vectors of paintings are non-negative and sparse (issue 31: a third exact zeros,
mean 0.45, max about 4); after the models' standard scaling their rare large values become
wide z-scores, which Gaussian features never give. :func:`resnet_like_vectors` makes
vectors with those statistics and with the catalogue's structure (artists within styles),
for ``curatornet synth --vectors`` and for the benchmarks.
"""

from pathlib import Path

import numpy as np

#: Targets of :func:`resnet_like_vectors`: what pooled post-ReLU ResNet-50 vectors of
#: paintings look like (issue 31: non-negative, a third exact zeros, mean 0.45, max about 4).
VECTOR_DIMS, VECTOR_MEAN = 2048, 0.45


def resnet_like_vectors(
    item_group: np.ndarray,
    rng: np.random.Generator,
    dims: int = VECTOR_DIMS,
    group_parent: np.ndarray | None = None,
) -> np.ndarray:
    """(n, dims) float32 vectors shaped like pooled post-ReLU ResNet-50 outputs of images
    whose look follows ``item_group`` (n,): non-negative, about a third exact zeros, mean
    0.45, and a maximum about 4 at UGallery scale (13k items x 2048).

    Each value is the ReLU of a sum of Gaussians: a per-dimension offset, so that some
    dimensions are nearly always zero and others nearly never (as a ResNet's channels
    are); the centre of the item's group, and of the group's ``group_parent`` when given
    (artists within styles), which is the structure a model can learn; and the item's own
    noise. One scale then sets the mean."""
    item_group = np.asarray(item_group, dtype=np.int64)
    n_groups = int(item_group.max()) + 1 if len(item_group) else 0
    offset = rng.normal(0.6, 1.0, dims)  # with the spread below: a third of values <= 0
    if group_parent is None:
        centres = rng.normal(0.0, 0.6, (n_groups, dims))
    else:
        group_parent = np.asarray(group_parent, dtype=np.int64)
        parents = rng.normal(0.0, 0.5, (int(group_parent.max()) + 1, dims))
        centres = parents[group_parent[:n_groups]] + rng.normal(0.0, 0.35, (n_groups, dims))
    out = np.empty((len(item_group), dims), dtype=np.float32)
    for start in range(0, len(out), 4096):  # in row blocks: memory of the output only
        rows = item_group[start : start + 4096]
        noise = rng.normal(0.0, 0.8, (len(rows), dims))
        np.maximum(offset + centres[rows] + noise, 0.0, out=out[start : start + len(rows)],
                   casting="same_kind")  # fmt: skip
    if out.size:
        out *= np.float32(VECTOR_MEAN / out.mean(dtype=np.float64))
    return out


def write_published_vectors(path: Path, ids: np.ndarray, vectors: np.ndarray) -> None:
    """``resnet_embeddings.npy`` as published: an object array of [artwork_id_hash, vector]
    rows, written with pickle (as ``np.save`` writes object arrays)."""
    rows = np.empty((len(ids), 2), dtype=object)
    for i, (item, vector) in enumerate(zip(ids, vectors, strict=True)):
        rows[i, 0], rows[i, 1] = str(item), vector
    np.save(path, rows, allow_pickle=True)
