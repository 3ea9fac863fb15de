"""Throughput of image embedding against the machine's fp32 matmul peak.

1. fp32 matmul peak: ``torch.mm`` of 2048x2048 matrices, torch's default threads.
2. Pure forward of the backbone at ``--batch-size``, channels_last, random weights
   (no network) on random tensors.
3. End to end: ``embed_manifest`` on ``--n`` freshly written ``--image-px`` JPEGs
   (decode, resize, forward, write to a fresh store).
4. Nightly re-run: 1% new images with the store of run 3, against the full run.

    .venv/bin/python benchmarks/bench_embed.py [--n 64] [--batch-size 8] \\
        [--backbone resnet50] [--image-px 512] [--repeats 3] [--num-workers 2]

Figures are medians of ``--repeats``. Target: end to end >= 0.6 of the matmul
peak (pure forward is ~0.7 on a 2-core machine). GFLOP/s use 8.18 GFLOP per
224x224 ResNet-50 image (2 x multiply-adds), scaled by (image_size / 224)^2.
"""

import argparse
import hashlib
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from curatornet_pipeline.core.visual.backbone import build_backbone
from curatornet_pipeline.core.visual.embed import EmbedConfig, embed_manifest
from curatornet_pipeline.core.visual.store import EmbeddingStore
from curatornet_pipeline.kernels.machine import runtime

GFLOP_PER_IMAGE = {"resnet50": 8.18, "resnet18": 3.64}  # at 224x224


def matmul_peak(n: int = 2048, inner: int = 10) -> float:
    """GFLOP/s of ``inner`` back-to-back n x n float32 ``torch.mm`` (MKL)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    start = time.perf_counter()
    for _ in range(inner):
        torch.mm(a, b)
    return 2 * n**3 * inner / (time.perf_counter() - start) / 1e9


def onednn_gemm_peak(inner: int = 5) -> float:
    """GFLOP/s of a 1x1 convolution (a GEMM run by oneDNN, like the backbone's convs)."""
    conv = torch.nn.Conv2d(1024, 1024, 1, bias=False).to(memory_format=torch.channels_last)
    x = torch.randn(8, 1024, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        conv(x)
        start = time.perf_counter()
        for _ in range(inner):
            conv(x)
    return 2 * 8 * 32 * 32 * 1024 * 1024 * inner / (time.perf_counter() - start) / 1e9


def forward_rate(model: torch.nn.Module, config: EmbedConfig, batches: int) -> float:
    """Images/s of the backbone alone on random input."""
    x = torch.randn(config.batch_size, 3, config.image_size, config.image_size)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        model(x)  # warm-up (oneDNN primitive creation)
        start = time.perf_counter()
        for _ in range(batches):
            model(x)
    return batches * config.batch_size / (time.perf_counter() - start)


def write_images(folder: Path, n: int, px: int, start: int = 0) -> pd.DataFrame:
    """``n`` JPEGs of smooth colour fields with noise (photo-like sizes)."""
    rows = []
    yy, xx = np.mgrid[0:px, 0:px] / px
    for k in range(start, start + n):
        rng = np.random.default_rng(k)
        base = np.stack([np.sin(6 * f * (xx + p) + yy) for f, p in rng.random((3, 2))], axis=-1)
        pixels = 127 + 90 * base + rng.normal(0, 12, (px, px, 3))
        path = folder / f"art{k:05d}.jpg"
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=90)
        data = path.read_bytes()
        rows.append(
            {
                "artwork_id_hash": f"{k:08x}",
                "path": str(path),
                "content_hash": hashlib.sha256(data).hexdigest(),
                "size_bytes": len(data),
            }
        )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--image-px", type=int, default=512)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-workers", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the random-weights warning is expected here
    print(runtime())

    config = EmbedConfig(
        backbone=args.backbone,
        weights="none",
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        image_size=args.image_size,
    )
    gflop = GFLOP_PER_IMAGE.get(args.backbone, float("nan")) * (args.image_size / 224) ** 2
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.backbone} "
        f"batch {args.batch_size}, {args.num_workers} workers; medians of {args.repeats}"
    )

    model, _ = build_backbone(config)
    model = model.to(memory_format=torch.channels_last)
    n_new = max(1, round(args.n * 0.01))
    runs: dict[str, list[float]] = {k: [] for k in ("mm", "dnn", "fwd", "loop", "full", "night")}
    print(f"load average before: {os.getloadavg()[0]:.2f} (2 cores shared with other users)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        manifest = write_images(folder, args.n, args.image_px)
        nightly_manifest = pd.concat(
            [manifest, write_images(folder, n_new, args.image_px, start=args.n)]
        )
        for r in range(args.repeats):  # interleaved, so every figure sees the same load
            runs["mm"].append(matmul_peak())
            runs["dnn"].append(onednn_gemm_peak())
            runs["fwd"].append(forward_rate(model, config, max(args.n // args.batch_size, 1)))
            store = EmbeddingStore(folder / f"store{r}")
            start = time.perf_counter()
            result = embed_manifest(manifest, config, store=store)
            runs["full"].append(time.perf_counter() - start)
            runs["loop"].append(result.images_per_second)
            start = time.perf_counter()
            result = embed_manifest(nightly_manifest, config, store=store)
            runs["night"].append(time.perf_counter() - start)
            assert (result.n_embedded, result.n_reused) == (n_new, args.n)
            print(f"  repeat {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in runs.items()))
    med = {k: statistics.median(v) for k, v in runs.items()}
    peak = med["mm"]

    def report(label: str, ips: float) -> None:
        print(
            f"{label} {ips:8.2f} images/s {ips * gflop:7.1f} GFLOP/s {ips * gflop / peak:5.2f} "
            f"of mm peak {ips * gflop / med['dnn']:5.2f} of oneDNN peak"
        )

    print(f"(1) fp32 matmul peak (torch.mm 2048)  {peak:7.1f} GFLOP/s")
    print(f"    oneDNN GEMM (1x1 conv)            {med['dnn']:7.1f} GFLOP/s")
    report("(2) forward only           ", med["fwd"])
    report("(3) end to end, loop       ", med["loop"])
    report("    end to end, with setup ", args.n / med["full"])
    print(f"    end to end / forward         {med['loop'] / med['fwd']:5.2f}")
    print(
        f"(4) nightly ({n_new} new of {args.n + n_new}) {med['night']:6.2f} s vs full run "
        f"{med['full']:6.2f} s: ratio {med['night'] / med['full']:5.3f}"
    )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
