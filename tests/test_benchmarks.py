"""The benchmarks that docs/benchmarks.md quotes still run and still print what they promise.

Each script runs as a user runs it (its own process, tiny sizes) and its output is read
back: the processor named, every part it promises, figures in their possible ranges, and
the invariants a figure rests on (a model's FLOP count is the same in every part). Speeds
are not asserted: the machines are noisy (docs/benchmarks.md holds the figures).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from curatornet_pipeline.kernels.machine import processor

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

NUMBER = r"([0-9]+(?:\.[0-9]+)?)"


def run_benchmark(name: str, *args: str, timeout: float = 600) -> str:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert out.startswith(f"processor: {processor()} ("), out[:300]
    return out


def part(out: str, name: str) -> dict[str, float]:
    """The figures of bench_train's line for ``name``."""
    m = re.search(
        rf"^{re.escape(name)} +{NUMBER} s/epoch +{NUMBER} triples/s +{NUMBER} MFLOP/triple +"
        rf"{NUMBER} GFLOP/s = {NUMBER} of peak \(medians of ([0-9]+)\)$",
        out,
        re.MULTILINE,
    )
    assert m, f"no line for {name!r} in:\n{out}"
    seconds, tps, mflop, gflops, fraction, n = map(float, m.groups())
    return {"seconds": seconds, "tps": tps, "mflop": mflop, "fraction": fraction, "n": n}


def ratio(out: str, label: str) -> float:
    m = re.search(rf"{re.escape(label)}:? {NUMBER}x", out)
    assert m, f"no {label!r} in:\n{out}"
    return float(m.group(1))


def test_bench_train_prints_every_part_the_issue_asks_for_with_medians_of_three():
    out = run_benchmark("bench_train", "--triples", "3000", "--repeats", "3")
    peak = re.search(rf"fp32 matmul peak \(2048\^2, median of 7\): \w+ {NUMBER} GFLOP/s", out)
    assert peak and float(peak.group(1)) > 0, out
    parts = {
        name: part(out, name)
        for name in (
            "CuratorNet, one model",
            "CuratorNet, one model, torch pooling",
            "CuratorNet, subnormals flushed",
            "CuratorNet, subnormals kept",
            "VBPR, dense rows",
            "VBPR, sparse rows",
        )
    }
    for name, p in parts.items():
        assert p["n"] == 3, name
        assert p["tps"] > 0 and 0 < p["fraction"] < 1.5, (name, p)
    one = parts["CuratorNet, one model"]["mflop"]
    # FlopCounterMode's count: the kernels change how, not which, products run
    assert parts["CuratorNet, one model, torch pooling"]["mflop"] == pytest.approx(one, rel=0.02)
    for label in (
        "fused pooling and margins",
        "flushing subnormals (FTZ/DAZ)",
        "VBPR sparse speedup over dense",
    ):
        assert ratio(out, label) > 0
    assert re.search(r"^resnet features: 3[0-9]\.[0-9]% zeros, mean 0\.450, min 0\.000", out, re.M)
    shares = re.search(
        rf"^subnormal values in one CuratorNet epoch with subnormals kept: activations "
        rf"{NUMBER}% \(([0-9,]+) of ([0-9,]+)\), gradients {NUMBER}% \(([0-9,]+) of ([0-9,]+)\)$",
        out,
        re.MULTILINE,
    )
    assert shares, out
    share_a, _, n_a, share_g, _, n_g = shares.groups()
    assert 0 <= float(share_a) <= 100 and 0 <= float(share_g) <= 100
    assert int(n_a.replace(",", "")) > 0 and int(n_g.replace(",", "")) > 0
    measures = re.search(r"matmul peak over the run: .*\(([0-9]+) measures\)", out)
    assert measures and int(measures.group(1)) >= 3 * len(parts), out


def test_bench_kernels_prints_a_verdict_for_every_kernel_kept_and_deleted():
    out = run_benchmark(
        "bench_kernels", "--items", "600", "--profiles", "1000", "--repeats", "2", "--deleted"
    )
    # each kernel kept, against the library's: the fused pooling and margins, the dense
    # layers on oneDNN; and the deleted SELU at each of the towers' two shapes
    for label, count in (("fused", 2), ("oneDNN", 6), ("blocked", 2)):
        found = re.findall(rf"{label} {NUMBER}x", out)
        assert len(found) >= count and all(float(r) > 0 for r in found), (label, out)
    for verdict in (
        "faster with the fused pooling and margins than with PyTorch's operators",
        "faster with nn.SELU than with the deleted blocked SELU",
    ):
        assert re.search(rf"the step is {NUMBER}x {re.escape(verdict)}", out), (verdict, out)


def test_bench_learning_prints_the_accuracy_against_time_curve_per_batching():
    out = run_benchmark(
        "bench_learning", "--triples", "4000", "--epochs", "2", "--batches", "2048,512"
    )
    rows = re.findall(
        rf"^\| ([0-9]+) \| fp32 \| ([0-9]+) \| {NUMBER} \| {NUMBER} \| {NUMBER} \| {NUMBER} \| "
        rf"{NUMBER} \|$",
        out,
        re.MULTILINE,
    )
    assert [(b, e) for b, e, *_ in rows] == [
        ("2048", "1"),
        ("2048", "2"),
        ("512", "1"),
        ("512", "2"),
    ]
    for batch in ("2048", "512"):
        curve = [tuple(map(float, r[2:])) for r in rows if r[0] == batch]
        seconds = [c[0] for c in curve]
        assert seconds == sorted(seconds) and seconds[0] > 0  # cumulative training time
        for _, loss, val_acc, auc, recall in curve:
            assert loss > 0 and 0 <= val_acc <= 1 and 0 <= auc <= 1 and 0 <= recall <= 1
