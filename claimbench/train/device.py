"""The device a run trains on and torch's float32 arithmetic there.

In:  a device name ("auto", "cpu", "cuda", "cuda:1"), a run's precision ("fp32" or "tf32").
Out: ``resolve_device`` (a torch.device; "auto" is CUDA when there is one), ``set_precision``
     (sets float32 precision, the CPU's handling of denormals and cuDNN autotuning explicitly,
     returns what it set) and
     ``fp32_flags`` (the settings as they are now, for a run's provenance).

Set by ``claimbench.train.train_runs`` before either trainer runs, read back by both.
"""

from __future__ import annotations

import torch

# What the last ``set_precision`` asked of the CPU's denormals and whether it took (torch has no
# getter for the flag).
_flushing = {"flush_denormals": False}


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def set_precision(precision: str, device: torch.device, cudnn_benchmark: bool | None = None,
                  flush_denormals: bool = False) -> dict:
    """Set float32 arithmetic explicitly (torch's defaults differ by version and GPU: cuDNN
    convolutions default to TF32 on Ampere and later), whether the CPU flushes denormals to zero
    (set both ways, so a process that trains several groups gives each its own) and cuDNN
    autotuning (on by default on CUDA). Returns what was set, for provenance."""
    # False where the CPU has no such mode (torch then computes with denormals).
    _flushing["flush_denormals"] = bool(torch.set_flush_denormal(flush_denormals)) and flush_denormals
    tf32 = precision == "tf32"
    cudnn = torch.backends.cudnn
    if hasattr(cudnn, "conv") and hasattr(cudnn.conv, "fp32_precision"):
        # torch >= 2.9: mixing this API with the legacy allow_tf32 flags is an error.
        value = "tf32" if tf32 else "ieee"
        cudnn.conv.fp32_precision = value
        cudnn.rnn.fp32_precision = value
        torch.backends.cuda.matmul.fp32_precision = value
    else:
        cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
    benchmark = device.type == "cuda" if cudnn_benchmark is None else cudnn_benchmark
    cudnn.benchmark = benchmark
    out = {"precision": precision, "cudnn_benchmark": benchmark, **_flushing}
    if device.type == "cuda":
        out["cudnn"] = cudnn.version()
    return out


def fp32_flags() -> dict:
    """torch's float32 precision settings as they are now (for provenance). Only the API in use
    is read: with torch >= 2.9's ``fp32_precision`` set, the legacy getters raise."""
    cudnn = torch.backends.cudnn
    if hasattr(cudnn, "conv") and hasattr(cudnn.conv, "fp32_precision"):
        return {"cudnn_conv": cudnn.conv.fp32_precision, "cudnn_rnn": cudnn.rnn.fp32_precision,
                "cuda_matmul": torch.backends.cuda.matmul.fp32_precision, **_flushing}
    return {"cudnn_allow_tf32": bool(cudnn.allow_tf32), "cuda_matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
            **_flushing}
