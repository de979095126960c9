"""What one training step dispatches, traced without running it (on the ``meta`` device).

In:  RunConfigs that can train together and the shape of their dataset.
Out: ``StepTrace``: the operators one steady-state step (not the first of an epoch) dispatches,
     with those that copy between host and device, read a device value back (a sync on a GPU),
     create a CPU tensor, or update one in place.

On ``meta`` every operator runs through the same Python and dispatcher path as on a GPU, with no
arithmetic, so this checks the CUDA path on any machine: a host-device copy or sync per step is a
pipeline stall on a GPU. Two differences from CUDA, both stated where the trace is reported:
nothing is fused on ``meta`` (the optimizers use their foreach kernels, whose step counters are
0-dim CPU tensors updated in place and read as Python numbers: ``host_ops``, never a copy or a
sync; fused and capturable kernels keep them on the GPU), and CUDA graphs are not traced.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
import torch._dynamo  # noqa: F401  (imported here, not lazily inside a trace: its first import registers torch libraries and fails under a dispatch mode)
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from repro.config import RunConfig
from repro.data.base import ImageData
from repro.train.loop import init_state, start_phase, train_step

# Operators that read a device value back to the host.
_SYNC_OPS = {"aten::_local_scalar_dense", "aten::item", "aten::is_nonzero", "aten::nonzero", "aten::equal"}


@dataclass
class StepTrace:
    runs: int
    ops: Counter = field(default_factory=Counter)  # non-view operators on the device, by name
    host_ops: int = 0  # operators on CPU tensors only (foreach step counters, see above)
    copies: list[str] = field(default_factory=list)  # operators mixing host and device tensors
    syncs: list[str] = field(default_factory=list)  # device values read by the host
    cpu_created: list[str] = field(default_factory=list)  # operators returning a new CPU tensor
    cpu_inplace: int = 0  # of host_ops, those updating a CPU tensor in place

    @property
    def total_ops(self) -> int:
        return sum(self.ops.values())


class _Recorder(TorchDispatchMode):
    def __init__(self, trace: StepTrace):
        super().__init__()
        self.trace = trace

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func._schema.name
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        outputs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        devices = {t.device.type for t in inputs + outputs}
        if "cpu" in devices and len(devices) > 1:
            self.trace.copies.append(name)
        if name in _SYNC_OPS and any(t.device.type != "cpu" for t in inputs):
            self.trace.syncs.append(name)
        if func.is_view or name.startswith("profiler::"):
            return out
        if devices == {"cpu"}:
            self.trace.host_ops += 1
        else:
            self.trace.ops[name] += 1
        if func._schema.is_mutable:
            if any(t.device.type == "cpu" for t in inputs):
                self.trace.cpu_inplace += 1
        elif any(t.device.type == "cpu" for t in outputs):
            self.trace.cpu_created.append(name)
        return out


def meta_data(like: ImageData | None = None, *, n: int = 50_000, channels: int = 3, side: int = 32,
              classes: int = 10) -> ImageData:
    """A dataset of the given shape on ``meta`` (no memory, no values)."""
    if like is not None:
        n, channels, side, classes = like.train_size, like.in_channels, like.image_size, like.num_classes
    x = torch.empty(n, channels, side, side, device="meta")
    y = torch.empty(n, dtype=torch.long, device="meta")
    return ImageData("meta", x, y, x[:1], y[:1], classes)


def trace_step(configs: list[RunConfig], data: ImageData, device: str = "meta",
               epoch_start: bool = False) -> StepTrace:
    """Trace the second step of a group, or with ``epoch_start`` the first, which also builds the
    epoch's order and flips on the host and copies them to the device (once per epoch)."""
    dev = torch.device(device)
    state = init_state(configs, data, dev)
    start_phase(state, state.schedule.factor(0))
    if not epoch_start:
        train_step(state, data)
    trace = StepTrace(len(configs))
    with _Recorder(trace):
        train_step(state, data)
    return trace
