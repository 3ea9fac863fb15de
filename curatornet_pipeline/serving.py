"""The edge layer of recommendation: a model from the MLflow registry, the catalogue from
the asset storage, new images embedded exactly as the catalogue's were.

Storage layout (see :mod:`curatornet_pipeline.defs.io_managers`):
``<storage>/bundles/item_embeddings.npz``, ``<storage>/bundles/visual_clusters.npz``,
``<storage>/tables/inventory.parquet``, ``<storage>/tables/purchases.parquet``.
Registry: the pyfunc model ``curatornet`` with the alias ``champion`` (see
:mod:`curatornet_pipeline.mlflow_model` and :mod:`curatornet_pipeline.registry`), loaded
with ``mlflow.pyfunc.load_model``. MLflow is imported only when the model comes from it.
"""

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from upath import UPath

from curatornet_pipeline import settings
from curatornet_pipeline.core.bundle import load_bundle
from curatornet_pipeline.core.data.catalogue import Catalogue, build_catalogue
from curatornet_pipeline.core.hashing import content_hash, file_sha256
from curatornet_pipeline.core.models.networks import CuratorNet, load_model
from curatornet_pipeline.core.models.scorers import CuratorNetScorer
from curatornet_pipeline.core.recommend.recommender import Recommender
from curatornet_pipeline.core.types import ItemVectors, VisualClusters
from curatornet_pipeline.core.visual.backbone import preprocess_for, weights_id
from curatornet_pipeline.core.visual.embed import EmbedConfig, embed_manifest
from curatornet_pipeline.registry import ARTIFACT_DIR, MODEL_NAME

logger = logging.getLogger(__name__)

_RUN_ID = re.compile(r"[0-9a-f]{32}")


# ----------------------------------------------------------------------------- model


def model_uri(model: str, name: str = MODEL_NAME) -> str:
    """The MLflow model URI of ``model``: a run id (32 hex digits), a version number of
    the registered model ``name``, or an alias of it (``champion``)."""
    if _RUN_ID.fullmatch(model):
        return f"runs:/{model}/{ARTIFACT_DIR}"
    if model.isdigit():
        return f"models:/{name}/{model}"
    return f"models:/{name}@{model}"


