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
import math
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
PLUGINS = "tests.golden.plugin:tiny,tests.golden.plugin:plainsgd,tests.golden.plugin:stackable,tests.golden.plugin:blobs"


@dataclass(frozen=True)
class Case:
    config: dict
    float64: bool = True
    resume_at: int | None = None  # interrupt after this step, then resume from the checkpoint
    plugins: str | None = None
    # How the interruption at ``resume_at`` comes: "raise" (an exception out of the progress
    # callback), "ctrl-c" (SIGINT: the loop ends the step, saves and stops) or "ctrl-c-twice" (the
    # second SIGINT stops at once: the run resumes from the checkpoint saved the step before).
    interrupt: str = "raise"
    # What sits at the checkpoint path when training starts: "corrupt" (bytes that are no
    # checkpoint: moved aside, training starts from scratch) or "unwritable" (its folder is a file:
    # every save fails and training goes on).
    found_checkpoint: str | None = None
    # Trained as one stacked group with these configs (``config`` is ``group[member]``); what is
    # recorded is that run's outcome.
    group: tuple[dict, ...] = ()
    member: int = 0
    graphs: str | None = None  # a CPU graph backend of tests.golden.eager_graphs.BACKENDS
    kernels: str = "plain"  # the loop's optimizer kernels ("fastest": fused/foreach where they exist)
    # The folder under the fabricated data root that the dataset is read from; None: no root given
    # (the default root, which the embedded datasets do not read).
    data_root: str | None = ""
    # CIFAR downloaded into an empty root (from a file URL serving the fabricated archive, with its
    # md5), checked and extracted, instead of read from the root.
    download: bool = False
    evaluate: bool = False  # also record the trained network's loss on the test split's eval batches
    progress: bool = False  # also record the steps the progress callback was told of
    thread: bool = False  # trained in a thread that is not the main one (no Ctrl-C handler there)
    # The case whose results this one must end at, within the tolerance: another path to the same
    # numbers (stacked, graphed, other kernels, resumed, a checkpoint that fails).
    ends_as: str | None = None

    @property
    def rtol(self) -> float:
        return RTOL if self.float64 else RTOL_FLOAT32

    @property
    def atol(self) -> float:
        return ATOL if self.float64 else ATOL_FLOAT32

    @property
    def configs(self) -> tuple[dict, ...]:
        return self.group or (self.config,)


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
    # The smoke tier flushes denormals to zero (test_golden checks it ends as adam-l2 does).
    cases["adam-l2-ftz"] = Case(_config(train={"flush_denormals": True}))
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
    cases.update(_more_cases(cases))
    return cases


def _group(prefix: str, members: dict[str, dict], **options: Any) -> dict[str, Case]:
    """One case per run of a group trained stacked: ``members`` maps the single-run case each run
    must end as (None: none) to its config."""
    configs = tuple(members.values())
    return {f"{prefix}-{alone or i}": Case(config, group=configs, member=i, ends_as=alone, **options)
            for i, (alone, config) in enumerate(members.items())}


