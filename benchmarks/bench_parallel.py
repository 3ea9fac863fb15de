"""Training throughput with 1, 2 and 3 training processes side by side, with and without
a thread budget.

Each process trains CuratorNet for one epoch on UGallery-shaped synthetic triples
(``bench_train.synthetic``, batches of 4,096 triples), as a ``models`` step does.
"budget": each process sets ``torch.set_num_threads(cores // processes)``, as the
``compute`` resource does from ``CURATORNET_THREADS``; "no budget": torch's default,
one thread per core in every process. The processes prepare their data, wait at a
barrier, then train at the same time. Prints, per setting, the median over the
repetitions of the processes' summed triples/s and of one process's triples/s, and
the ratio budget / no budget. Run it alone on the machine:

    flock /tmp/curatornet-cpu.lock .venv/bin/python benchmarks/bench_parallel.py --reps 3
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from curatornet_pipeline.kernels.machine import runtime

WORKER = r"""
import json, os, sys, time
from dataclasses import replace
from pathlib import Path
threads = int(sys.argv[1])
go, n_triples = Path(sys.argv[2]), int(sys.argv[3])
import torch
if threads:
    torch.set_num_threads(threads)
sys.path.insert(0, sys.argv[4])
from bench_train import synthetic
from curatornet_pipeline.core.models.networks import CuratorNet, CuratorNetConfig
from curatornet_pipeline.core.training.train import TrainConfig, train
triplets, features = synthetic(n_triples, seed=os.getpid())
torch.manual_seed(0)
model = CuratorNet(CuratorNetConfig())
model.fit_scaler(features)
config = replace(TrainConfig(), epochs=1, batch_triples=4096)
print("ready", flush=True)
while not go.exists():
    time.sleep(0.01)
result = train(model, triplets, triplets, features, config)
print(json.dumps({"tps": result.triples_per_second, "threads": torch.get_num_threads()}))
"""


def one_setting(n_procs: int, budget: bool, n_triples: int) -> tuple[float, float, int]:
    """(summed triples/s, median per-process triples/s, threads per process) of one trial."""
    cores = os.cpu_count() or 1
    threads = max(1, cores // n_procs) if budget else 0
    env = {**os.environ}
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CURATORNET_THREADS"):
        env.pop(name, None)
    with tempfile.TemporaryDirectory() as tmp:
        go = Path(tmp) / "go"
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    WORKER,
                    str(threads),
                    str(go),
                    str(n_triples),
                    str(Path(__file__).parent),
                ],  # fmt: skip
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
            for _ in range(n_procs)
        ]
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        go.touch()
        results = [json.loads(p.stdout.readline()) for p in procs]
        for p in procs:
            p.wait()
    tps = [r["tps"] for r in results]
    return sum(tps), statistics.median(tps), results[0]["threads"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--triples", type=int, default=40_000, help="per process")
    ap.add_argument("--procs", default="1,2,3")
    args = ap.parse_args(argv)
    print(f"{runtime()}; {args.triples} triples per process")
    print(f"medians of {args.reps} trials (trials interleaved: budget, no budget, ...)")
    print("procs  setting    threads/proc  total triples/s  per process  budget/none (total)")
    for n in [int(x) for x in args.procs.split(",")]:
        trials: dict[bool, list] = {True: [], False: []}
        for _ in range(args.reps):
            for budget in (True, False):
                trials[budget].append(one_setting(n, budget, args.triples))
        med = {
            b: (
                statistics.median(t[0] for t in trials[b]),
                statistics.median(t[1] for t in trials[b]),
                trials[b][0][2],
            )
            for b in trials
        }
        for b in (True, False):
            total, per, threads = med[b]
            ratio = f"{med[True][0] / med[False][0]:.2f}" if b else ""
            name = "budget" if b else "no budget"
            print(f"{n:5d}  {name:9s}  {threads:12d}  {total:15.0f}  {per:11.0f}  {ratio}")
        sys.stdout.flush()
    t = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"finished {t}")


if __name__ == "__main__":
    main()
