"""The machine a benchmark ran on, reported with every number (CPU, cores, bf16 support, load, versions)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def machine() -> dict:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        info = ""
    cpu = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
               platform.processor())
    found = {"cpu": cpu, "cores": os.cpu_count(), "avx512_bf16": "avx512_bf16" in info,
             "load_average_1m": round(os.getloadavg()[0], 2), "python": platform.python_version()}
    try:
        import torch

        found["torch"] = torch.__version__
        found["torch_threads"] = torch.get_num_threads()
        found["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return found