def _more_cases(cases: dict[str, Case]) -> dict[str, Case]:
    """The paths that are not one run of a built-in network on in-memory data: other data layouts
    and sizes, plug-in datasets and stackable plug-in models, stacked groups, the graph path,
    the fastest optimizer kernels, and what interrupts or breaks a checkpoint."""
    out = {}
    out["adam-l2-c1-channels"] = Case(_config(model={"c1_channels": 2}))
    out["cifar10-vgg11-c1-channels"] = Case(_config(model={"arch": "vgg11", "c1_channels": 2},
                                                    data={"dataset": "cifar10"}))
    out["digits-resized-evaluated"] = Case(_config(data={"image_size": 12}), evaluate=True)
    out["cifar10-resized"] = Case(_config(data={"dataset": "cifar10", "image_size": 16}))
    out["cifar100-downloaded"] = Case(cases["cifar100-basicnet"].config, download=True, ends_as="cifar100-basicnet")
    out["shapes-all-classes"] = Case(_config(data={"dataset": "shapes_clean", "train_size": 64, "test_size": 32,
                                                   "num_classes": 16, "image_size": 16}), data_root=None)
    out["tinyimagenet-imagefolder"] = Case(_config(data={"dataset": "tinyimagenet"}), data_root="imagefolder")
    # Batch 4 of 8 images: two batches per epoch, so the loop announces the next one (prefetch).
    # Graphs asked for: none for data decoded on the host per batch.
    out["imagenet-prefetched-evaluated"] = Case(_config(data={"dataset": "imagenet", "image_size": 48},
                                                        train={"batch_size": 4}), evaluate=True, graphs="eager")
    out["plugin-dataset"] = Case(_config(data={"dataset": "goldenblobs"}), plugins=PLUGINS, evaluate=True)

    stack_model = {"arch": "goldenstack", "params": {"widths": [3, 4], "negative_slope": 0.1}}
    alone = {}
    for name, reg, seed in (("sgd", "wd", 1), ("adam", "l2", 2)):
        config = _config(optim={"name": name, "regularizer": reg}, train={"seed": seed})
        alone[name] = {**config, "model": stack_model}  # a plug-in takes no built-in width
    # In float32: trained in float64, a lone plug-in run's network comes back in float64 and a
    # stacked run's in float32 (its build's), so the two records would differ by that rounding.
    for name, config in alone.items():
        out[f"plugin-stackable-{name}"] = Case(config, plugins=PLUGINS, float64=False)
    out.update(_group("plugin-stacked", {f"plugin-stackable-{n}": c for n, c in alone.items()}, plugins=PLUGINS,
                      float64=False))

    singles = ("sgd-l2", "adam-wd", "rmsprop-l2", "adadelta-wd")
    out.update(_group("stacked", {n: cases[n].config for n in singles}))
    # A run whose loss overflows stops being recorded at that step; its neighbour trains on as alone.
    diverging = _config(model={"bn_beta_init": 0.5},
                        optim={"name": "sgd", "lr": 1e30, "gamma_lr_scale": 0.5, "beta_lr_scale": 2.0},
                        train={"precision": "tf32"})
    out.update(_group("diverging", {None: diverging, "adam-l2-tf32": cases["adam-l2-tf32"].config}))
    out.update(_group("stacked-resumed", {n: cases[n].config for n in ("sgd-l2", "adam-wd")}, resume_at=2))

    out["graphed-adam-l2"] = Case(cases["adam-l2"].config, graphs="eager", ends_as="adam-l2")
    out["graph-capture-fails-adam-l2"] = Case(cases["adam-l2"].config, graphs="failing", ends_as="adam-l2")
    # Capturable optimizers (torch's capturable Adam refuses CPU tensors; Adagrad becomes ours).
    out.update(_group("graphed-capturable", {n: cases[n].config for n in ("adagrad-l2", "sgd-wd")},
                      graphs="capturable"))
    # SGD's fused kernel and RMSprop's foreach one. Adam's and Adagrad's fused kernels round
    # differently from the plain ones, which their normalised steps amplify in the fc bias that
    # BatchNorm cancels (a gradient of rounding noise): beyond this suite's tolerance in 5 steps.
    out.update(_group("fastest-kernels", {n: cases[n].config for n in ("sgd-l2", "rmsprop-l2")}, kernels="fastest"))

    adam = cases["adam-l2"].config
    out["adam-l2-resumed-after-ctrl-c"] = Case(adam, resume_at=2, interrupt="ctrl-c", ends_as="adam-l2")
    out["adam-l2-resumed-after-second-ctrl-c"] = Case(adam, resume_at=2, interrupt="ctrl-c-twice", ends_as="adam-l2")
    out["adam-l2-corrupt-checkpoint"] = Case(adam, found_checkpoint="corrupt", ends_as="adam-l2")
    out["adam-l2-unwritable-checkpoint"] = Case(adam, found_checkpoint="unwritable", ends_as="adam-l2")
    out["adam-l2-in-a-thread"] = Case(adam, thread=True, ends_as="adam-l2")
    out["plugin-trainer-progress"] = Case(cases["plugin-trainer"].config, float64=False, plugins=PLUGINS,
                                          progress=True, ends_as="plugin-trainer")
    return out


