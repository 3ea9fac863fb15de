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


def _run_settings_file() -> Path:
    return home_dir() / "run_settings.json"


def save_run_settings(profile: str, overrides: dict) -> None:
    """Remember the profile and overrides of the last `curatornet run`.

    The Dagster UI, the schedule and the sensor load the code location later
    and in other processes: they take these unless CURATORNET_PROFILE or
    CURATORNET_OVERRIDES say otherwise, so a re-materialization from the UI
    uses the same weights and settings as the run that built the assets.
    """
    import json

    _run_settings_file().write_text(json.dumps({"profile": profile, "overrides": overrides}))


def run_profile() -> str:
    """``CURATORNET_PROFILE``, else the last run's profile, else ``demo``."""
    import json

    if os.environ.get("CURATORNET_PROFILE"):
        return os.environ["CURATORNET_PROFILE"]
    path = _run_settings_file()
    return json.loads(path.read_text())["profile"] if path.exists() else "demo"


def run_overrides() -> dict:
    """``CURATORNET_OVERRIDES`` (JSON), else the last run's overrides, else ``{}``."""
    import json

    if os.environ.get("CURATORNET_OVERRIDES"):
        return json.loads(os.environ["CURATORNET_OVERRIDES"])
    path = _run_settings_file()
    return json.loads(path.read_text())["overrides"] if path.exists() else {}
