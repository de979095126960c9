"""What one training step dispatches, traced without running it (on the ``meta`` device).

In:  RunConfigs that can train together and the shape of their dataset.
Out: ``StepTrace``: the operators one steady-state step (not the first of an epoch) dispatches,
     with those that copy between host and device (and which of those make the host wait), read
     a device value back (a sync on a GPU), create a CPU tensor, or update one in place.

On ``meta`` every operator runs through the same Python and dispatcher path as on a GPU, with no
arithmetic, so this checks the CUDA path on any machine: a host-device copy or sync per step is a
pipeline stall on a GPU. Two differences from CUDA, both stated where the trace is reported:
nothing is fused on ``meta`` (the optimizers use their foreach kernels, whose step counters are
0-dim CPU tensors updated in place and read as Python numbers: ``host_ops``, never a copy or a
sync; fused and capturable kernels keep them on the GPU), and CUDA graphs are not traced.

Two recorders watch the step. A dispatch mode sees every aten operator. It cannot see
``torch.tensor(data, device=...)`` (and ``as_tensor``/``asarray``): torch copies the host data
to the device below the dispatcher, so a function mode records those calls. A read of a device
value (``.item()``, ``bool(t)``, ``.cpu()``...) is recorded before it runs: on ``meta`` there is
no value, so the recorder answers with a placeholder (zero, False, an empty result) and the
trace goes on to count the rest instead of stopping at the first.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
import torch._dynamo  # noqa: F401  (imported here, not lazily inside a trace: its first import registers torch libraries and fails under a dispatch mode)
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from claimbench.config import RunConfig
from claimbench.data.base import ImageData
from claimbench.train.loop import start_phase, train_step
from claimbench.train.state import init_state

# Operators that read a device value back to the host.
_SYNC_OPS = {"aten::_local_scalar_dense", "aten::item", "aten::is_nonzero", "aten::nonzero", "aten::equal"}
# Python constructors that copy host data (lists, numbers, arrays) into a new tensor.
_FROM_HOST_DATA = {torch.tensor: "torch.tensor", torch.as_tensor: "torch.as_tensor", torch.asarray: "torch.asarray"}


@dataclass
class StepTrace:
    runs: int
    ops: Counter = field(default_factory=Counter)  # non-view operators on the device, by name
    host_ops: int = 0  # operators on CPU tensors only (foreach step counters, see above)
    copies: list[str] = field(default_factory=list)  # operators mixing host and device tensors
    # Of the copies, those the host waits for: device to host, host to device from pageable
    # memory or without non_blocking, tensors built from host data.
    blocking_copies: list[str] = field(default_factory=list)
    syncs: list[str] = field(default_factory=list)  # device values read by the host
    cpu_created: list[str] = field(default_factory=list)  # operators returning a new CPU tensor
    cpu_inplace: int = 0  # of host_ops, those updating a CPU tensor in place

    @property
    def total_ops(self) -> int:
        return sum(self.ops.values())


def _on_device(t: torch.Tensor) -> bool:
    return t.device.type != "cpu"


class _FactoryRecorder(TorchFunctionMode):
    """``torch.tensor(data, device=...)`` and its kin, which no dispatch mode sees copying."""

    def __init__(self, trace: StepTrace):
        super().__init__()
        self.trace = trace

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        label = _FROM_HOST_DATA.get(func)
        if label is not None:
            source = args[0] if args else kwargs.get("data", kwargs.get("obj"))
            if not isinstance(source, torch.Tensor):
                # Device tensors inside a list are read back one by one to build the new tensor.
                if any(isinstance(t, torch.Tensor) and _on_device(t) for t in tree_flatten(source)[0]):
                    self.trace.syncs.append(f"{label} of device values")
        out = func(*args, **kwargs)
        if label is not None and isinstance(out, torch.Tensor) and _on_device(out):
            source = args[0] if args else kwargs.get("data", kwargs.get("obj"))
            if not (isinstance(source, torch.Tensor) and _on_device(source)):
                self.trace.copies.append(f"{label} from host data")
                self.trace.blocking_copies.append(f"{label} from host data")
        return out


def _placeholder(name: str, inputs: list[torch.Tensor]):
    """What a read of a ``meta`` tensor's value returns in a trace: the value is unknowable."""
    if name == "aten::nonzero":
        return torch.empty(0, inputs[0].dim(), dtype=torch.long, device=inputs[0].device)
    if name in ("aten::is_nonzero", "aten::equal") or inputs[0].dtype == torch.bool:
        return False
    return 0.0 if inputs[0].is_floating_point() else 0


class _Recorder(TorchDispatchMode):
    def __init__(self, trace: StepTrace):
        super().__init__()
        self.trace = trace

    def _copy(self, func, name: str, args, kwargs) -> tuple[str, str] | None:
        """(source, target) device types of a copy operator, None for other operators."""
        if name == "aten::_to_copy":
            target = kwargs.get("device") or args[0].device
            return args[0].device.type, torch.device(target).type
        if name == "aten::copy_":
            return args[1].device.type, args[0].device.type
        return None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        # Reads of device values are recorded before they run (they raise on ``meta``).
        if name in _SYNC_OPS and any(_on_device(t) for t in inputs):
            self.trace.syncs.append(name)
            if any(t.device.type == "meta" for t in inputs):
                return _placeholder(name, inputs)
        direction = self._copy(func, name, args, kwargs)
        if direction is not None and direction[0] != "cpu" and direction[1] == "cpu":
            self.trace.copies.append(name)
            self.trace.blocking_copies.append(f"{name} (device to host)")
            self.trace.syncs.append(f"{name} (device to host)")
            if direction[0] == "meta":
                if name == "aten::copy_":
                    return args[0]
                return torch.zeros(args[0].shape, dtype=kwargs.get("dtype") or args[0].dtype)
        out = func(*args, **kwargs)
        outputs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        devices = {t.device.type for t in inputs + outputs}
        if "cpu" in devices and len(devices) > 1 and not (direction and direction[1] == "cpu"):
            self.trace.copies.append(name)
            source = args[1] if name == "aten::copy_" else args[0]
            non_blocking = args[2] if name == "aten::copy_" and len(args) > 2 else kwargs.get("non_blocking", False)
            pinned_async = (direction is not None and bool(non_blocking)
                            and isinstance(source, torch.Tensor) and source.is_pinned())
            if not pinned_async:  # pageable memory is copied synchronously even with non_blocking
                self.trace.blocking_copies.append(name)
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
    with _FactoryRecorder(trace), _Recorder(trace):
        train_step(state, data)
    return trace