CASES = _cases()


def fabricate_data(root: Path) -> None:
    """The datasets the cases read from files, in their real formats, under ``root``."""
    from tests.golden import fabricate

    fabricate.cifar_archive(root, "cifar10")
    fabricate.cifar_archive(root, "cifar100")
    fabricate.tinyimagenet_folder(root)
    fabricate.imagenet_folder(root)
    fabricate.tinyimagenet_imagefolder(root / "imagefolder")


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
    from claimbench.train.device import resolve_device
    from tests.golden.eager_graphs import BACKENDS

    case = CASES[name]
    with _environment(case.plugins):
        configs = [run_config_from_dict(c) for c in case.configs]
        with _data_root(case, configs[0].data.dataset, data_root) as root:
            data = load_dataset(configs[0].data, root, download=case.download).to("cpu")
        dtype = None
        if case.float64:
            dtype = torch.float64
            if data.decodes_on_host:
                data = Float64Batches(data)
            else:
                from dataclasses import replace

                data = replace(data, train_x=data.train_x.double(), test_x=data.test_x.double())
        cpu = resolve_device("cpu")
        options: dict[str, Any] = {"dtype": dtype, "cuda_graphs": case.graphs is not None, "kernels": case.kernels}
        if case.graphs is not None:
            options["graph_backend"] = BACKENDS[case.graphs]()
        checkpoint = None
        if case.resume_at is not None or case.found_checkpoint is not None:
            assert checkpoint_dir is not None, "a case with a checkpoint needs a folder for it"
            checkpoint = checkpoint_dir / f"{name}.pt"
        if case.found_checkpoint == "corrupt":
            checkpoint.write_bytes(b"no checkpoint: a file cut short")
        elif case.found_checkpoint == "unwritable":
            checkpoint.write_bytes(b"a file where the checkpoint's folder should be")
            checkpoint = checkpoint / "checkpoint.pt"
            options.update(checkpoint_every_s=0.0)  # try to save after every step
        if case.resume_at is not None:
            _interrupt(case, configs, data, cpu, checkpoint, options)
        if checkpoint is not None:
            options.update(checkpoint=checkpoint)
        progress: list[int] = []
        if case.progress:
            options.update(on_step=lambda step, total: progress.append(step))
        outcome = _train(case.thread, configs, data, cpu, options)[case.member]
        if case.found_checkpoint == "corrupt":
            assert not checkpoint.exists() and list(checkpoint.parent.glob(f"{checkpoint.name}.bad-*")), \
                "the corrupt checkpoint was not moved aside"
        result = summary(outcome)
        if case.evaluate:
            result["test_loss"] = eval_loss(outcome.model, data)
        if case.progress:
            result["progress"] = progress
        if case.graphs is not None:
            # What a stored run's provenance says of graphs: every step after warm-up replayed.
            result["cuda_graphs"] = outcome.execution.provenance(configs[case.member].optim.name)["cuda_graphs"]
    return result


@contextlib.contextmanager
def _data_root(case: Case, dataset: str, data_root: Path) -> Iterator[Path | None]:
    """Where ``case`` reads its data: a folder under ``data_root``, or, to download CIFAR, an empty
    folder and the official source pointed at the fabricated archive (a file URL and its md5)."""
    if not case.download:
        yield None if case.data_root is None else data_root / case.data_root
        return
    import hashlib
    import tempfile
    from dataclasses import replace

    from claimbench.data import cifar

    official = cifar.SOURCES[dataset]
    archive = data_root / official.archive
    local = replace(official, url=archive.resolve().as_uri(), md5=hashlib.md5(archive.read_bytes()).hexdigest())
    cifar.SOURCES[dataset] = local
    try:
        with tempfile.TemporaryDirectory() as empty:
            yield Path(empty) / "data"
    finally:
        cifar.SOURCES[dataset] = official


