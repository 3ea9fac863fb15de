"""Reading the published embeddings: numpy's unrestricted loader vs the restricted unpickler.

Writes a file shaped like ``resnet_embeddings.npy`` (an object array of
``[id, float32 vector]`` rows) and times ``np.load(allow_pickle=True)`` against
``core.npy_safe.load_object_array``, and the whole ``import_embeddings``.
Prints medians of ``--repeats`` runs and their ratio.

    python benchmarks/bench_npy_import.py --items 13297 --dims 2048 --repeats 5
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from curatornet_pipeline.core.data.npy_safe import load_object_array
from curatornet_pipeline.core.data.vectors import import_embeddings
from curatornet_pipeline.kernels.machine import runtime


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=13297)  # UGallery's inventory size
    parser.add_argument("--dims", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(runtime())
    rng = np.random.default_rng(0)
    array = np.empty((args.items, 2), dtype=object)
    for i in range(args.items):
        array[i, 0] = f"{i:032x}"
        array[i, 1] = rng.random(args.dims, dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "resnet_embeddings.npy"
        np.save(path, array, allow_pickle=True)
        size_mb = path.stat().st_size / 1e6
        plain = median_seconds(lambda: np.load(path, allow_pickle=True), args.repeats)
        safe = median_seconds(lambda: load_object_array(path), args.repeats)
        full = median_seconds(
            lambda: import_embeddings(path, Path(tmp) / "embeddings.npz"), args.repeats
        )
        back = load_object_array(path)
        assert all(np.array_equal(a, b) for a, b in zip(back[:, 1], array[:, 1], strict=True))
    print(f"file: {args.items} x float32[{args.dims}], {size_mb:.0f} MB; median of {args.repeats}")
    print(f"np.load(allow_pickle=True)  {plain:.3f} s")
    print(f"load_object_array (safe)    {safe:.3f} s   ratio safe/np.load = {safe / plain:.2f}")
    print(f"import_embeddings (checks + bundle write) {full:.3f} s")


if __name__ == "__main__":
    main()
