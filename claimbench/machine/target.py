"""The device an estimate is for: this machine's, or a GPU named for planning elsewhere.

In:  this machine's device ("cuda", "cuda:N", "cpu"), and what ``claimbench plan`` was told
     (``--gpu NAME``, ``--peak-tflops FP32[,TF32]``) for a tier.
Out: ``Target``: kind, name, datasheet peak (``claimbench.machine.peaks``; None when unknown),
     whether it is this machine (then the step times a dry run measured here apply), and how it
     was chosen; ``describe()`` says all that in one line. No torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from claimbench.machine import detect
from claimbench.machine.peaks import (ACHIEVABLE_FRACTION, DEFAULT_GPU, PRECISIONS, DevicePeak, match_gpu,
                                     parse_peak_tflops)


@dataclass(frozen=True)
class Target:
    """The device an estimate is for: this machine's, or a GPU named for planning elsewhere."""

    kind: str  # "cuda" or "cpu"
    name: str
    peak: DevicePeak | None  # None: peak unknown (a CPU, or a GPU not in claimbench.machine.peaks)
    here: bool  # this machine's device: the step times a dry run measured here apply
    note: str = ""  # how it was chosen, printed with the estimate

    def describe(self) -> str:
        where = "this machine" if self.here else "not this machine"
        if self.kind == "cpu":
            peak = "peak unknown; modelled at the development CPU's fitted rate"
        elif self.peak is None:
            peak = "peak unknown (not in claimbench/machine/peaks.py; give --peak-tflops FP32[,TF32])"
        else:
            tf32 = f"TF32 dense {self.peak.tf32_tflops:g}" if self.peak.has_tf32() else "no TF32 (tf32 runs as fp32)"
            peak = (f"peak fp32 {self.peak.fp32_tflops:g}, {tf32} TFLOP/s ({self.peak.source}); modelled at "
                    + ", ".join(f"{ACHIEVABLE_FRACTION[p]:.0%} of {p} peak" for p in PRECISIONS))
        return f"{self.name} ({where}{'; ' + self.note if self.note else ''}): {peak}"


def machine_target(device: str) -> Target:
    """This machine's device as an estimate's target."""
    if device.startswith("cuda"):
        name = detect.gpu_name(device)
        peak = match_gpu(name)
        return Target("cuda", peak.name if peak else name, peak, True)
    return Target("cpu", detect.machine_name("cpu"), None, True)


def estimate_target(tier: str, device: str, gpu: str | None = None, peak_tflops: str | None = None) -> Target:
    """What ``claimbench plan`` estimates for. ``gpu``: a GPU to plan for (matched in
    ``claimbench.machine.peaks``); ``peak_tflops``: "FP32[,TF32]" for a GPU the table lacks (or to
    override it). Without either: this machine's device, except that the full tier on a machine
    without a GPU is modelled for ``DEFAULT_GPU`` (nobody trains it on a CPU). Raises ValueError
    for a malformed ``peak_tflops``."""
    here = machine_target(device)
    if gpu is None and peak_tflops is None and (here.kind == "cuda" or tier != "full"):
        return here
    if gpu is not None:
        peak = match_gpu(gpu)
        name, note = (peak.name if peak else gpu), "named by --gpu"
    elif here.kind == "cuda":
        peak, name, note = here.peak, here.name, ""
    elif peak_tflops is not None:
        peak, name, note = None, "GPU of --peak-tflops", "no GPU on this machine"
    else:
        peak = match_gpu(DEFAULT_GPU)
        name, note = peak.name, "no GPU on this machine; --gpu NAME for another"
    if peak_tflops is not None:
        peak = parse_peak_tflops(peak_tflops, name)
        note = "; ".join(n for n in (note, "peaks from --peak-tflops") if n)
    # Measurements of this machine apply when the target is its GPU (the same model).
    same = here.kind == "cuda" and (gpu is None or (peak is not None and here.peak is not None
                                                    and match_gpu(gpu) == here.peak))
    return Target("cuda", name, peak, same, note)
