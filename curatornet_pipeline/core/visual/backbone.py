"""The embedding backbone: a torchvision classifier without its head, its weights, and the
preprocessing those weights state (:func:`preprocess_for`). The transform used is recorded
in ``ItemVectors.meta["transform"]`` and is part of the store key.
"""

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from curatornet_pipeline.core.hashing import file_sha256

# torchvision is imported where it is used: its import brings torch._dynamo (1.4 s cold
# on 2 cores), which `curatornet recommend` and serving never need without new images.

if TYPE_CHECKING:
    from curatornet_pipeline.core.visual.embed import EmbedConfig

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RANDOM_WEIGHTS = "none (RANDOM WEIGHTS — not for production)"
_RANDOM_INIT_SEED = 0  # random weights are seeded so stored vectors stay consistent

TRANSFORM_SIDECAR = ".transform.json"  # beside a weights file: <file>.transform.json


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the backbone's input tensor; recorded with every vector."""

    resize_size: int  # shorter side resized to this (antialiased)
    crop_size: int  # then a centre crop of crop_size x crop_size
    mean: tuple[float, float, float]  # per-channel normalisation after scaling to [0, 1]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"  # torchvision InterpolationMode value
    source: str = ""  # where the transform comes from (weights enum, sidecar, default, override)

    def as_dict(self) -> dict:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @property
    def key(self) -> str:
        """Short id for store keys: the numbers that change the vectors (not ``source``)."""
        text = json.dumps(
            {k: v for k, v in self.as_dict().items() if k != "source"}, sort_keys=True
        )
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        return f"r{self.resize_size}c{self.crop_size}-{digest}"


def _from_torchvision(weights_enum, source: str) -> Preprocess:
    """The transform a torchvision weights enum states (``weights.transforms()``; no download)."""
    t = weights_enum.transforms()
    return Preprocess(
        resize_size=int(t.resize_size[0]),
        crop_size=int(t.crop_size[0]),
        mean=tuple(float(v) for v in t.mean),
        std=tuple(float(v) for v in t.std),
        interpolation=str(t.interpolation.value),
        source=source,
    )


def _from_sidecar(path: Path) -> Preprocess:
    """A transform stated in JSON: resize_size, crop_size, mean, std[, interpolation]."""
    try:
        spec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable JSON transform: {exc}") from None
    missing = [k for k in ("resize_size", "crop_size", "mean", "std") if k not in spec]
    if missing:
        raise ValueError(f"{path}: transform lacks fields {missing}")
    for key in ("mean", "std"):
        if not (isinstance(spec[key], list) and len(spec[key]) == 3):
            raise ValueError(f"{path}: field {key!r} must be a list of 3 numbers")
    interpolation = str(spec.get("interpolation", "bilinear"))
    from torchvision.transforms.v2 import InterpolationMode

    valid = {m.value for m in InterpolationMode}
    if interpolation not in valid:
        raise ValueError(f"{path}: field 'interpolation' must be one of {sorted(valid)}")
    return Preprocess(
        resize_size=int(spec["resize_size"]),
        crop_size=int(spec["crop_size"]),
        mean=tuple(float(v) for v in spec["mean"]),
        std=tuple(float(v) for v in spec["std"]),
        interpolation=interpolation,
        source=f"sidecar {path.name}",
    )


def preprocess_for(config: "EmbedConfig") -> Preprocess:
    """The preprocessing of ``config``'s weights.

    - ``image_size`` set: resize and crop to it, ImageNet mean/std (an override).
    - ``"imagenet"``: the torchvision weights' own ``transforms()``.
    - a weights file: ``<file>.transform.json`` when present, else the default below.
    - ``"none"`` (random weights), or a file without sidecar: the transform of the
      backbone's default torchvision weights (documented default), which is what
      the architecture was trained with.
    """
    if config.image_size is not None:
        size = int(config.image_size)
        return Preprocess(size, size, IMAGENET_MEAN, IMAGENET_STD, "bilinear",
                          f"EmbedConfig.image_size={size} (override)")  # fmt: skip
    import torchvision

    enum = torchvision.models.get_model_weights(config.backbone).DEFAULT
    if config.weights == "imagenet":
        return _from_torchvision(enum, f"torchvision {config.backbone} {enum.name}.transforms()")
    if config.weights not in ("none", "imagenet"):
        sidecar = Path(str(config.weights) + TRANSFORM_SIDECAR)
        if sidecar.is_file():
            return _from_sidecar(sidecar)
    return _from_torchvision(
        enum, f"default: torchvision {config.backbone} {enum.name}.transforms() "
        f"(weights {config.weights!r} state none)"
    )  # fmt: skip


def _final_linear(model: torch.nn.Module) -> str:
    """Dotted name of the last ``Linear`` registered in ``model`` (the classifier head)."""
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no Linear classifier head to remove")
    return names[-1]


def weights_id(config: "EmbedConfig") -> str:
    """A stable id of the weights, part of every store key."""
    if config.weights == "none":
        return f"none:seed{_RANDOM_INIT_SEED}"
    if config.weights == "imagenet":
        import torchvision

        return f"imagenet:{torchvision.models.get_model_weights(config.backbone).DEFAULT.name}"
    return f"sha256:{file_sha256(Path(config.weights))}"


def _load_state_dict(model: torch.nn.Module, path: Path, head: str) -> None:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state_dict (a dict of tensors)")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys:
        raise ValueError(
            f"{path}: {len(result.missing_keys)} backbone weights missing, "
            f"e.g. {result.missing_keys[:5]}; is it a state_dict of this backbone?"
        )
    foreign = [k for k in result.unexpected_keys if not k.startswith(head + ".")]
    if foreign:
        raise ValueError(f"{path}: keys not in this backbone, e.g. {foreign[:5]}")


def build_backbone(config: "EmbedConfig") -> tuple[torch.nn.Module, str]:
    """The classifier of ``config.backbone`` without its head, and a description of its weights.

    The final ``Linear`` is replaced by ``Identity``, so the model outputs the
    penultimate features (2048-d for resnet50, 512-d for resnet18).
    """
    import torchvision

    name = config.backbone
    if name not in torchvision.models.list_models(module=torchvision.models):
        raise ValueError(f"unknown torchvision classification model {name!r}")
    if config.weights == "imagenet":
        enum = torchvision.models.get_model_weights(name).DEFAULT
        try:
            model = torchvision.models.get_model(name, weights=enum)
        except (OSError, RuntimeError) as exc:  # URLError is an OSError
            raise RuntimeError(
                f"cannot download the ImageNet weights of {name} ({enum.url}): {exc}. Without "
                "network, put the file in the torch cache, pass weights='/path/to/state_dict.pth',"
                " or weights='none' for testing only (random weights)."
            ) from exc
        description = f"imagenet:{enum.name}"
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_RANDOM_INIT_SEED)
            model = torchvision.models.get_model(name, weights=None)
        description = RANDOM_WEIGHTS
    head = _final_linear(model)
    parent, _, child = head.rpartition(".")
    setattr(model.get_submodule(parent), child, torch.nn.Identity())
    if config.weights == "none":
        logger.warning(
            "embedding backbone %s has RANDOM WEIGHTS: vectors are meaningless for "
            "recommendation; use weights='imagenet' or a weights file in production",
            name,
        )
    elif config.weights != "imagenet":
        path = Path(config.weights)
        if not path.is_file():
            raise FileNotFoundError(f"weights file {path} not found (EmbedConfig.weights)")
        _load_state_dict(model, path, head)
        description = f"file:{path} sha256:{file_sha256(path)}"
    return model.eval(), description
