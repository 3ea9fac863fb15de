"""Image embeddings: shapes, incremental store, unreadable images, weights, shards."""

import hashlib
import logging
import urllib.error
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from PIL import Image

from curatornet_pipeline.core.visual import backbone, embed
from curatornet_pipeline.core.visual.backbone import build_backbone
from curatornet_pipeline.core.visual.embed import EmbedConfig, embed_manifest
from curatornet_pipeline.core.visual.store import EmbeddingStore

FAMILIES = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]


def _config(**kwargs) -> EmbedConfig:
    values = {
        "backbone": "resnet18",
        "weights": "none",
        "image_size": 64,
        "num_workers": 0,
        "batch_size": 4,
    }
    return EmbedConfig(**{**values, **kwargs})


def _write_image(path: Path, family: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    base = np.array(FAMILIES[family], dtype=np.int16)
    pixels = base + rng.integers(-25, 26, size=(48, 48, 3))
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path)


def _row(path: Path, artwork_id: str) -> dict:
    data = path.read_bytes()
    return {
        "artwork_id_hash": artwork_id,
        "path": str(path),
        "content_hash": hashlib.sha256(data).hexdigest(),
        "size_bytes": len(data),
    }


def _manifest(folder: Path, n: int, start: int = 0) -> pd.DataFrame:
    rows = []
    for k in range(start, start + n):
        path = folder / f"img{k:03d}.{'png' if k % 2 else 'jpg'}"
        _write_image(path, k % 3, seed=k)
        rows.append(_row(path, f"id{k:03d}"))
    return pd.DataFrame(rows)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Batch sizes of every forward pass of the backbones built by embed_manifest."""
    sizes: list[int] = []
    original = embed.build_backbone

    def counting(config: EmbedConfig):
        model, description = original(config)
        model.register_forward_hook(lambda _m, inputs, _o: sizes.append(inputs[0].shape[0]))
        return model, description

    monkeypatch.setattr(embed, "build_backbone", counting)
    return sizes


def test_shapes_and_manifest_order(tmp_path: Path, counted: list[int]) -> None:
    manifest = _manifest(tmp_path, 12).iloc[::-1].reset_index(drop=True)
    result = embed_manifest(manifest, _config())
    assert result.vectors.vectors.shape == (12, 512)
    assert result.vectors.vectors.dtype == np.float32
    assert list(result.vectors.ids) == list(manifest["artwork_id_hash"])
    assert np.isfinite(result.vectors.vectors).all()
    assert (result.n_embedded, result.n_reused, result.dropped) == (12, 0, [])
    assert sum(counted) == 12
    assert result.images_per_second > 0
    # different colour families give different vectors
    v = result.vectors.vectors
    assert not np.allclose(v[0], v[1])


def test_incremental_embeds_only_new_images(tmp_path: Path, counted: list[int]) -> None:
    store = EmbeddingStore(tmp_path / "store")
    old = _manifest(tmp_path, 12)
    first = embed_manifest(old, _config(), store=store)
    assert (first.n_embedded, first.n_reused) == (12, 0)
    counted.clear()

    both = pd.concat([old.iloc[:6], _manifest(tmp_path, 3, start=12), old.iloc[6:]])
    second = embed_manifest(both, _config(), store=store)
    assert (second.n_embedded, second.n_reused) == (3, 12)
    assert sum(counted) == 3
    assert list(second.vectors.ids) == list(both["artwork_id_hash"])
    by_id = dict(zip(second.vectors.ids, second.vectors.vectors, strict=True))
    for artwork_id, vector in zip(first.vectors.ids, first.vectors.vectors, strict=True):
        assert np.array_equal(by_id[artwork_id], vector)
    # the stored vectors equal a fresh full run (random weights are seeded)
    fresh = embed_manifest(both, _config())
    np.testing.assert_allclose(second.vectors.vectors, fresh.vectors.vectors, rtol=1e-4, atol=1e-5)

    counted.clear()
    third = embed_manifest(both, _config(), store=EmbeddingStore(tmp_path / "store"))
    assert (third.n_embedded, third.n_reused, sum(counted)) == (0, 15, 0)


def test_changed_image_is_embedded_again(tmp_path: Path, counted: list[int]) -> None:
    store = EmbeddingStore(tmp_path / "store")
    manifest = _manifest(tmp_path, 6)
    first = embed_manifest(manifest, _config(), store=store)
    changed_path = Path(manifest.loc[2, "path"])
    _write_image(changed_path, family=(2 + 1) % 3, seed=99)
    manifest.loc[2] = _row(changed_path, manifest.loc[2, "artwork_id_hash"])
    counted.clear()
    second = embed_manifest(manifest, _config(), store=store)
    assert (second.n_embedded, second.n_reused, sum(counted)) == (1, 5, 1)
    assert not np.allclose(second.vectors.vectors[2], first.vectors.vectors[2])
    np.testing.assert_array_equal(second.vectors.vectors[3], first.vectors.vectors[3])


def _with_corrupt(tmp_path: Path) -> tuple[pd.DataFrame, Path]:
    manifest = _manifest(tmp_path, 6)
    bad = tmp_path / "ab12.jpg"
    bad.write_bytes(np.random.default_rng(0).bytes(500))
    manifest = pd.concat([manifest.iloc[:3], pd.DataFrame([_row(bad, "ab12")]), manifest.iloc[3:]])
    return manifest.reset_index(drop=True), bad


def test_corrupt_image_raises_naming_path_and_id(tmp_path: Path) -> None:
    manifest, bad = _with_corrupt(tmp_path)
    with pytest.raises(ValueError, match=r"ab12\.jpg \(artwork_id_hash 'ab12'\): cannot decode"):
        embed_manifest(manifest, _config())


def test_drop_mode_with_workers_matches_single_process(tmp_path: Path) -> None:
    manifest, _ = _with_corrupt(tmp_path)
    result = embed_manifest(manifest, _config(on_unreadable="drop", num_workers=2))
    assert len(result.dropped) == 1 and result.dropped[0][0] == "ab12"
    assert "cannot decode" in result.dropped[0][1]
    assert result.n_embedded == 6
    assert "ab12" not in set(result.vectors.ids)
    assert list(result.vectors.ids) == [i for i in manifest["artwork_id_hash"] if i != "ab12"]
    single = embed_manifest(manifest.drop(index=3), _config())
    np.testing.assert_allclose(result.vectors.vectors, single.vectors.vectors, rtol=1e-4, atol=1e-5)


def test_random_weights_are_announced(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="curatornet_pipeline.core.visual.backbone"):
        model, description = build_backbone(_config())
        build_backbone(_config())
    assert "none" in description and "RANDOM" in description
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "RANDOM" in r.message]
    assert len(warnings) == 2  # every time
    assert isinstance(model.fc, torch.nn.Identity)


def test_weights_file_is_loaded_safely(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None).eval()
    state = reference.state_dict()
    full, headless = tmp_path / "full.pth", tmp_path / "headless.pth"
    torch.save(state, full)
    torch.save({k: v for k, v in state.items() if not k.startswith("fc.")}, headless)
    calls: list[dict] = []
    original_load = torch.load

    def recording_load(*args, **kwargs):
        calls.append(kwargs)
        return original_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    reference.fc = torch.nn.Identity()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        expected = reference(x)
        for path in (full, headless):
            model, description = build_backbone(_config(weights=str(path)))
            assert description.startswith(f"file:{path} sha256:")
            torch.testing.assert_close(model(x), expected)
    assert len(calls) == 2 and all(c.get("weights_only") is True for c in calls)
    assert all(c.get("map_location") == "cpu" for c in calls)

    broken = tmp_path / "broken.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("layer4.")}, broken)
    with pytest.raises(ValueError, match="missing"):
        build_backbone(_config(weights=str(broken)))


def test_imagenet_without_network_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models, "get_model", offline)
    with pytest.raises(RuntimeError, match="weights='none'"):
        build_backbone(_config(weights="imagenet"))


def test_shards_cover_every_item_once(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, 12)
    parts = [embed_manifest(manifest, _config(), shard=(i, 3)) for i in range(3)]
    ids = [i for part in parts for i in part.vectors.ids]
    assert sorted(ids) == sorted(manifest["artwork_id_hash"])
    assert sum(p.n_embedded for p in parts) == 12
    assert sum(1 for p in parts if len(p.vectors.ids)) >= 2  # the split is not degenerate
    with pytest.raises(ValueError, match="shard"):
        embed_manifest(manifest, _config(), shard=(3, 3))


def test_store_shards_are_shared_between_writers(tmp_path: Path) -> None:
    a, b = EmbeddingStore(tmp_path), EmbeddingStore(tmp_path)
    keys = [(f"id{i}", f"{i:064x}", "resnet18", "none:seed0") for i in range(4)]
    vectors = np.arange(8, dtype=np.float32).reshape(4, 2)
    assert a.lookup(keys)[0].sum() == 0  # index loaded before b writes
    a.add(keys[:2], vectors[:2])
    b.add(keys[2:], vectors[2:])
    found, got = a.lookup(keys + [("other", "0" * 64, "resnet18", "none:seed0")])
    assert found.tolist() == [True, True, True, True, False]
    np.testing.assert_array_equal(got[:4], vectors)
    assert len(list(tmp_path.glob("shard-*.npz"))) == 2
    assert not list(tmp_path.glob(".*tmp"))
    with pytest.raises(ValueError):
        a.add(keys[:2], vectors[:1])


def test_transform_is_the_weights_own() -> None:
    # torchvision's weights enum states its transform; reading it downloads nothing
    v2 = torchvision.models.ResNet50_Weights.IMAGENET1K_V2.transforms()
    p = backbone.preprocess_for(EmbedConfig(backbone="resnet50", weights="imagenet"))
    assert (p.resize_size, p.crop_size) == (232, 224) == (v2.resize_size[0], v2.crop_size[0])
    assert list(p.mean) == list(v2.mean) and list(p.std) == list(v2.std)
    assert p.interpolation == v2.interpolation.value and "IMAGENET1K_V2" in p.source
    # random weights: the documented default, the backbone's default weights' transform
    r18 = torchvision.models.ResNet18_Weights.DEFAULT.transforms()
    q = backbone.preprocess_for(EmbedConfig(backbone="resnet18", weights="none"))
    assert (q.resize_size, q.crop_size) == (r18.resize_size[0], r18.crop_size[0]) == (256, 224)
    assert q.source.startswith("default")
    # an explicit image_size overrides, and says so
    o = backbone.preprocess_for(_config(image_size=64))
    assert (o.resize_size, o.crop_size) == (64, 64) and "override" in o.source
    assert o.key != q.key and p.key != q.key


def test_weights_file_transform_comes_from_its_sidecar(tmp_path: Path) -> None:
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"")
    no_sidecar = backbone.preprocess_for(EmbedConfig(backbone="resnet18", weights=str(weights)))
    assert no_sidecar.source.startswith("default") and no_sidecar.resize_size == 256
    sidecar = tmp_path / "w.pth.transform.json"
    sidecar.write_text(
        '{"resize_size": 300, "crop_size": 288, "mean": [0.5, 0.5, 0.5],'
        ' "std": [0.25, 0.25, 0.25], "interpolation": "bicubic"}'
    )
    p = backbone.preprocess_for(EmbedConfig(backbone="resnet18", weights=str(weights)))
    assert (p.resize_size, p.crop_size, p.mean, p.interpolation) == (
        300,
        288,
        (0.5, 0.5, 0.5),
        "bicubic",
    )
    assert p.source == "sidecar w.pth.transform.json"
    sidecar.write_text('{"resize_size": 300, "crop_size": 288, "mean": [0.5]}')
    with pytest.raises(ValueError, match=r"w.pth.transform.json.*lacks fields \['std'\]"):
        backbone.preprocess_for(EmbedConfig(backbone="resnet18", weights=str(weights)))


def test_transform_is_recorded_and_applied(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, 2)
    result = embed_manifest(manifest, _config(image_size=None, backbone="resnet18"))
    meta = result.vectors.meta
    assert meta["transform"]["resize_size"] == 256 and meta["transform"]["crop_size"] == 224
    assert meta["transform"]["mean"] == list(backbone.IMAGENET_MEAN)
    # a different crop gives different vectors for the same image
    other = embed_manifest(manifest, _config(image_size=64)).vectors
    assert other.meta["transform"]["crop_size"] == 64
    assert not np.allclose(other.vectors, result.vectors.vectors)


def test_imported_vectors_say_which_file_they_are() -> None:
    meta = embed.imported_meta({"source": "imported", "file": "e.npy", "file_sha256": "ab12"})
    assert meta["weights"] == "imported:e.npy sha256:ab12"
    assert "none" not in meta["weights"] and "RANDOM" not in str(meta)
