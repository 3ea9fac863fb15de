"""Where the project keeps its state: one home folder and one data folder.

``CURATORNET_HOME`` holds the Dagster instance (``DAGSTER_HOME``), the asset
storage and the MLflow store; ``CURATORNET_DATA`` holds the dataset in the
published format. Both default to folders inside the repository checkout.
"""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def home_dir() -> Path:
    """The project's home folder (created on first use)."""
    path = Path(os.environ.get("CURATORNET_HOME", REPO_ROOT / ".curatornet_home")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir() -> Path:
    """The dataset folder: purchases.csv, inventory.csv, images/ or embeddings.npz."""
    return Path(os.environ.get("CURATORNET_DATA", REPO_ROOT / "data")).resolve()


def storage_uri() -> str:
    """Root of the asset storage: a local folder by default, any fsspec URI otherwise."""
    return os.environ.get("CURATORNET_STORAGE", str(home_dir() / "storage"))


def mlflow_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else a SQLite store in the home folder."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home_dir() / 'mlflow.db'}"


def mlflow_artifact_root() -> str:
    """Where a local tracking store keeps run artifacts."""
    return str(home_dir() / "mlartifacts")
