"""Which device this process trains on: decided once, by torch, before anything is planned.

In:  the ``--device`` the user asked for (``auto``, ``cpu``, ``cuda``, ``cuda:1``, ...).
Out: ``training_device(requested)``, the device every stage of the command then uses, or a
     ``DeviceError`` saying what to fix.

torch alone decides whether a GPU can be trained on. ``nvidia-smi`` (through
``claimbench.machine.detect.detected_device``, which planning uses without torch) only tells
whether a GPU is there: when it sees one that torch cannot use (a CPU build of torch, a driver too old for the
installed CUDA build), the user meant to train on that GPU and would otherwise get a CPU run
planned as a GPU one, so it is an error naming the fix, not a silent fall back to the CPU.
"""

from __future__ import annotations

from claimbench.machine import detect


class DeviceError(RuntimeError):
    """A device that was asked for, or that is present, and that torch cannot train on."""


def _torch_cuda() -> tuple[bool, str, str | None]:
    import torch

    return torch.cuda.is_available(), torch.__version__, torch.version.cuda


def training_device(requested: str = "auto") -> str:
    """``"cuda"``/``"cuda:N"`` or ``"cpu"``: where training runs, as torch sees this machine."""
    cuda_ok, torch_version, cuda_build = _torch_cuda()
    if requested == "cpu":
        return "cpu"
    if requested == "auto":
        if cuda_ok:
            return "cuda"
        if detect.detected_device() != "cuda":
            return "cpu"
        why = "an NVIDIA GPU is present (nvidia-smi lists it) but this torch cannot use it"
    elif requested.startswith("cuda"):
        if cuda_ok:
            return requested
        why = f"--device {requested} was asked for but this torch cannot use a CUDA GPU"
    else:
        raise DeviceError(f"--device {requested}: unknown device; use auto, cpu, cuda or cuda:N")
    if cuda_build is None:
        fix = (f"torch {torch_version} is a CPU-only build: install the CUDA build, e.g. make setup "
               "TORCH_SPEC=\"torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126\" (after rm -r .venv)")
    else:
        fix = (f"torch {torch_version} is built for CUDA {cuda_build}: update the NVIDIA driver to one that "
               "supports it (nvidia-smi shows the driver's CUDA version), or install a torch build for your driver")
    raise DeviceError(f"{why}: {fix}; or pass --device cpu to train on the CPU on purpose")
