"""The machine `rlkit bench` runs on: its GPUs (probed from a child process), CPU, and peak FLOP/s for MFU."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# Dense bf16 peak FLOP/s of one GPU, by a substring of its name; the first match wins (PCIe/NVL before SXM).
PEAK_BF16_FLOPS = (("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("H200", 989e12),
                   ("A100", 312e12))
_CHILD_PROBE = "import json, torch; print(json.dumps([torch.cuda.get_device_name(0), torch.cuda.device_count()]))"


@dataclass(frozen=True)
class Machine:
    """Where the bench runs. `gpu` is the name of GPU 0, None without CUDA."""

    gpu: str | None
    num_gpus: int
    cpu: str
    num_cpu_cores: int

    @property
    def cuda(self) -> bool:
        return self.gpu is not None

    def peak_flops(self, nproc: int) -> float | None:
        """Dense bf16 peak of `nproc` GPUs; None on CPU or for a GPU missing from PEAK_BF16_FLOPS."""
        if self.gpu is None:
            return None
        per_gpu = next((flops for name, flops in PEAK_BF16_FLOPS if name in self.gpu), None)
        return None if per_gpu is None else per_gpu * nproc


def probe_machine() -> Machine:
    """The machine, without touching a GPU from this process: CUDA details come from a short child process,
    so that no CUDA context of the bench itself holds memory while the pairings run."""
    import torch

    cpu = _cpu_name()
    if not torch.cuda.is_available():
        return Machine(None, 0, cpu, os.cpu_count() or 1)
    output = subprocess.run([sys.executable, "-c", _CHILD_PROBE], capture_output=True, text=True, check=True).stdout
    name, count = json.loads(output.strip().splitlines()[-1])
    return Machine(name, count, cpu, os.cpu_count() or 1)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