def load_pyfunc(model: str, name: str = MODEL_NAME, tracking_uri: str | None = None):
    """The registered pyfunc model (see :mod:`curatornet_pipeline.mlflow_model`)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = tracking_uri or settings.mlflow_tracking_uri()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    target = model_uri(model, name)
    try:
        # MLflow's own requirements check maps every installed module to its package
        # (1.5 s of a cold `curatornet recommend` on 2 cores); the model's four pins are
        # compared directly instead
        model = mlflow.pyfunc.load_model(target, suppress_warnings=True)
    except (MlflowException, OSError) as exc:
        message = getattr(exc, "message", str(exc))
        raise LookupError(f"cannot load {target} from the MLflow store {uri}: {message}") from exc
    _warn_on_drift(target, (model.metadata.metadata or {}).get("requirements", []))
    return model


def _warn_on_drift(target: str, pins: Sequence[str]) -> None:
    """Warn when an installed package differs from the version the model was saved with."""
    from importlib.metadata import PackageNotFoundError, version

    for pin in pins:
        name = pin.partition("==")[0]
        try:
            installed = f"{name}=={version(name)}"
        except PackageNotFoundError:
            installed = f"no {name}"
        if installed != pin:
            logger.warning("%s was saved with %s; this environment has %s", target, pin, installed)


# ----------------------------------------------------------------------------- catalogue


def _read_bundle(storage: str, asset: str) -> object:
    path = UPath(storage) / "bundles" / f"{asset}.npz"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: materialize the asset {asset} first")
    with path.open("rb") as f:
        return load_bundle(f)


def _read_table(storage: str, asset: str) -> pd.DataFrame:
    path = UPath(storage) / "tables" / f"{asset}.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: materialize the asset {asset} first")
    with path.open("rb") as f:
        return pd.read_parquet(f)


def load_catalogue(storage: str | None = None) -> tuple[Catalogue, ItemVectors]:
    """The catalogue from the asset storage (default: ``settings.storage_uri()``).

    Sold-out state follows :func:`curatornet_pipeline.core.evaluation.evaluate.build_timeline`
    over the whole purchase history. Returns the catalogue and the embeddings bundle.
    """
    storage = storage or settings.storage_uri()
    embeddings = _read_bundle(storage, "item_embeddings")
    clusters = _read_bundle(storage, "visual_clusters")
    if not isinstance(embeddings, ItemVectors) or not isinstance(clusters, VisualClusters):
        raise ValueError(f"{storage}: unexpected item_embeddings / visual_clusters bundles")
    inventory = _read_table(storage, "inventory")
    purchases = _read_table(storage, "purchases")
    catalogue = build_catalogue(embeddings, clusters, inventory, purchases)
    return catalogue, embeddings


def load_recommender(
    model: str = "champion",
    storage: str | None = None,
    tracking_uri: str | None = None,
    name: str = MODEL_NAME,
) -> Recommender:
    """A :class:`Recommender` of the CuratorNet ``model``.

    ``model``: ``champion`` (or another alias / version number of the registered model
    ``name``) or an MLflow run id: loaded with ``mlflow.pyfunc.load_model``, ranking the
    catalogue registered with it. A model file: ranks the catalogue of the asset storage
    ``storage`` (default ``settings.storage_uri()``).
    """
    if not Path(model).is_file():
        pyfunc = load_pyfunc(model, name, tracking_uri)
        recommender = pyfunc.unwrap_python_model().recommender
        logger.info("serving %s over %d items", model_uri(model, name), len(recommender.catalogue))
        return recommender
    net, extra = load_model(model)  # weights_only=True
    origin = f"file {model}"
    if not isinstance(net, CuratorNet):
        raise ValueError(
            f"{origin} is a {net.kind} model: only CuratorNet serves users and items unseen "
            "in training"
        )
    catalogue, embeddings = load_catalogue(storage)
    trained_on = extra.get("inputs", {}).get("item_embeddings", {}).get("data_version")
    if trained_on and trained_on != content_hash(embeddings):
        logger.warning(
            "%s was trained on item_embeddings %s, the storage holds %s: the catalogue changed "
            "since training (new items are served by the item tower, no retraining needed)",
            origin,
            trained_on,
            content_hash(embeddings),
        )
    logger.info("serving %s over %d items", origin, len(catalogue))
    return Recommender(CuratorNetScorer(net, catalogue.features), catalogue)


# ----------------------------------------------------------------------------- new images


def embedding_config(meta: dict) -> EmbedConfig:
    """The :class:`EmbedConfig` that produced the catalogue's vectors (``ItemVectors.meta``).

    Raises ValueError when those weights cannot be reproduced here (changed weights
    file, another torchvision default, imported vectors of unknown preprocessing).
    """
    if meta.get("source") == "imported":
        raise ValueError(
            "the catalogue's vectors were imported (published resnet_embeddings.npy): their "
            "preprocessing is unknown, so new images cannot be embedded consistently"
        )
    if "backbone" not in meta or "weights_id" not in meta:
        raise ValueError(f"item_embeddings meta lacks backbone/weights_id: {sorted(meta)}")
    wid = str(meta["weights_id"])
    if wid.startswith("none"):
        weights = "none"
    elif wid.startswith("imagenet:"):
        weights = "imagenet"
    else:  # "file:<path> sha256:<hex>" in meta["weights"]
        found = re.match(r"file:(.*) sha256:[0-9a-f]+$", str(meta.get("weights", "")))
        if not found:
            raise ValueError(f"cannot find the weights file of {meta.get('weights')!r}")
        weights = found.group(1)
        if not Path(weights).is_file():
            raise ValueError(f"the catalogue's weights file {weights} is missing")
    config = EmbedConfig(
        backbone=str(meta["backbone"]),
        weights=weights,
        # None: the weights' own transform (catalogues before that key used 224)
        image_size=None if meta.get("image_size", 224) is None else int(meta["image_size"]),
        num_workers=0,
        on_unreadable="error",
    )
    if weights_id(config) != wid:
        raise ValueError(
            f"the catalogue was embedded with {wid}, this machine would use {weights_id(config)}"
        )
    if "transform" in meta:  # the preprocessing must match as well as the weights
        stated = {k: v for k, v in dict(meta["transform"]).items() if k != "source"}
        here = {k: v for k, v in preprocess_for(config).as_dict().items() if k != "source"}
        if stated != here:
            raise ValueError(
                f"the catalogue was embedded with transform {stated}, this machine would use {here}"
            )
    return config


def embed_images(paths: Sequence[str | Path], meta: dict) -> np.ndarray:
    """(len(paths), d) raw vectors of image files, with the catalogue's backbone and weights.

    ``meta`` is the catalogue's embedding meta (``Recommender.catalogue.meta``).
    An image that is missing or cannot be decoded raises ValueError naming the file.
    """
    rows = []
    for j, p in enumerate(paths):
        path = Path(p)
        if path.is_dir():
            raise ValueError(f"image file {path} is a directory")
        if not path.is_file():
            raise ValueError(f"image file {path} not found")
        digest = file_sha256(path)
        rows.append({"artwork_id_hash": f"image-{j}", "path": str(path), "content_hash": digest})
    manifest = pd.DataFrame(rows, columns=["artwork_id_hash", "path", "content_hash"])
    if manifest.empty:
        return np.zeros((0, int(meta.get("dim", 0))), np.float32)
    vectors = embed_manifest(
        manifest, embedding_config(meta)
    ).vectors.vectors  # ValueError names the file
    if "dim" in meta and vectors.shape[1] != int(meta["dim"]):
        raise ValueError(f"new vectors have {vectors.shape[1]} dims, the catalogue {meta['dim']}")
    return vectors
