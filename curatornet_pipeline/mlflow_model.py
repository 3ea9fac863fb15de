"""CuratorNet as an MLflow ``pyfunc`` model: liked artworks in, ranked artworks out.

A version carries its weights and the catalogue it ranks (an ``.npz`` of plain arrays),
so loading it reads nothing from the asset storage. A mistake in a request is HTTP 400
with one line naming it; any other failure HTTP 500, its traceback in the server log.
Input, params and output: docs/cold-start.md, "As an MLflow model".
"""

import json
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE

from curatornet_pipeline.core.data.catalogue import CATALOGUE_ARRAYS, Catalogue
from curatornet_pipeline.core.models.networks import CuratorNet, load_model
from curatornet_pipeline.core.models.scorers import CuratorNetScorer
from curatornet_pipeline.core.recommend.recommender import RECORD_FIELDS, Recommender
from curatornet_pipeline.registry import ARTIFACT_DIR as ARTIFACT_PATH

logger = logging.getLogger(__name__)

DEFAULT_K = 20


class ServingError(MlflowException):
    """An answer of the model over HTTP: the status follows ``error_code`` (400 for
    ``INVALID_PARAMETER_VALUE``, 500 for ``INTERNAL_ERROR``), the body's ``message`` is
    this one line.

    MLflow's scoring server (3.17) rewrites the message of an ``MlflowException`` raised
    in ``predict`` as ``Failed to predict data '<the request as a DataFrame>'. \\nError:
    <message>`` before answering: several lines echoing the request. This error's message
    is fixed when it is raised, so the answer stays the line that names the mistake.
    """

    def __init__(self, message: str, error_code: int = INVALID_PARAMETER_VALUE):
        super().__init__(message, error_code=error_code)

    @property
    def message(self) -> str:
        return self._line

    @message.setter
    def message(self, value: str) -> None:
        if not hasattr(self, "_line"):  # set once, by MlflowException.__init__
            self._line = value


# ----------------------------------------------------------------------------- catalogue file


def save_catalogue(path: str | Path, catalogue: Catalogue) -> None:
    """Write ``catalogue`` as an ``.npz`` of plain arrays (no pickle), meta as JSON."""
    arrays = {name: np.asarray(getattr(catalogue, name)) for name in CATALOGUE_ARRAYS}
    arrays["meta"] = np.asarray(json.dumps(catalogue.meta, default=str))
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def load_catalogue_file(path: str | Path) -> Catalogue:
    """Read :func:`save_catalogue`'s file; ValueError naming the file and a missing field."""
    with np.load(path, allow_pickle=False) as data:
        missing = [n for n in (*CATALOGUE_ARRAYS, "meta") if n not in data.files]
        if missing:
            raise ValueError(f"{path}: catalogue file lacks fields {missing}")
        values = {n: data[n] for n in CATALOGUE_ARRAYS}
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
        """Rank the catalogue for each row; see the module docstring for the answers."""
        try:
            return self._predict(model_input, params or {})
        except ServingError:
            raise
        except Exception as exc:  # not the request's mistake: the server's fault
            logger.exception("curatornet pyfunc: predict failed")
            raise ServingError(
                f"internal error while ranking ({type(exc).__name__}); the server log has the "
                "details",
                error_code=INTERNAL_ERROR,
            ) from exc

    def _predict(self, model_input: Any, params: dict) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        rows = []
        for request, (liked, vectors, k, in_stock) in enumerate(self._requests(frame, params)):
            recs = self.recommender.recommend(
                liked, k=k, in_stock_only=in_stock, extra_profile_features=vectors
            )
            rows += [{"request": request, **r} for r in self.recommender.records(recs)]
        return pd.DataFrame(rows, columns=list(_OUTPUT_COLUMNS))

    def _requests(self, frame: pd.DataFrame, params: dict) -> list[tuple]:
        """(liked ids, image vectors or None, k, in_stock_only) per row; a ServingError
        (HTTP 400) naming the first mistake of the request."""
        k = params.get("k", DEFAULT_K)
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ServingError(f"param k must be a positive integer, got {k!r}")
        in_stock_only = params.get("in_stock_only", True)
        if not isinstance(in_stock_only, bool | np.bool_):
            raise ServingError(f"param in_stock_only must be true or false, got {in_stock_only!r}")
        if "liked" not in frame.columns:
            raise ServingError(f"input needs a 'liked' column of artwork ids; got {list(frame)}")
        if frame.empty:
            raise ServingError("the request has no rows: send one row per profile")
        dim = self.recommender.catalogue.features.shape[1]
        several = len(frame) > 1
        out = []
        for row_number, row in enumerate(frame.to_dict(orient="records")):
            where = f"row {row_number}: " if several else ""
            liked = _ids(row.get("liked"))
            vectors = _vectors(row.get("image_vectors"))
            if not liked and vectors is None:
                raise ServingError(
                    f"{where}empty profile: 'liked' holds no artwork id and no 'image_vectors' "
                    "were given"
                )
            try:
                self.recommender.positions(liked)
            except ValueError as exc:  # names every unknown id
                raise ServingError(f"{where}{exc}") from None
            if vectors is not None and any(len(v) != dim for v in vectors):
                lengths = sorted({len(v) for v in vectors})
                raise ServingError(
                    f"{where}each of 'image_vectors' needs {dim} numbers, got {lengths}"
                )
            out.append(
                (liked, None if vectors is None else np.stack(vectors), int(k), bool(in_stock_only))
            )
        return out


def _ids(value: Any) -> list[str]:
    """Liked ids from a list/array, or a comma-separated string."""
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def _vectors(value: Any) -> list[np.ndarray] | None:
    """The raw image vectors of a row (each its own array: lengths are checked apart)."""
    if value is None or (hasattr(value, "__len__") and len(value) == 0):
        return None
    return [np.asarray(v, dtype=np.float32).reshape(-1) for v in value]


_FIELD_TYPES = {
    "rank": "long",
    "item_id": "string",
    "score": "double",
    "because": "string",
    "contribution": "double",
    "similarity": "double",
    "artist": "string",
    "cluster": "long",
    "same_artist": "boolean",
    "same_cluster": "boolean",
}
#: The answer's columns: the request's row number, then the CLI's fields in its order.
_OUTPUT_COLUMNS = {"request": "long", **{name: _FIELD_TYPES[name] for name in RECORD_FIELDS}}


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
    with tempfile.TemporaryDirectory(prefix="curatornet-catalogue-") as tmp:
        catalogue_file = Path(tmp) / "catalogue.npz"  # copied into the model folder
        save_catalogue(catalogue_file, catalogue)
        mlflow.pyfunc.save_model(
            str(path),
            python_model=CuratorNetRecommender(),
            artifacts={"weights": str(model_file), "catalogue": str(catalogue_file)},
            signature=signature(),
            input_example=pd.DataFrame({"liked": [list(example)]}),
            pip_requirements=requirements(),
            metadata={"requirements": requirements()},  # checked on load (serving.py)
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
