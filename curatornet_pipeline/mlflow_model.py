"""CuratorNet as an MLflow ``pyfunc`` model: liked artworks in, ranked artworks out.

A registered version holds everything it needs to rank, as two artifacts:

- ``weights``: the CuratorNet model file (:func:`curatornet_pipeline.core.models.save_model`,
  loaded with ``weights_only=True``);
- ``catalogue``: the artworks it ranks (ids, raw visual features, artists, visual
  clusters, upload and sold-out times, one-of-a-kind flags, embedding meta) as an
  ``.npz`` of plain arrays.

So ``mlflow.pyfunc.load_model("models:/curatornet@champion")`` and
``mlflow models serve -m models:/curatornet@champion --env-manager local`` work in any
process where this package and MLflow are installed; nothing is read from the asset
storage. Input: one row per request, ``liked`` (artwork ids) and optionally
``image_vectors`` (raw embeddings of liked images outside the catalogue, see
``curatornet recommend --image``). Params: ``k`` (default 20) and ``in_stock_only``
(default true). Output: one row per recommendation with the request's row number.
"""

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from curatornet_pipeline.core.models import CuratorNet, load_model
from curatornet_pipeline.core.recommend import CATALOGUE_ARRAYS, Catalogue, Recommender
from curatornet_pipeline.core.scorers import CuratorNetScorer
from curatornet_pipeline.registry import ARTIFACT_DIR as ARTIFACT_PATH

DEFAULT_K = 20
_CATALOGUE_FIELDS = CATALOGUE_ARRAYS


# ----------------------------------------------------------------------------- catalogue file


def save_catalogue(path: str | Path, catalogue: Catalogue) -> None:
    """Write ``catalogue`` as an ``.npz`` of plain arrays (no pickle), meta as JSON."""
    arrays = {name: np.asarray(getattr(catalogue, name)) for name in _CATALOGUE_FIELDS}
    arrays["meta"] = np.asarray(json.dumps(catalogue.meta, default=str))
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def load_catalogue_file(path: str | Path) -> Catalogue:
    """Read :func:`save_catalogue`'s file; ValueError naming the file and a missing field."""
    with np.load(path, allow_pickle=False) as data:
        missing = [n for n in (*_CATALOGUE_FIELDS, "meta") if n not in data.files]
        if missing:
            raise ValueError(f"{path}: catalogue file lacks fields {missing}")
        values = {n: data[n] for n in _CATALOGUE_FIELDS}
        meta = json.loads(str(data["meta"]))
    return Catalogue(**values, meta=meta)


# ----------------------------------------------------------------------------- the model


class CuratorNetRecommender(mlflow.pyfunc.PythonModel):
    """The pyfunc: ``predict`` ranks the catalogue for each row's liked items."""

    def load_context(self, context: Any) -> None:
        net, extra = load_model(context.artifacts["weights"])
        if not isinstance(net, CuratorNet):
            raise ValueError(f"{context.artifacts['weights']}: a {net.kind} model, not CuratorNet")
        catalogue = load_catalogue_file(context.artifacts["catalogue"])
        self.extra = extra
        self.recommender = Recommender(CuratorNetScorer(net, catalogue.features), catalogue)

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict | None = None
    ) -> pd.DataFrame:
        params = params or {}
        k = int(params.get("k", DEFAULT_K))
        in_stock_only = bool(params.get("in_stock_only", True))
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if "liked" not in frame.columns:
            raise ValueError(f"input needs a 'liked' column of artwork ids; got {list(frame)}")
        rows = []
        for request, row in enumerate(frame.to_dict(orient="records")):
            liked = _ids(row.get("liked"))
            vectors = _vectors(row.get("image_vectors"))
            recs = self.recommender.recommend(
                liked, k=k, in_stock_only=in_stock_only, extra_profile_features=vectors
            )
            position = self.recommender.positions([r.item_id for r in recs])
            cat = self.recommender.catalogue
            for r, p in zip(recs, position, strict=True):
                rows.append(
                    {
                        "request": request,
                        "rank": r.rank,
                        "item_id": r.item_id,
                        "score": r.score,
                        "because": r.because,
                        "artist": str(cat.artists[p]),
                        "cluster": int(cat.clusters[p]),
                        "same_artist": r.same_artist,
                        "same_cluster": r.same_cluster,
                    }
                )
        return pd.DataFrame(rows, columns=list(_OUTPUT_COLUMNS))


def _ids(value: Any) -> list[str]:
    """Liked ids from a list/array, or a comma-separated string."""
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def _vectors(value: Any) -> np.ndarray | None:
    if value is None or (hasattr(value, "__len__") and len(value) == 0):
        return None
    return np.asarray([np.asarray(v, dtype=np.float32) for v in value], dtype=np.float32)


_OUTPUT_COLUMNS = {
    "request": "long",
    "rank": "long",
    "item_id": "string",
    "score": "double",
    "because": "string",
    "artist": "string",
    "cluster": "long",
    "same_artist": "boolean",
    "same_cluster": "boolean",
}


def signature() -> Any:
    """Input ``liked`` (array of ids), optional ``image_vectors``; params ``k``, ``in_stock_only``."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema(
        [
            ColSpec(Array("string"), "liked"),
            ColSpec(Array(Array("double")), "image_vectors", required=False),
        ]
    )
    outputs = Schema([ColSpec(t, n) for n, t in _OUTPUT_COLUMNS.items()])
    params = ParamSchema(
        [ParamSpec("k", "long", DEFAULT_K), ParamSpec("in_stock_only", "boolean", True)]
    )
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def requirements() -> list[str]:
    """Pinned runtime requirements (given, not inferred: inference loads the model again)."""
    from importlib.metadata import version

    # The project itself is not on a package index: serve with ``--env-manager local``
    # from an environment where it is installed (docs/cold-start.md).
    return [f"{p}=={version(p)}" for p in ("mlflow", "torch", "numpy", "pandas")]


def save_recommender(
    path: str | Path, model_file: str | Path, catalogue: Catalogue, example: Sequence[str]
) -> Path:
    """Write the pyfunc model folder (MLmodel, signature, input example, artifacts)."""
    tmp = Path(tempfile.mkdtemp(prefix="curatornet-catalogue-"))
    catalogue_file = tmp / "catalogue.npz"
    save_catalogue(catalogue_file, catalogue)
    mlflow.pyfunc.save_model(
        str(path),
        python_model=CuratorNetRecommender(),
        artifacts={"weights": str(model_file), "catalogue": str(catalogue_file)},
        signature=signature(),
        input_example=pd.DataFrame({"liked": [list(example)]}),
        pip_requirements=requirements(),
    )
    return Path(path)


def log_recommender(
    client: Any, run_id: str, model_file: str | Path, catalogue: Catalogue, example: Sequence[str]
) -> str:
    """Log the pyfunc model into the run's ``recommender/`` folder; returns its artifact URI."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_recommender(Path(tmp) / ARTIFACT_PATH, model_file, catalogue, example)
        client.log_artifacts(run_id, str(folder), ARTIFACT_PATH)
    return f"{client.get_run(run_id).info.artifact_uri}/{ARTIFACT_PATH}"
