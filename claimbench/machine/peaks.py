"""Peak arithmetic rates of common GPUs, and the share of peak a training step is modelled to reach.

In:  a GPU's name as torch (``torch.cuda.get_device_name``) or nvidia-smi reports it ("NVIDIA H100
     80GB HBM3", "Tesla V100-SXM2-16GB"), or as a user types it (``--gpu h100``); or peaks given
     on the command line (``--peak-tflops FP32[,TF32]``).
Out: ``DevicePeak`` (fp32 and dense TF32 peaks, where the numbers come from) or None for a device
     not in the table: an estimate for it then says "peak unknown" instead of inventing a number.

No torch: ``claimbench plan`` prices the paper's tier on machines without it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PRECISIONS = ("fp32", "tf32")


@dataclass(frozen=True)
class DevicePeak:
    name: str
    fp32_tflops: float  # CUDA-core float32, no tensor cores
    tf32_tflops: float | None  # TF32 tensor cores, dense (datasheets print twice this "with sparsity"); None: no TF32
    source: str  # where the numbers come from

    def tflops(self, precision: str) -> float:
        """Peak for a run of ``precision``. Without TF32 tensor cores (Volta, Turing) torch's TF32
        switches change nothing and a tf32 run does fp32 arithmetic."""
        if precision == "tf32" and self.tf32_tflops is not None:
            return self.tf32_tflops
        if precision in PRECISIONS:
            return self.fp32_tflops
        raise ValueError(f"unknown precision {precision!r} (expected one of {', '.join(PRECISIONS)})")

    def has_tf32(self) -> bool:
        return self.tf32_tflops is not None


# Vendor datasheet numbers at boost clock. TF32 is the dense rate: NVIDIA's datasheets print the
# 2:4-sparsity rate, twice the dense one, which a dense convolution cannot use; halved here.
H100 = "NVIDIA H100 Tensor Core GPU datasheet"
H200 = "NVIDIA H200 Tensor Core GPU datasheet"
PEAKS: tuple[tuple[str, DevicePeak], ...] = (
    # (pattern on the normalised name, most specific first; the peaks)
    (r"\bh200 nvl\b", DevicePeak("NVIDIA H200 NVL", 60.0, 835 / 2, H200)),
    (r"\bh200\b", DevicePeak("NVIDIA H200 SXM", 67.0, 989 / 2, H200)),
    (r"\bh100 nvl\b", DevicePeak("NVIDIA H100 NVL", 60.0, 835 / 2, H100)),
    (r"\bh100 pcie\b", DevicePeak("NVIDIA H100 PCIe", 51.0, 756 / 2, H100)),
    # The SXM board reports itself as "NVIDIA H100 80GB HBM3".
    (r"\bh100\b", DevicePeak("NVIDIA H100 SXM", 67.0, 989 / 2, H100)),
    # SXM4 and PCIe, 40 and 80 GB: the same peaks.
    (r"\ba100\b", DevicePeak("NVIDIA A100", 19.5, 156.0, "NVIDIA A100 Tensor Core GPU datasheet")),
    (r"\bl40s\b", DevicePeak("NVIDIA L40S", 91.6, 366 / 2, "NVIDIA L40S datasheet")),
    (r"\ba10\b", DevicePeak("NVIDIA A10", 31.2, 125 / 2, "NVIDIA A10 Tensor Core GPU datasheet")),
    # GeForce: the Ada whitepaper lists TF32 at 82.6 dense / 165.2 sparse (FP32 accumulate).
    (r"\brtx 4090\b", DevicePeak("NVIDIA GeForce RTX 4090", 82.6, 82.6,
                                 "NVIDIA Ada Lovelace GPU architecture whitepaper, RTX 4090")),
    (r"\bv100 pcie\b", DevicePeak("NVIDIA V100 PCIe", 14.0, None, "NVIDIA Tesla V100 GPU datasheet")),
    (r"\bv100\b", DevicePeak("NVIDIA V100 SXM2", 15.7, None, "NVIDIA Tesla V100 GPU datasheet")),
    (r"\bt4\b", DevicePeak("NVIDIA T4", 8.1, None, "NVIDIA T4 Tensor Core GPU datasheet")),
)

# The share of peak a training step is modelled to reach, per precision. Derived from NVIDIA's
# own published single-GPU training throughput of ResNet-50 v1.5 in PyTorch
# (NVIDIA/DeepLearningExamples, PyTorch/Classification/ConvNets/resnet50v1.5, "Training
# performance results"), a convolution + BatchNorm + ReLU network like the paper's, tuned by the
# vendor: ResNet-50 trains at 3 x 8.2 GFLOP per 224x224 image (4.1 G multiply-adds forward,
# backward twice the forward).
#   fp32, 1x V100 16GB:  367 img/s x 24.6 GFLOP = 9.0 TFLOP/s of 15.7 peak  -> 0.57
#   TF32, 1x A100 80GB:  938 img/s x 24.6 GFLOP = 23.1 TFLOP/s of 156 peak  -> 0.15
# TF32 reaches a smaller share: the tensor cores speed up the convolutions, not the BatchNorm,
# activation and optimizer kernels, which are bound by memory bandwidth. No GPU has timed this
# project's networks: a dry run on the GPU (``claimbench verify --dry-run``) replaces the model with a
# measurement, and the plan says which it used.
ACHIEVABLE_FRACTION = {"fp32": 0.57, "tf32": 0.15}
# The GPU a full-tier estimate is modelled for when this machine has none and none is named.
DEFAULT_GPU = "H100 SXM"


def normalised(name: str) -> str:
    text = re.sub(r"[-_/]+", " ", name.lower())
    text = re.sub(r"\b(nvidia|tesla|geforce)\b", " ", text)
    return " ".join(text.split())


def match_gpu(name: str) -> DevicePeak | None:
    """The table's entry for a GPU name (torch's, nvidia-smi's or typed), or None when unknown."""
    text = normalised(name)
    for pattern, peak in PEAKS:
        if re.search(pattern, text):
            return peak
    return None


def parse_peak_tflops(text: str, name: str = "GPU") -> DevicePeak:
    """``--peak-tflops FP32[,TF32]``: dense TFLOP/s; without TF32 the device has none (tf32 runs
    as fp32). Raises ValueError naming what is wrong."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (1, 2) or not all(parts):
        raise ValueError(f"--peak-tflops: expected FP32 or FP32,TF32 (TFLOP/s), got {text!r}")
    values = []
    for part in parts:
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"--peak-tflops: {part!r} is not a number") from None
        if not (value > 0 and value < float("inf")):
            raise ValueError(f"--peak-tflops: {part!r} must be a positive finite number of TFLOP/s")
        values.append(value)
    return DevicePeak(name, values[0], values[1] if len(values) == 2 else None, "--peak-tflops")
