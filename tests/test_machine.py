"""The machine line every benchmark starts with (curatornet_pipeline.kernels.machine)."""

import subprocess
import sys

from curatornet_pipeline.kernels import machine


def test_processor_is_the_model_name_of_proc_cpuinfo():
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
        names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
    assert names and machine.processor() == names[0]
    assert machine.cpuinfo("no such field") == ""


def test_runtime_names_torch_settings_only_where_torch_is_loaded():
    code = (
        "import sys\n"
        "from curatornet_pipeline.kernels.machine import runtime\n"
        "print(runtime())\n"
        "print('torch' in sys.modules)\n"
        "import torch\n"
        "torch.set_num_threads(1)\n"
        "print(runtime())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    without, loaded, with_torch = out
    # the sampling benchmark reports its peak memory: naming the machine must not load torch
    assert loaded == "False" and "torch" not in without
    assert without.startswith(f"processor: {machine.processor()} (")
    assert with_torch.startswith(without + "; torch ") and ", 1 threads," in with_torch
