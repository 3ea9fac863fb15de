"""curatornet_pipeline: CuratorNet and its baselines as a Dagster pipeline.

Importing the package sets one process default before PyTorch loads: how long an idle
OpenMP worker of PyTorch's GNU OpenMP runtime spins before it sleeps (``GOMP_SPINCOUNT``;
see :func:`_openmp_spin`).
"""

import os
import sys

#: Spins of an idle GNU OpenMP worker before it sleeps. The runtime's default (300,000; about
#: 6 ms of a core here, measured as CPU time burnt in a sleep after a product) keeps the
#: second core busy between PyTorch's parallel operators, where a CuratorNet step runs its
#: own threads (the fused pooling and margins of kernels/fused.py) and Python's. 20,000 (under
#: a millisecond) made training 1.07x faster on 2 cores (paired runs of
#: benchmarks/bench_train.py, docs/benchmarks.md); 2,000 was slower (each parallel operator
#: then waits for a sleeping worker to wake).
OPENMP_SPINCOUNT = "20000"


def _openmp_spin() -> None:
    """Set ``GOMP_SPINCOUNT`` unless the user set it (or ``OMP_WAIT_POLICY``) or PyTorch is
    already loaded: the runtime reads it once, when it loads with ``import torch``. Child
    processes (Dagster's run and step workers) inherit it with the environment."""
    if "torch" in sys.modules or "GOMP_SPINCOUNT" in os.environ or "OMP_WAIT_POLICY" in os.environ:
        return
    os.environ["GOMP_SPINCOUNT"] = OPENMP_SPINCOUNT


_openmp_spin()
