"""The package's OpenMP default: idle PyTorch workers stop spinning soon after an operator.

Measured as the CPU time a fresh process burns while its main thread sleeps right after a
parallel matrix product: the spinning worker is the only thing running then.
The count comes from the scheduler (``/proc/self/task/*/schedstat``, nanoseconds).
"""

import json
import os
import statistics
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, os, time
    import curatornet_pipeline  # before torch, as the pipeline's processes import it
    import torch

    x = torch.randn(1500, 1500)

    def cpu_ns():
        # nanoseconds on a CPU of all threads of this process (the scheduler's count)
        total = 0
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except OSError:
                pass
        return total

    def burnt_in_sleep():
        torch.mm(x, x)
        t0 = cpu_ns()
        time.sleep(0.05)
        return (cpu_ns() - t0) / 1e6

    burnt_in_sleep()
    print(json.dumps({"threads": torch.get_num_threads(), "ms": [burnt_in_sleep() for _ in range(15)]}))
    """
)


def _burnt(extra_env: dict[str, str]) -> tuple[int, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    env.pop("OMP_NUM_THREADS", None)  # the test suite may pin 1 thread; this needs the default
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env={**env, **extra_env},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["threads"], statistics.median(result["ms"])


@pytest.mark.skipif(not os.path.exists("/proc/self/schedstat"), reason="needs Linux schedstat")
def test_idle_openmp_workers_stop_spinning_unless_the_user_says_otherwise():
    # up to three rounds, as a shared machine's other load can starve the spinning worker
    # in one; without the package's setting the two measures match in every round
    seen = []
    for _ in range(3):
        threads, ours = _burnt({})
        if threads < 2:
            pytest.skip("one PyTorch thread: no OpenMP worker to spin")
        # the runtime's own default, set explicitly: the package leaves a user's value alone
        _, runtime_default = _burnt({"GOMP_SPINCOUNT": "300000"})
        seen.append((ours, runtime_default))
        if ours < 0.6 * runtime_default:
            return
    if max(d for _, d in seen) < 1.0:
        pytest.skip(f"the runtime's default burnt under 1 ms: nothing to compare ({seen})")
    pytest.fail(f"CPU ms burnt in a sleep (package default, runtime default): {seen}")
