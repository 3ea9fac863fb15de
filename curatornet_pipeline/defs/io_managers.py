"""IO managers: parquet for tables, pickle-free npz bundles for stage values, torch for models.

All three derive from ``dagster.UPathIOManager``, so the storage root can be a
local folder or any fsspec URI (``s3://``, ``gs://``, ...).
"""

import io
from pathlib import Path

import dagster as dg
import pandas as pd
from upath import UPath

from curatornet_pipeline.core.bundle import load_bundle, save_bundle


def _write(path: UPath, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.write(data)


class ParquetIOManager(dg.UPathIOManager):
    """pandas DataFrames as parquet files, one per asset partition."""

    extension = ".parquet"

    def dump_to_path(self, context: dg.OutputContext, obj: pd.DataFrame, path: UPath) -> None:
        if not isinstance(obj, pd.DataFrame):
            raise TypeError(f"{context.asset_key.to_user_string()}: expected a DataFrame")
        _write(path, obj.to_parquet(index=False))

    def load_from_path(self, context: dg.InputContext, path: UPath) -> pd.DataFrame:
        with path.open("rb") as f:
            return pd.read_parquet(f)


class BundleIOManager(dg.UPathIOManager):
    """The dataclasses of ``core.types`` (and friends) as pickle-free ``.npz`` bundles."""

    extension = ".npz"

    def dump_to_path(self, context: dg.OutputContext, obj: object, path: UPath) -> None:
        buffer = io.BytesIO()
        save_bundle(obj, buffer)
        _write(path, buffer.getvalue())

    def load_from_path(self, context: dg.InputContext, path: UPath) -> object:
        with path.open("rb") as f:
            return load_bundle(f)


class TorchIOManager(dg.UPathIOManager):
    """Model payloads (state dicts plus plain config) saved with ``torch.save``.

    They are read back with ``torch.load(weights_only=True)``: loading a model
    file never runs pickled code.
    """

    extension = ".pt"

    def dump_to_path(self, context: dg.OutputContext, obj: dict, path: UPath) -> None:
        import torch

        buffer = io.BytesIO()
        torch.save(obj, buffer)
        _write(path, buffer.getvalue())

    def load_from_path(self, context: dg.InputContext, path: UPath) -> dict:
        import torch

        with path.open("rb") as f:
            return torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True)


def io_managers(root: str) -> dict[str, dg.UPathIOManager]:
    """The three IO managers under one storage root."""
    base = UPath(root)
    return {
        "io_manager": ParquetIOManager(base_path=base / "tables"),
        "bundle_io_manager": BundleIOManager(base_path=base / "bundles"),
        "model_io_manager": TorchIOManager(base_path=base / "models"),
    }


class ArtifactStorage(dg.ConfigurableResource):
    """Figures, reports, checkpoints and scratch files, under the IO managers' root.

    Checkpoints live under the root, local or remote, so a retry on another machine
    resumes; scratch files need a local path (torch writes them), under ``local_root``
    when the root is remote (docs/architecture.md, "IO managers and storage").
    """

    root: str  # the storage root URI (a folder, s3://..., gs://...)
    local_root: str = ""  # local folder for scratch files when ``root`` is remote

    def path(self, *parts: str) -> UPath:
        return UPath(self.root).joinpath(*parts)

    def write_bytes(self, relative: str, data: bytes) -> str:
        path = self.path(relative)
        _write(path, data)
        return str(path)

    def write_text(self, relative: str, text: str) -> str:
        return self.write_bytes(relative, text.encode())

    def _local(self) -> Path:
        base = UPath(self.root)
        if getattr(base, "protocol", "") in ("", "file", "local"):
            return Path(str(base.path if hasattr(base, "path") else base))
        return Path(self.local_root or "/tmp/curatornet-local")

    def _partition_dir(self, context: dg.AssetExecutionContext) -> UPath:
        partition = context.partition_key if context.has_partition_key else "__all__"
        return self.path("checkpoints", *context.asset_key.path, partition)

    def checkpoint_dir(self, context: dg.AssetExecutionContext, key: str) -> UPath:
        """Where the training of this asset partition with inputs/settings ``key``
        checkpoints: under the storage root, which every worker reads."""
        path = self._partition_dir(context) / key
        path.mkdir(parents=True, exist_ok=True)
        return path

    def clean_checkpoints(self, context: dg.AssetExecutionContext) -> None:
        """Remove every checkpoint of this asset partition (the model has landed)."""
        path = self._partition_dir(context)
        if path.exists():
            path.fs.rm(path.path, recursive=True)

    def scratch_file(self, context: dg.AssetExecutionContext, name: str) -> Path:
        path = self._local() / "scratch" / context.run.run_id / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path
