"""What this machine has, found without torch.

In:  the driver's tools and files (``nvidia-smi``, ``/proc/driver/nvidia/gpus``), ``/proc/cpuinfo``,
     ``/proc/meminfo``, ``CUDA_VISIBLE_DEVICES``.
Out: ``nvidia_query(field)`` (one value per GPU), ``gpu_names()``, ``detected_device()`` ('cuda' or
     'cpu'), ``machine_name(device)`` (the name step times and gpu-check findings are filed under)
     and ``available_memory()``.

Planning, the dry run and gpu-check's record all describe the machine through these, so a GPU
they see is named the same way everywhere.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path


def nvidia_query(field_name: str) -> list[str]:
    """``nvidia-smi --query-gpu=FIELD`` per GPU (``name``, ``driver_version``, ...); [] when there
    is no driver tool or it fails."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={field_name}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def gpu_names() -> list[str]:
    """The model names of the GPUs the driver lists, in its order ("NVIDIA H100 80GB HBM3")."""
    return nvidia_query("name")


def detected_device() -> str:
    """'cuda' when an NVIDIA GPU is visible to this process, else 'cpu' (without importing torch)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return "cpu"
    if gpu_names():
        return "cuda"
    # A driver without nvidia-smi on the PATH (some containers) still lists its GPUs here.
    gpus = Path("/proc/driver/nvidia/gpus")
    return "cuda" if gpus.is_dir() and any(gpus.iterdir()) else "cpu"


def gpu_name(device: str) -> str:
    """The model name of ``device`` ("cuda" or "cuda:N"), or "unknown GPU" when the driver does
    not list it."""
    names = gpu_names()
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    return names[index] if index < len(names) else "unknown GPU"


def machine_name(device: str) -> str:
    """What a step time was measured on: the GPU model, or the CPU model and its core count."""
    if device.startswith("cuda"):
        return f"cuda {gpu_name(device)}"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu {model} x{os.cpu_count() or 1}"


def available_memory() -> int | None:
    """Bytes of memory available to new processes (Linux's MemAvailable, else the free pages);
    None where neither can be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
