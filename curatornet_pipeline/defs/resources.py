"""Resources: where the dataset is, and the typed settings of every stage.

``PipelineSettings`` fields are ``dg.Config`` classes generated from the core's config
dataclasses, so a new core field shows in the launchpad with no code here; a profile
fills their defaults (docs/architecture.md, "Typed settings").
"""

import dataclasses
import types
import typing
from typing import Any

import dagster as dg
import pydantic

from curatornet_pipeline import settings
from curatornet_pipeline.core.evaluation.evaluate import EvalConfig
from curatornet_pipeline.core.experiment.grid import ModelGrid
from curatornet_pipeline.core.sampling.context import SamplingConfig
from curatornet_pipeline.core.split.validation import ValidationConfig
from curatornet_pipeline.core.training.train import TrainConfig
from curatornet_pipeline.core.visual.cluster import ClusterConfig, PCAConfig
from curatornet_pipeline.core.visual.embed import EmbedConfig
from curatornet_pipeline.profiles import PROFILES

#: Stage name -> the core dataclass its settings build.
STAGES: dict[str, type] = {
    "embed": EmbedConfig,
    "pca": PCAConfig,
    "cluster": ClusterConfig,
    "sampling": SamplingConfig,
    "validation": ValidationConfig,
    "train": TrainConfig,
    "models": ModelGrid,
    "evaluation": EvalConfig,
}


def _config_type(annotation: Any) -> Any:
    """A dataclass field type as a Dagster config type (tuples become lists)."""
    origin = typing.get_origin(annotation)
    if origin is tuple:
        return list[typing.get_args(annotation)[0]]
    if origin in (typing.Union, types.UnionType):
        return typing.Optional[next(a for a in typing.get_args(annotation) if a is not type(None))]  # noqa: UP045
    return annotation


def config_class(stage: str, cls: type, defaults: dict[str, Any] | None = None) -> type[dg.Config]:
    """A ``dg.Config`` with the fields of the core dataclass ``cls`` (names, types, defaults).

    ``defaults`` replaces the dataclass's defaults (a profile's values), so the
    launchpad shows what a run will use unless it is edited.
    """
    hints = typing.get_type_hints(cls)
    fields = {}
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        default = (defaults or {}).get(f.name, default)
        if isinstance(default, tuple):
            default = list(default)
        fields[f.name] = (_config_type(hints[f.name]), default)
    name = "".join(part.title() for part in stage.split("_")) + "Settings"
    model = pydantic.create_model(name, __base__=dg.Config, **fields)
    model.__doc__ = f"Settings of the {stage} stage (core: {cls.__module__}.{cls.__name__})."
    return model


SETTINGS_CLASSES: dict[str, type[dg.Config]] = {s: config_class(s, c) for s, c in STAGES.items()}
_S = SETTINGS_CLASSES  # the field types of PipelineSettings


class PipelineSettings(dg.ConfigurableResource):
    """Typed settings of every stage; a profile fills them, a run may override any field."""

    profile: str = "demo"  # the preset these values started from (recorded with each run)
    embed: _S["embed"] = _S["embed"]()  # type: ignore[valid-type]
    pca: _S["pca"] = _S["pca"]()  # type: ignore[valid-type]
    cluster: _S["cluster"] = _S["cluster"]()  # type: ignore[valid-type]
    sampling: _S["sampling"] = _S["sampling"]()  # type: ignore[valid-type]
    validation: _S["validation"] = _S["validation"]()  # type: ignore[valid-type]
    train: _S["train"] = _S["train"]()  # type: ignore[valid-type]
    models: _S["models"] = _S["models"]()  # type: ignore[valid-type]
    evaluation: _S["evaluation"] = _S["evaluation"]()  # type: ignore[valid-type]

    def stage(self, name: str) -> dict[str, Any]:
        """The settings of one stage as a plain dict."""
        if name not in STAGES:
            raise ValueError(f"unknown stage {name!r}; known: {sorted(STAGES)}")
        return dict(getattr(self, name).model_dump())

    def build(self, name: str) -> Any:
        """The core config dataclass of a stage."""
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in self.stage(name).items()}
        return STAGES[name](**values)

    def grid(self) -> ModelGrid:
        return self.build("models")


def profile_values(profile: str, overrides: dict[str, dict[str, Any]] | None = None) -> dict:
    """The stage settings of a profile with per-stage overrides, validated against the core."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    out: dict[str, dict[str, Any]] = {}
    for stage, cls in STAGES.items():
        values = {**PROFILES[profile].get(stage, {}), **(overrides or {}).get(stage, {})}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown {stage} settings {sorted(unknown)}; known: {sorted(known)}")
        out[stage] = values
    extra = set(overrides or {}) - set(STAGES)
    if extra:
        raise ValueError(f"unknown stages {sorted(extra)} in overrides; known: {sorted(STAGES)}")
    return out


def pipeline_settings(profile: str, overrides: dict | None = None) -> PipelineSettings:
    """The settings resource of a profile (a preset) with overrides.

    Its config schema carries the profile's values as defaults, so the launchpad
    shows (and a run without config uses) exactly them.
    """
    values = profile_values(profile, overrides)
    classes = {s: config_class(s, STAGES[s], values[s]) for s in STAGES}
    resource = pydantic.create_model(
        "PipelineSettings",
        __base__=PipelineSettings,
        profile=(str, profile),
        **{s: (classes[s], classes[s]()) for s in STAGES},
    )
    resource.__doc__ = f"{PipelineSettings.__doc__} Preset: {profile}."
    return resource()


def run_config(profile: str, overrides: dict | None = None) -> dict:
    """Run config that sets every stage's settings explicitly (what the CLI launches with)."""
    values = profile_values(profile, overrides)
    config = {"profile": profile}
    for stage in STAGES:
        config[stage] = SETTINGS_CLASSES[stage](**values[stage]).model_dump()
    return {"resources": {"pipeline": {"config": config}}}


class DatasetResource(dg.ConfigurableResource):
    """The dataset folder in the published format, and what to do with bad rows."""

    root: str = ""  # empty: CURATORNET_DATA, else <repo>/data
    on_unknown_items: str = "error"  # or "drop": purchases of ids absent from inventory
    on_missing_images: str = "error"  # or "drop": inventory items without an image file
    on_unreadable_images: str = "error"  # or "drop": image files that cannot be decoded
    on_missing_vectors: str = "error"  # or "drop": items without an imported embedding

    def paths(self):
        from pathlib import Path

        from curatornet_pipeline.core.data.formats import DatasetPaths

        return DatasetPaths(Path(self.root) if self.root else settings.data_dir())

    def read_options(self):
        from curatornet_pipeline.core.data.formats import ReadOptions

        return ReadOptions(
            on_unknown_items=self.on_unknown_items, on_missing_images=self.on_missing_images
        )
