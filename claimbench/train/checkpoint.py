"""The checkpoint of a group's training: its format, and writing and reading it safely.

In:  a ``TrainState`` and the wall time so far; a path and the group's RunConfigs.
Out: ``checkpoint_state`` (the state as plain containers and CPU tensors, loadable without
     pickle) and ``restore_state`` (its inverse, into a freshly built state); ``save_checkpoint``
     (atomic, never fatal), ``read_checkpoint`` (``CheckpointError`` naming the file for anything
     but a checkpoint of these runs in this format) and ``load_checkpoint`` (a bad file is moved
     aside and training starts from scratch).

A resumed run on the CPU is bit-identical to an uninterrupted one: everything the next step
reads is saved, including each run's generator state and the phase records.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import time
from pathlib import Path

import torch

from claimbench.config import RunConfig
from claimbench.train.optim import load_keeping_kernels, set_lr
from claimbench.train.outcome import PhaseRun
from claimbench.train.state import TrainState

log = logging.getLogger(__name__)

# Version of the checkpoint layout; a checkpoint of another layout is moved aside, not misread.
CHECKPOINT_FORMAT = 2


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file."""


def checkpoint_state(state: TrainState, wall_s: float) -> dict:
    """The whole state as plain containers and CPU tensors (loadable with weights_only=True)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "configs": [c.canonical_json() for c in state.configs],
        "step": state.step,
        "wall_s": wall_s,
        "net": {k: v.detach().cpu() for k, v in state.net.state_dict().items()},
        "optimizers": [o.state_dict() for o in state.optimizers],
        "stream": state.stream.get_state(),
        "loss_sum": state.loss_sum.cpu(),
        "loss_count": state.loss_count,
        "histories": state.histories,
        "diverged": state.diverged,
        "factor": state.factor,
        "phase_runs": state.phase_runs,
    }


@torch.no_grad()
def restore_state(state: TrainState, saved: dict) -> None:
    state.net.load_state_dict(saved["net"])
    for opt, sd in zip(state.optimizers, saved["optimizers"]):
        # This run's kernels (and capturability), not those of the process that saved.
        load_keeping_kernels(opt, sd)
    state.stream.set_state(saved["stream"])
    state.loss_sum.copy_(saved["loss_sum"])
    state.loss_count = saved["loss_count"]
    state.histories, state.diverged = saved["histories"], saved["diverged"]
    state.step, state.factor, state.wall_s = saved["step"], saved["factor"], saved["wall_s"]
    # A checkpoint without this record (written by an earlier version) says nothing of how its
    # steps ran: one unrecorded entry, so provenance cannot claim graphs for them.
    state.phase_runs = [dict(r) for r in saved.get("phase_runs") or []] or (
        [PhaseRun(None, None, 0, state.step, graphs=False, error="not recorded").to_dict()] if state.step else [])
    if state.factor is not None:
        set_lr(state.optimizers, state.factor)


def save_checkpoint(path: Path, saved: dict) -> bool:
    """Atomic: a reader (or a resumed run) sees the previous checkpoint or this one, whole.

    A checkpoint is insurance, not a result: when it cannot be written (a full disk, a lost
    mount) the partial file is removed, the previous checkpoint stays, one warning says so and
    training goes on; False then."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            torch.save(saved, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        # When the folder is what failed (a file in its place, a lost mount) removing the partial
        # file fails too: there is none to remove, and training must go on all the same.
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        log.warning("could not save the checkpoint %s (%s); the partial file was removed, %s, and training goes on",
                    path, e.strerror or e, "the previous checkpoint is kept" if path.exists() else "there is none yet")
        return False
    except RuntimeError as e:
        # torch.save reports a failed write (PytorchStreamWriter) as a RuntimeError: the same case.
        if "write" not in str(e).lower() and "file" not in str(e).lower():
            raise
        tmp.unlink(missing_ok=True)
        log.warning("could not save the checkpoint %s (%s); the partial file was removed and training goes on",
                    path, str(e).splitlines()[0])
        return False
    return True


def read_checkpoint(path: Path, configs: list[RunConfig]) -> dict:
    """The checkpoint at ``path`` for ``configs``, loaded without pickle (``weights_only``) onto
    the CPU; CheckpointError naming the file for anything else."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as e:
        raise CheckpointError(f"{path}: not a readable training checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path}: not a training checkpoint (holds a {type(saved).__name__}, not a dict)")
    if saved.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {saved.get('format')!r}, this version reads {CHECKPOINT_FORMAT}")
    if saved.get("configs") != [c.canonical_json() for c in configs]:
        raise CheckpointError(f"{path}: checkpoint of other runs")
    return saved


def load_checkpoint(path: Path | None, configs: list[RunConfig]) -> dict | None:
    """``read_checkpoint`` if ``path`` exists; an unusable file is moved aside (so later attempts
    do not trip on it again), logged with its new name, and training starts from scratch."""
    if path is None or not path.is_file():
        return None
    try:
        return read_checkpoint(path, configs)
    except CheckpointError as e:
        aside = path.with_name(f"{path.name}.bad-{time.strftime('%Y%m%d%H%M%S')}-{os.getpid()}")
        try:
            os.replace(path, aside)
        except OSError as move_error:
            log.warning("%s; could not move it aside (%s); starting from scratch", e, move_error)
        else:
            log.warning("%s; moved to %s, starting from scratch", e, aside)
        return None
