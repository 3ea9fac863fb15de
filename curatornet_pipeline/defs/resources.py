"""Resources: where the dataset is, and which profile of stage settings a run uses."""

import json
from typing import Any

import dagster as dg

from curatornet_pipeline import settings

#: Stage settings per profile. Keys are the fields of each stage's core config
#: dataclass; anything absent takes that dataclass's (paper) default.
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    # tests and CI: seconds per stage on 2 cores
    "tiny": {
        "embed": {
            "backbone": "resnet18",
            "weights": "none",
            "image_size": 64,
            "batch_size": 32,
            "num_workers": 0,
        },
        "pca": {"n_components": 32},
        "cluster": {"k": 6, "restarts": 3},
        "sampling": {"n_per_strategy": 1500},
        "train": {"epochs": 3, "lr": 1e-3, "patience": 2, "batch_triples": 4096},
        "models": {"curatornet_l2": [0.0, 1e-4], "vbpr_l2": [1e-4], "ablation_l2": 1e-4},
        "evaluation": {},
    },
    # the main job: the whole graph in about 15 minutes on 2 CPU cores
    "demo": {
        "embed": {"backbone": "resnet50"},
        "pca": {"n_components": 200},
        "cluster": {"k": 30, "restarts": 10},
        "sampling": {"n_per_strategy": 60_000},
        "train": {"epochs": 5, "lr": 1e-3, "batch_triples": 4096},
        "models": {
            "curatornet_l2": [0.0, 1e-4, 1e-3, 1e-2],
            "vbpr_l2": [0.0, 1e-4, 1e-3, 1e-2],
            "ablation_l2": 1e-4,
        },
        "evaluation": {},
    },
    # the paper's settings (Table 2): ~10M triples, 10 epochs, k=100 x 20 restarts
    "paper": {
        "embed": {"backbone": "resnet50"},
        "pca": {"n_components": 200},
        "cluster": {"k": 100, "restarts": 20},
        "sampling": {},
        "train": {},
        "models": {
            "curatornet_l2": [0.0, 1e-4, 1e-3, 1e-2],
            "vbpr_l2": [0.0, 1e-4, 1e-3, 1e-2],
            "ablation_l2": 1e-4,
        },
        "evaluation": {},
    },
}


class PipelineSettings(dg.ConfigurableResource):
    """Which settings profile a run uses, with per-stage overrides.

    ``overrides`` is JSON: ``{"train": {"epochs": 2}, "embed": {"weights": "none"}}``.
    """

    profile: str = "demo"  # tiny | demo | paper
    overrides: str = "{}"

    def stage(self, name: str) -> dict[str, Any]:
        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}; choose one of {sorted(PROFILES)}")
        values = dict(PROFILES[self.profile].get(name, {}))
        try:
            extra = json.loads(self.overrides or "{}")
        except json.JSONDecodeError as exc:
            raise ValueError(f"PipelineSettings.overrides is not valid JSON: {exc}") from exc
        values.update(extra.get(name, {}))
        return values

    def build(self, name: str, config_cls: type) -> Any:
        """The core config dataclass of a stage, from the profile and overrides."""
        values = self.stage(name)
        fields = set(config_cls.__dataclass_fields__)
        unknown = set(values) - fields
        if unknown:
            raise ValueError(f"unknown {name} settings {sorted(unknown)}; known: {sorted(fields)}")
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return config_cls(**kwargs)


class DatasetResource(dg.ConfigurableResource):
    """The dataset folder in the published format, and what to do with bad rows."""

    root: str = ""  # empty: CURATORNET_DATA, else <repo>/data
    on_unknown_items: str = "error"  # or "drop": purchases of ids absent from inventory
    on_missing_images: str = "error"  # or "drop": inventory items without an image file
    on_unreadable_images: str = "error"  # or "drop": image files that cannot be decoded
    on_missing_vectors: str = "error"  # or "drop": items without an imported embedding

    def paths(self):
        from pathlib import Path

        from curatornet_pipeline.core.data import DatasetPaths

        return DatasetPaths(Path(self.root) if self.root else settings.data_dir())

    def read_options(self):
        from curatornet_pipeline.core.data import ReadOptions

        return ReadOptions(
            on_unknown_items=self.on_unknown_items, on_missing_images=self.on_missing_images
        )
