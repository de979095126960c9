"""The behaviour suite's cases: every path training can take, a few steps each, and what they
compute.

Each case is a run config (tiny networks, a handful of steps with a learning-rate phase change)
and the data it reads, trained by claimbench's plain path (one run, no graphs, per-parameter optimizer
kernels) in float64 on one CPU thread, so what is recorded is the arithmetic of the training's
semantics and not of a machine's fast path. What is recorded per case: the loss and learning-rate
curves, the steps taken, and per tensor of the trained network its sum, its sum of squares and
its projection on a fixed random direction (a change anywhere in a tensor moves the projection).

The paths: each optimizer with L2 and with weight decay; each architecture family (BasicNet with
each dataset head, VGG-11/16/19); each data family with its augmentation (the embedded digits and
shapes with flips, CIFAR-10/100 read from the official archive, TinyImageNet and ImageNet read from
JPEG folders with their crops); both precisions; schedules counted in steps and in epochs; the
paper's variants of the network (Leaky ReLU, beta init, per-parameter learning-rate scales, no
regularizer); checkpoint and resume; a plug-in model trained by a plug-in trainer (the trainer
harness; in float32, as trainers get the network claimbench builds).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

OPTIMIZERS = ("sgd", "adam", "amsgrad", "adamax", "rmsprop", "adagrad", "adadelta")
# Two phases (the learning rate divided by 10 after the third step), batch 8.
TRAIN = {"unit": "steps", "phases": [3, 2], "batch_size": 8, "snapshots": 2}
TINY = {"width": 0.0625}
# How far a case's numbers may move between machines and torch builds (summation order in
# float64) without being a change of behaviour; measured differences are below 1e-13.
RTOL, ATOL = 1e-9, 1e-12
# The plug-in trainer trains in float32 as users' trainers do: one thread keeps it repeatable,
# other builds may round differently.
RTOL_FLOAT32, ATOL_FLOAT32 = 1e-4, 1e-6
PLUGINS = "tests.golden.plugin:tiny,tests.golden.plugin:plainsgd"


@dataclass(frozen=True)
class Case:
    config: dict
    float64: bool = True
    resume_at: int | None = None  # interrupt after this step, then resume from the checkpoint
    plugins: str | None = None

    @property
    def rtol(self) -> float:
        return RTOL if self.float64 else RTOL_FLOAT32

    @property
    def atol(self) -> float:
        return ATOL if self.float64 else ATOL_FLOAT32


def _config(model: dict | None = None, data: dict | None = None, optim: dict | None = None,
            train: dict | None = None) -> dict:
    return {"model": {**TINY, **(model or {})}, "data": {"dataset": "digits", **(data or {})},
            "optim": {"name": "adam", "regularizer": "l2", "lam": 1e-2, **(optim or {})},
            "train": {**TRAIN, **(train or {})}}


def _cases() -> dict[str, Case]:
    cases = {}
    for name in OPTIMIZERS:
        for reg in ("l2", "wd"):
            cases[f"{name}-{reg}"] = Case(_config(optim={"name": name, "regularizer": reg}))
    cases["adam-none-variants"] = Case(_config(
        model={"activation": "leaky_relu", "negative_slope": 0.1, "bn_beta_init": 0.5},
        optim={"regularizer": "none", "gamma_lr_scale": 0.1, "beta_lr_scale": 2.0, "lr": 3e-3}))
    cases["adam-l2-epochs-noflip"] = Case(_config(data={"flip": False},
                                                  train={"unit": "epochs", "phases": [1, 1],
                                                         "reference_batch_size": 400}))
    cases["adam-l2-tf32"] = Case(_config(train={"precision": "tf32"}))
    cases["shapes-clean"] = Case(_config(data={"dataset": "shapes_clean", "train_size": 64, "test_size": 32,
                                               "num_classes": 4, "image_size": 16}))
    cases["shapes-cluttered"] = Case(_config(data={"dataset": "shapes_cluttered", "train_size": 64,
                                                   "test_size": 32, "num_classes": 4, "image_size": 16}))
    cases["cifar10-basicnet"] = Case(_config(data={"dataset": "cifar10"}))
    cases["cifar100-basicnet"] = Case(_config(data={"dataset": "cifar100"}, optim={"name": "sgd"}))
    for arch in ("vgg11", "vgg16", "vgg19"):
        cases[f"cifar10-{arch}"] = Case(_config(model={"arch": arch}, data={"dataset": "cifar10"}))
    cases["tinyimagenet-basicnet"] = Case(_config(data={"dataset": "tinyimagenet", "image_size": 32}))
    cases["imagenet-basicnet"] = Case(_config(data={"dataset": "imagenet", "image_size": 48}))
    cases["adam-l2-resumed"] = Case(_config(), resume_at=2)
    cases["plugin-trainer"] = Case(
        {"model": {"arch": "goldentiny", "params": {"hidden": 5}}, "data": {"dataset": "digits"},
         "optim": {"name": "sgd", "regularizer": "none"},
         "train": {**TRAIN, "trainer": "goldensgd"}}, float64=False, plugins=PLUGINS)
    return cases


CASES = _cases()


def fabricate_data(root: Path) -> None:
    """The datasets the cases read from files, in their real formats, under ``root``."""
    from tests.golden import fabricate

    fabricate.cifar_archive(root, "cifar10")
    fabricate.cifar_archive(root, "cifar100")
    fabricate.tinyimagenet_folder(root)
    fabricate.imagenet_folder(root)


class Float64Batches:
    """Image-folder data whose batches are decoded per step: the same batches in float64."""

    def __init__(self, data: Any):
        self._data = data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._data, name)

    def train_batch(self, index, flip):  # noqa: ANN001, ANN201
        x, y = self._data.train_batch(index, flip)
        return x.double(), y


@contextlib.contextmanager
def _environment(plugins: str | None) -> Iterator[None]:
    import torch

    threads = torch.get_num_threads()
    saved = os.environ.get("CLAIMBENCH_PLUGINS")
    torch.set_num_threads(1)
    if plugins:
        os.environ["CLAIMBENCH_PLUGINS"] = plugins
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if saved is None:
            os.environ.pop("CLAIMBENCH_PLUGINS", None)
        else:
            os.environ["CLAIMBENCH_PLUGINS"] = saved


class _Interrupted(Exception):
    pass


def run_case(name: str, data_root: Path, checkpoint_dir: Path | None = None) -> dict:
    """Train case ``name`` and return what it computed (JSON-ready)."""
    import torch

    from claimbench.runconfig import run_config_from_dict
    from claimbench.data import load_dataset
    from claimbench.train import train_runs

    case = CASES[name]
    with _environment(case.plugins):
        config = run_config_from_dict(case.config)
        data = load_dataset(config.data, data_root, download=False).to("cpu")
        dtype = None
        if case.float64:
            dtype = torch.float64
            if data.decodes_on_host:
                data = Float64Batches(data)
            else:
                from dataclasses import replace

                data = replace(data, train_x=data.train_x.double(), test_x=data.test_x.double())
        cpu = torch.device("cpu")
        options: dict[str, Any] = {"dtype": dtype, "cuda_graphs": False, "kernels": "plain"}
        if case.resume_at is not None:
            assert checkpoint_dir is not None, "a resumed case needs a folder for its checkpoint"
            checkpoint = checkpoint_dir / f"{name}.pt"

            def stop(step: int, total: int) -> None:
                if step == case.resume_at + 1:
                    raise _Interrupted

            with contextlib.suppress(_Interrupted):
                train_runs([config], data, cpu, on_step=stop, checkpoint=checkpoint, checkpoint_every_s=0.0,
                           **options)
            assert checkpoint.is_file(), "the interrupted run left no checkpoint"
            options.update(checkpoint=checkpoint)
        (outcome,) = train_runs([config], data, cpu, **options)
    return summary(outcome)


def summary(outcome: Any) -> dict:
    import torch

    tensors = {}
    for name, t in sorted(outcome.model.state_dict().items()):
        t = t.detach().to(torch.float64).flatten()
        direction = torch.randn(t.numel(), generator=torch.Generator().manual_seed(t.numel()), dtype=torch.float64)
        tensors[name] = [float(t.sum()), float((t * t).sum()), float(t @ direction)]
    history = outcome.history
    return {"steps": outcome.steps, "loss": [float(x) for x in history.get("loss", [])],
            "lr": [float(x) for x in history.get("lr", [])], "tensors": tensors}


def differences(expected: dict, got: dict, rtol: float, atol: float) -> list[str]:
    """Where ``got`` is not ``expected`` within the tolerance, one line each (empty: the same)."""
    out = []
    if expected.get("steps") != got.get("steps"):
        out.append(f"steps: {expected.get('steps')} -> {got.get('steps')}")
    for curve in ("loss", "lr"):
        a, b = expected.get(curve, []), got.get(curve, [])
        if len(a) != len(b):
            out.append(f"{curve}: {len(a)} points -> {len(b)}")
            continue
        for i, (x, y) in enumerate(zip(a, b)):
            if abs(x - y) > atol + rtol * abs(x):
                out.append(f"{curve}[{i}]: {x!r} -> {y!r}")
                break
    a, b = expected.get("tensors", {}), got.get("tensors", {})
    for name in sorted(set(a) | set(b)):
        if name not in a or name not in b:
            out.append(f"tensor {name}: {'added' if name in b else 'missing'}")
            continue
        for what, x, y in zip(("sum", "sum of squares", "projection"), a[name], b[name]):
            if abs(x - y) > atol + rtol * abs(x):
                out.append(f"tensor {name} {what}: {x!r} -> {y!r}")
                break
    return out
