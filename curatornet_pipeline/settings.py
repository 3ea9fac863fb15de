"""The one place that reads the environment, and where the project keeps its state.

``CURATORNET_HOME`` holds the Dagster instance (``DAGSTER_HOME``), the asset
storage and the MLflow store; ``CURATORNET_DATA`` holds the dataset in the
published format. Both default to folders inside the repository checkout.
Every ``CURATORNET_*`` variable is listed in :data:`VARIABLES` (the table of
docs/operations.md is checked against it) and read through :func:`env`.
"""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Every project variable: name -> default ("" when the default is computed).
VARIABLES: dict[str, str] = {
    "CURATORNET_HOME": "",
    "CURATORNET_DATA": "",
    "CURATORNET_STORAGE": "",
    "CURATORNET_PROFILE": "",
    "CURATORNET_OVERRIDES": "",
    "CURATORNET_EXECUTOR": "in_process",
    "CURATORNET_MAX_CONCURRENT": "",
    "CURATORNET_THREADS": "",
    "CURATORNET_DASK_SCHEDULER": "",
    "CURATORNET_HEAVY_RUNS": "1",
    "CURATORNET_MLFLOW_UI": "",
    "CURATORNET_DAGSTER_UI": "",
    "CURATORNET_INCOMING": "",
    "CURATORNET_INCOMING_SETTLE_S": "",
    "CURATORNET_INCOMING_GRACE_S": "",
    "CURATORNET_ON_UNKNOWN_ITEMS": "",
    "CURATORNET_ON_MISSING_IMAGES": "",
    "CURATORNET_ON_UNREADABLE_IMAGES": "",
    "CURATORNET_ON_MISSING_VECTORS": "",
    "CURATORNET_NIGHTLY_CRON": "0 2 * * *",
    "CURATORNET_TIMEZONE": "UTC",
    "CURATORNET_AUTOMATION": "on",
    "CURATORNET_AUTOMATION_INTERVAL": "30",
    "CURATORNET_CPU_GEMM": "auto",
    "CURATORNET_CPU_KERNELS": "auto",
    "CURATORNET_MALLOC_TUNING": "1",
}


def env(name: str) -> str:
    """The value of a project variable, else its default (KeyError for an unlisted name)."""
    if name not in VARIABLES:
        raise KeyError(f"{name} is not a project variable (settings.VARIABLES)")
    return os.environ.get(name) or VARIABLES[name]


def env_seconds(name: str, default: float) -> float:
    """A number of seconds from a project variable (``CURATORNET_INCOMING_SETTLE_S``...)."""
    text = env(name)
    try:
        return float(text) if text else default
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a number of seconds") from None


def home_dir() -> Path:
    """The project's home folder (created on first use)."""
    path = Path(env("CURATORNET_HOME") or REPO_ROOT / ".curatornet_home").resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir() -> Path:
    """The dataset folder: purchases.csv, inventory.csv, images/ or embeddings.npz."""
    return Path(env("CURATORNET_DATA") or REPO_ROOT / "data").resolve()


def storage_uri() -> str:
    """Root of the asset storage: a local folder by default, any fsspec URI otherwise."""
    return env("CURATORNET_STORAGE") or str(home_dir() / "storage")


def mlflow_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else a SQLite store in the home folder."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home_dir() / 'mlflow.db'}"


#: The query that opens MLflow 3's UI in its model-training view (runs, models), not the
#: GenAI one it picks for an experiment without traces.
MLFLOW_TRAINING_VIEW = "workflowType=machine_learning"


def mlflow_ui_address() -> str:
    """Where every MLflow link points: ``CURATORNET_MLFLOW_UI``, else a tracking server's own
    address, else ``http://127.0.0.1:5000``. The address is stable: ``curatornet ui`` on
    another port answers it with a redirect, so links written earlier keep working."""
    if env("CURATORNET_MLFLOW_UI"):
        return env("CURATORNET_MLFLOW_UI").rstrip("/")
    uri = mlflow_tracking_uri()
    if uri.startswith(("http://", "https://")):
        return uri.rstrip("/")
    return "http://127.0.0.1:5000"


def dagster_ui_address() -> str:
    """Where every Dagster link points: ``CURATORNET_DAGSTER_UI``, else
    ``http://127.0.0.1:3000`` (stable like :func:`mlflow_ui_address`)."""
    return (env("CURATORNET_DAGSTER_UI") or "http://127.0.0.1:3000").rstrip("/")


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

    if env("CURATORNET_PROFILE"):
        return env("CURATORNET_PROFILE")
    path = _run_settings_file()
    return json.loads(path.read_text())["profile"] if path.exists() else "demo"


def run_overrides() -> dict:
    """``CURATORNET_OVERRIDES`` (JSON), else the last run's overrides, else ``{}``."""
    import json

    if env("CURATORNET_OVERRIDES"):
        return json.loads(env("CURATORNET_OVERRIDES"))
    path = _run_settings_file()
    return json.loads(path.read_text())["overrides"] if path.exists() else {}
