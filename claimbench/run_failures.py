"""Whose fault a failed group is, in one line: a plug-in's, the environment's, or a bug of claimbench's.

In:  the exception a group's training raised (in this process, a worker process or a Ray task)
     and the group's RunConfigs.
Out: ``plugin_failure`` (one line naming the plug-in at fault and where in its own code, or None),
     ``RunFailed`` (that line as an exception that crosses any process boundary),
     ``environment_failure`` (whether a failure is recorded as a failed run rather than raised
     as a bug), ``out_of_memory`` (where memory ran out, if it did) and ``failure_message`` (the
     one line a failed run's record and the CLI show).

Judged where the traceback still exists (``claimbench.group.train_group``, in the process that
trained) and read where the failure is recorded (``claimbench.execute``) and shown
(``claimbench.cli``). torch's errors are recognised by name and text, and the dataset error
class is imported where it is matched: importing this module loads no torch.
"""

from __future__ import annotations

from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from claimbench.cache import CacheError
from claimbench.config import RunConfig


class RunFailed(Exception):
    """A run that failed because of a plug-in, not of claimbench. The message is one line that names
    the plug-in and says what went wrong (and where in the plug-in's own code, when it raised):
    all a user needs, so no traceback of claimbench's code is shown."""


# Where claimbench judges a plug-in's network (claimbench.train.models): a ValueError or TypeError raised
# right there is a verdict on the plug-in (no BatchNorm, a BatchNorm without its own ReLU, a
# build that returns no module, a stack that is not its runs), not a bug of claimbench's.
_NETWORK_CHECKS = ("PluginNet.__init__", "PluginNet.blocks", "_stack_plugin")


def plugin_failure(error: BaseException, configs: list[RunConfig]) -> str | None:
    """Why the runs of ``configs`` failed, in one line naming the plug-in at fault, when a
    plug-in is: an error claimbench raised about one (``claimbench.plugins.PluginError``, which a trainer's
    unusable result is), an exception raised inside a plug-in's own code, or a network claimbench
    cannot measure. None: the error is not a plug-in's (a bug in claimbench, or the environment's)."""
    from claimbench.config import plugins_used
    from claimbench.plugins import PluginError

    used = list(dict.fromkeys(p for c in configs for p in plugins_used(c)))
    if not used or out_of_memory(error) is not None:
        return None  # memory is the machine's to answer for, whoever asked for it
    sources = _plugin_sources(used)
    frame = _last_plugin_frame(error, sources)
    where = f" (at {frame})" if frame else ""
    if isinstance(error, PluginError):  # its message already names the plug-in
        return _one_line(f"{error}{where}")
    if frame is not None:
        kind, name, entry = frame.plugin
        return _one_line(f"{kind} plug-in {name} ({entry}): {type(error).__name__}: {error}{where}")
    model = next((s for s in sources if s.kind == "model"), None)
    if model is not None and isinstance(error, (ValueError, TypeError)) and _raised_in(error, _NETWORK_CHECKS):
        return _one_line(f"model plug-in {model.name} ({model.entry_point}): {error}")
    return None


class _Frame:
    """A frame of a plug-in's code, shown as its file (from the plug-in's package) and line."""

    def __init__(self, plugin: tuple[str, str, str], file: str, line: int, function: str):
        self.plugin, self.file, self.line, self.function = plugin, file, line, function

    def __str__(self) -> str:
        return f"{self.file}:{self.line} in {self.function}"


@dataclass(frozen=True)
class _Source:
    """Where a plug-in's code lives (its top-level package folder or module file) and the
    functions claimbench calls in it (build, load, train...), which say whose code a frame entered."""

    kind: str
    name: str
    entry_point: str
    path: Path
    entered_by: tuple[Any, ...]  # code objects

    def holds(self, file: Path) -> bool:
        return file == self.path or self.path in file.parents