def _train(thread: bool, configs: list, data: Any, device: Any, options: dict) -> list:
    """``train_runs``, in this thread or in another one."""
    from concurrent.futures import ThreadPoolExecutor

    from claimbench.train import train_runs

    if not thread:
        return train_runs(configs, data, device, **options)
    with ThreadPoolExecutor(1) as other:
        return other.submit(train_runs, configs, data, device, **options).result()


def _interrupt(case: Case, configs: list, data: Any, device: Any, checkpoint: Path, options: dict) -> None:
    """Train ``case`` until it is interrupted after step ``resume_at``, leaving its checkpoint."""
    import signal

    from claimbench.train import train_runs

    def stop(step: int, total: int) -> None:
        if step != case.resume_at + 1:
            return
        if case.interrupt == "raise":
            raise _Interrupted
        signal.raise_signal(signal.SIGINT)  # handled before raise_signal returns
        if case.interrupt == "ctrl-c-twice":
            signal.raise_signal(signal.SIGINT)

    # Ctrl-C once: no periodic checkpoint, so the one resumed from is the one saved on the way out.
    every = 1e9 if case.interrupt == "ctrl-c" else 0.0
    with contextlib.suppress(_Interrupted, KeyboardInterrupt):
        train_runs(configs, data, device, on_step=stop, checkpoint=checkpoint, checkpoint_every_s=every, **options)
        raise AssertionError(f"the run was not interrupted ({case.interrupt})")
    assert checkpoint.is_file(), "the interrupted run left no checkpoint"


def eval_loss(model: Any, data: Any) -> float:
    """The mean cross-entropy of ``model`` over the test split, read by ``eval_batches`` (what the
    measurements read: centre crops for image folders)."""
    import torch
    import torch.nn.functional as F

    dtype = next(model.parameters()).dtype
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in data.eval_batches("test", 3):
            total += float(F.cross_entropy(model(x.to(dtype)), y, reduction="sum"))
            count += int(y.numel())
    return total / count


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


def _close(x: float, y: float, rtol: float, atol: float) -> bool:
    """``y`` is ``x`` within the tolerance; a NaN or infinity only equals itself (a diverged run's)."""
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    if math.isinf(x) or math.isinf(y):
        return x == y
    return abs(x - y) <= atol + rtol * abs(x)


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
            if not _close(x, y, rtol, atol):
                out.append(f"{curve}[{i}]: {x!r} -> {y!r}")
                break
    a, b = expected.get("tensors", {}), got.get("tensors", {})
    for name in sorted(set(a) | set(b)):
        if name not in a or name not in b:
            out.append(f"tensor {name}: {'added' if name in b else 'missing'}")
            continue
        for what, x, y in zip(("sum", "sum of squares", "projection"), a[name], b[name]):
            if not _close(x, y, rtol, atol):
                out.append(f"tensor {name} {what}: {x!r} -> {y!r}")
                break
    if expected.get("progress") != got.get("progress"):
        out.append(f"progress: {expected.get('progress')} -> {got.get('progress')}")
    if expected.get("cuda_graphs") != got.get("cuda_graphs"):
        out.append(f"cuda_graphs: {expected.get('cuda_graphs')} -> {got.get('cuda_graphs')}")
    if "test_loss" in expected or "test_loss" in got:
        x, y = expected.get("test_loss"), got.get("test_loss")
        if x is None or y is None or not _close(x, y, rtol, atol):
            out.append(f"test_loss: {x!r} -> {y!r}")
    return out
