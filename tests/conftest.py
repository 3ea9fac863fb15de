"""Shared fixtures: one temporary home folder (Dagster, storage, MLflow) per test session."""

import os
from pathlib import Path

import pytest

# Before any project import: the model partitions of the tiny profile are defined
# when the definitions module is imported.
os.environ["CURATORNET_PROFILE"] = "tiny"
os.environ["CURATORNET_AUTOMATION"] = "off"

# Every path of the project lives under this home.
_SESSION_HOME = (
    Path(os.environ.get("PYTEST_CURATORNET_HOME", ""))
    if os.environ.get("PYTEST_CURATORNET_HOME")
    else None
)


@pytest.fixture(scope="session", autouse=True)
def curatornet_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh home folder; the MLflow store is a real SQLite database in it."""
    home = _SESSION_HOME or tmp_path_factory.mktemp("curatornet_home")
    os.environ["CURATORNET_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("CURATORNET_STORAGE", None)
    os.environ.pop("CURATORNET_OVERRIDES", None)
    return home


@pytest.fixture(scope="session")
def mlflow_store(curatornet_home: Path) -> str:
    """The session's tracking URI, migrated once (a fresh SQLite store takes seconds)."""
    from curatornet_pipeline import settings
    from curatornet_pipeline.defs.tracking import MlflowTracking

    MlflowTracking().client  # noqa: B018 - connects, creates and migrates the store
    return settings.mlflow_tracking_uri()


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny synthetic dataset, generated once per session."""
    from curatornet_pipeline.core.data.synth import SynthConfig, generate

    out = tmp_path_factory.mktemp("tiny_data")
    generate(SynthConfig(scale="tiny", seed=0), out)
    return out


@pytest.fixture(scope="session")
def test_output_dir() -> Path:
    """Where tests leave files for people to look at (screenshots, reports)."""
    out = Path(__file__).resolve().parent.parent / "test-output"
    out.mkdir(exist_ok=True)
    return out


@pytest.fixture
def one_torch_thread():
    """Tiny tensors: OpenMP threads only spin against the other processes of a shared box."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