def _plugin_sources(used: list[tuple[str, str]]) -> list[_Source]:
    """The sources of the plug-ins ``used`` that resolve (one that does not failed by name)."""
    from claimbench.plugins import PluginError, resolve

    found = []
    for kind, name in used:
        try:
            r = resolve(kind, name)
        except PluginError:
            continue
        calls = [getattr(r.plugin, a, None) for a in ("build", "flops_per_image", "load", "train")]
        found.append(_Source(kind, name, r.entry_point, r.source,
                             tuple(c.__code__ for c in calls if hasattr(c, "__code__"))))
    return found


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and the exceptions it was raised from (``raise ... from``), outermost first. Not
    those it was merely raised while handling: a bug of claimbench's in an ``except`` block that
    handled a plug-in's exception is still claimbench's."""
    out: list[BaseException] = []
    while error is not None and error not in out:
        out.append(error)
        error = error.__cause__
    return out


def _last_plugin_frame(error: BaseException, sources: list[_Source]) -> _Frame | None:
    """The innermost frame of a plug-in's own code in ``error``'s traceback or those of its
    causes (innermost cause first): the line of the researcher's code where it went wrong. Whose
    code it is: the plug-in whose function claimbench called to get there; a frame entered otherwise
    (a network's ``forward``, called by torch) is the model's. Several plug-ins often share one
    module, so the file alone cannot say."""
    import traceback

    for e in reversed(_chain(error)):
        owner, last = None, None
        for frame, line in traceback.walk_tb(e.__traceback__):
            file = Path(frame.f_code.co_filename).resolve()
            inside = [s for s in sources if s.holds(file)]
            if not inside:
                continue
            if owner is None:
                owner = next((s for s in inside if frame.f_code in s.entered_by), None) \
                    or next((s for s in inside if s.kind == "model"), inside[0])
            last = _Frame((owner.kind, owner.name, owner.entry_point), str(file.relative_to(owner.path.parent)),
                          line or 0, frame.f_code.co_name)
        if last is not None:
            return last
    return None


def _raised_in(error: BaseException, functions: tuple[str, ...]) -> bool:
    """Whether ``error`` was raised directly in one of claimbench's ``functions`` of
    claimbench/train/models.py (qualified names: ``Class.method`` or ``function``)."""
    tb = error.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    if Path(code.co_filename).resolve() != Path(__file__).resolve().parent / "train" / "models.py":
        return False
    owner = tb.tb_frame.f_locals.get("self")
    qualified = f"{type(owner).__name__}.{code.co_name}" if owner is not None else code.co_name
    return qualified in functions


def _one_line(text: str) -> str:
    """A message on one line: torch's multi-line errors (size mismatches) joined."""
    return " ".join(text.split())


def environment_failure(error: BaseException) -> bool:
    """A plug-in's failure, missing data, an unusable cache, the OS, memory, a dead worker:
    recorded as a failed run. Everything else is a bug and must not be mistaken for one."""
    from claimbench.data.base import DatasetError

    try:
        import ray.exceptions as rex
    except ImportError:
        rex = None
    if rex is not None and isinstance(error, rex.RayTaskError):
        cause = getattr(error, "cause", None)
        return cause is not None and environment_failure(cause)
    if rex is not None and isinstance(error, (rex.WorkerCrashedError, rex.NodeDiedError, rex.OutOfMemoryError,
                                              rex.RaySystemError, rex.ObjectLostError, rex.TaskUnschedulableError,
                                              rex.RuntimeEnvSetupError, rex.ActorDiedError)):
        return True
    if isinstance(error, (RunFailed, DatasetError, CacheError, OSError, BrokenProcessPool)):
        return True
    return out_of_memory(error) is not None


def out_of_memory(error: BaseException) -> str | None:
    """Where ``error`` ran out of memory ("device" or "CPU"), or None when it is something else.
    The one place that knows how torch says so: CUDA raises ``torch.OutOfMemoryError`` (a
    RuntimeError, matched by name so this module needs no torch); the CPU allocator raises a plain
    RuntimeError ("DefaultCPUAllocator: can't allocate memory", "not enough memory"); Python
    raises MemoryError."""
    if type(error).__name__ == "OutOfMemoryError":
        return "device"
    if isinstance(error, MemoryError):
        return "CPU"
    text = str(error) if isinstance(error, RuntimeError) else ""
    if "DefaultCPUAllocator" in text or "can't allocate memory" in text or "not enough memory" in text:
        return "CPU"
    return None


def failure_message(error: BaseException) -> str:
    """One line saying why a group failed: a ``RunFailed``'s own line, else the error's type and text."""
    cause = getattr(error, "cause", None) or error  # a RayTaskError's original exception
    if isinstance(cause, RunFailed):  # already one line naming the plug-in
        return str(cause)
    return _one_line(f"{type(cause).__name__}: {cause}")
