"""Helpers shared by test modules: fabricated data, configs, claim texts and archives that more
than one test module uses, and the repository's root.

This is not a test module (pytest collects nothing here). Test modules import what they share from
here, never from each other, so changing one test file changes no other file's tests. A helper used
by one module only stays in that module. Running commands as another user: tests/other_user.py.
"""

from __future__ import annotations

import io
import json
import pickle
import shutil
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import torch

from claimbench.cache import RunRecord, RunStore, run_key
from claimbench.cache.archive import ARCHIVE_MANIFEST
from claimbench.cache.entry import entry_files
from claimbench.check.kinds import Observations
from claimbench.cli import main
from claimbench.data import cifar as cifar_mod
from claimbench.data.base import ImageData
from claimbench.runconfig import run_config_from_dict
from claimbench.spec.claims import load_claim
from claimbench.spec.run_groups import RunGroup, RunPoint

REPO = Path(__file__).resolve().parents[1]


# --- cache keys (tests/test_cache.py) -----------------------------------------------------

GOLDEN_KEY = "1f177d5e1197848ef59a1574e9f50ed3edd43b59d1f32db51a09d9cdbadad84a"  # cache format 2, train.precision in the config


# --- check kinds on fabricated per-seed values (tests/test_check.py) ------------------------


class Runs:
    """Hand-made run groups with fabricated per-seed metrics."""

    def __init__(self):
        self.groups: dict[str, RunGroup] = {}
        self.metrics: dict[tuple, list] = {}

    def add(self, name, per_seed, paper=None):
        self.groups[name] = RunGroup(name, None, (RunPoint(name, None, (), paper or {}),), None)
        self.metrics[(name, None)] = per_seed
        return self

    def add_axis(self, name, axis, points):
        """points: [(axis value, per-seed metrics, paper)]"""
        self.groups[name] = RunGroup(name, axis, tuple(RunPoint(name, v, (), paper or {}) for v, _, paper in points), None)
        for v, per_seed, _ in points:
            self.metrics[(name, v)] = per_seed
        return self

    def obs(self) -> Observations:
        return Observations(self.groups, lambda group, value: self.metrics[(group.name, value)])


def per_seed(metric, values):
    return [{metric: v, "diverged_at": None} for v in values]


def two(a, b, metric="sparsity_gamma", paper_a=70, paper_b=40) -> Runs:
    return (Runs().add("adam_l2", per_seed(metric, a), {metric: paper_a})
            .add("adam_wd", per_seed(metric, b), {metric: paper_b}))


def sweep(means_per_point, axis_values=(0, 1e-4, 1e-3)) -> Runs:
    return Runs().add_axis("lam_sweep", "optim.lam", [
        (v, per_seed("sparsity_gamma", vals), {"sparsity_gamma": 0}) for v, vals in zip(axis_values, means_per_point)])


LAYERS = [[0, 0, 0, 0, 5, 40, 50], [0, 0, 1, 0, 6, 42, 48], [0, 1, 0, 0, 4, 40, 52]]

BETAS = [  # per seed: per layer, per feature
    [[0.1]] * 5 + [[-1.0, -0.5, 0.2, 0.3], [0.0]],  # C6: 50 % negative
    [[0.1]] * 5 + [[-1.0, 0.0, 0.2, 0.3], [0.0]],  # 25 % (0 is not below 0)
    [[0.1]] * 5 + [[-1.0, -1.0, -1.0, 0.5], [0.0]],  # 75 %
]


# A claim with three runs and three checks, for fabricated cache entries (``fabricate``).
DIVERGE_CLAIM = """\
id: diverge-test
title: fabricated
claim: fabricated
source: {paper: p.txt, where: Table 1}
tiers:
  smoke:
    why: fixture
    base: {model: {width: 0.125}, train: {unit: steps, phases: [10]}}
    seeds: [0, 1, 2]
    runs:
      adam_l2: {set: {optim.regularizer: l2}, paper: {sparsity_gamma: 70}}
      adam_wd: {set: {optim.regularizer: wd}, paper: {sparsity_gamma: 40}}
      sgd_l2: {set: {optim.name: sgd}}
    checks:
      - {kind: greater, metric: sparsity_gamma, a: adam_l2, b: adam_wd, margin: 10}
      - {kind: value, metric: sparsity_gamma, a: adam_l2, tolerance: 5}
      - {kind: less, metric: sparsity_gamma, a: sgd_l2, b: adam_l2}
  full:
    not_run: needs the GPU tier
"""


def fabricate(store, group, values, diverged_seed=None):
    for config, v in zip(group.point().configs, values):
        diverged = config.train.seed == diverged_seed
        metrics = {"diverged_at": 1234, "steps": 1234} if diverged else \
            {"sparsity_gamma": v, "diverged_at": None, "steps": 10}
        store.put(run_key(config), RunRecord(config, metrics, history={}, provenance={}, state_dict=None))


def diverge_claim(tmp_path: Path):
    """DIVERGE_CLAIM loaded from a file in ``tmp_path``, an empty store beside it, and the smoke tier's
    run groups (for ``fabricate``)."""
    path = tmp_path / "claim.yaml"
    path.write_text(DIVERGE_CLAIM)
    spec = load_claim(path)
    store = RunStore(tmp_path / "cache")
    groups = spec.tier("smoke").groups
    return spec, store, groups


# --- training on tiny data (tests/test_loop.py, tests/test_fused.py) -------------------------


def tiny_data(n=48, classes=3, side=8, seed=0) -> ImageData:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.randn(n, 3, side, side, generator=g) + y[:, None, None, None].float()
    return ImageData("tiny", x, y, x[:12].clone(), y[:12].clone(), classes)


def small_config(seed: int, **optim):
    return run_config_from_dict({
        "model": {"width": 0.0625, "pool_after": [1, 3], "bn_beta_init": optim.pop("beta", 0.0)},
        "optim": {"name": "adam", **optim},
        "train": {"unit": "steps", "phases": [8, 4], "batch_size": 8, "snapshots": 2, "seed": seed},
    })


# The bias of an fc layer followed by BatchNorm has a gradient that is zero up to rounding (BN
# subtracts the batch mean); Adam normalises that rounding noise into lr-sized steps, so the
# value is noise either way and has no effect on any output (checked through the metrics). The
# following BN's running mean tracks that bias and carries the same noise.
BN_CANCELLED = {"head.0.bias", "head.1.running_mean"}


# --- CIFAR archives (tests/test_data.py) ---------------------------------------------------


def _pickle_batch(path: Path, data: np.ndarray, labels: np.ndarray, label_key: bytes) -> None:
    batch = {b"batch_label": b"fake", label_key: labels.tolist(), b"data": data}
    if label_key == b"fine_labels":
        batch[b"coarse_labels"] = (labels // 5).tolist()
    path.write_bytes(pickle.dumps(batch, protocol=2))


def make_cifar_archive(where: Path, dataset: str, per_file: int = 4, seed: int = 0):
    """Write the official archive for ``dataset`` with tiny batches; returns (archive, x, y)."""
    src = cifar_mod.SOURCES[dataset]
    rng = np.random.default_rng(seed)
    stage = where / f"stage-{dataset}"
    folder = stage / src.folder
    folder.mkdir(parents=True)
    xs, ys = {}, {}
    for name in src.train_files + (src.test_file,):
        x = rng.integers(0, 256, size=(per_file, 3072), dtype=np.uint8)
        y = rng.integers(0, src.num_classes, size=per_file)
        _pickle_batch(folder / name, x, y, src.label_key)
        xs[name], ys[name] = x, y
    archive = where / src.archive
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=src.folder)
    shutil.rmtree(stage)
    train_x = np.concatenate([xs[n] for n in src.train_files]).reshape(-1, 3, 32, 32)
    train_y = np.concatenate([ys[n] for n in src.train_files])
    test_x = xs[src.test_file].reshape(-1, 3, 32, 32)
    return archive, (torch.from_numpy(train_x), torch.from_numpy(train_y)), (torch.from_numpy(test_x), torch.from_numpy(ys[src.test_file]))


# --- a broken plug-in kit (tests/test_run_failures.py) -------------------------------------

# A claims folder of tiny plug-ins (``write_kit``), four of them broken on purpose; KIT_CASES says
# per broken claim what its run sets, what its check reads and what its error must say.

KIT = '''\
"""Tiny plug-ins, four of them broken on purpose."""

from dataclasses import dataclass

from claimbench.plugins import DatasetPlugin, ModelPlugin, TrainerPlugin, TrainerResult


@dataclass(frozen=True)
class TinyFields:
    width: int = 4


def load(root, seed):
    import numpy as np

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 96)
    x = rng.normal(0, 1, (96, 1, 4, 4)).astype(np.float32) + y[:, None, None, None].astype(np.float32)
    return {"train_x": x[:64], "train_y": y[:64], "test_x": x[64:], "test_y": y[64:]}


def build(in_channels, image_size, num_classes, width=4):
    from torch import nn

    return nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))


def build_nobn(in_channels, image_size, num_classes):
    from torch import nn

    return nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))


def train_nan(run):
    return TrainerResult(run.model.state_dict(), {"score": float("nan")})


def train_shape(run):
    import torch

    state = dict(run.model.state_dict())
    state["net.0.weight"] = torch.zeros(2, 2)
    return TrainerResult(state, {"score": 1.0})


def train_raise(run):
    run.report(1)
    raise RuntimeError("lost the plot at step 1")


tinyset = DatasetPlugin(name="tinyset", load=load, train_size=64, image_size=4, channels=1, classes=2)
tinynet = ModelPlugin(name="tinynet", build=build, fields=TinyFields)
nobn = ModelPlugin(name="nobn", build=build_nobn)
nantrainer = TrainerPlugin(name="nantrainer", train=train_nan, metrics=("score",))
shapetrainer = TrainerPlugin(name="shapetrainer", train=train_shape, metrics=("score",))
raisetrainer = TrainerPlugin(name="raisetrainer", train=train_raise, metrics=("score",))
'''

# A researcher's own short digits run, as a claim's inline base (indented to sit under `base:`).
OWN_RUN_BASE = ("{model: {width: 0.125}, data: {dataset: digits}, optim: {name: adam},\n"
                "           train: {batch_size: 16, unit: steps, phases: [8, 2], snapshots: 1}}")
KIT_BASE = "{model: {arch: tinynet}, data: {dataset: tinyset, flip: false}, " \
           "train: {batch_size: 16, unit: steps, phases: [4], snapshots: 1}}"

# claim id -> (what its one run sets, the metric its check reads, what the error must say).
KIT_CASES = {
    "nan": ("{train.trainer: nantrainer}", "score",
            "trainer nantrainer (brokenkit:nantrainer, brokenkit unversioned): metric score is nan"),
    "shape": ("{train.trainer: shapetrainer}", "score",
              "trainer shapetrainer (brokenkit:shapetrainer, brokenkit unversioned): the weights it returned do "
              "not fit the network"),
    "raise": ("{train.trainer: raisetrainer}", "score",
              "trainer raisetrainer (brokenkit:raisetrainer, brokenkit unversioned): train raised RuntimeError: "
              "lost the plot at step 1 (at brokenkit.py:"),
    "nobn": ("{model.arch: nobn}", "test_error",
             "model plug-in nobn (brokenkit:nobn): the plug-in architecture nobn has no BatchNorm2d layer"),
}


# Two runs that differ only in a plug-in's field: their labels must tell them apart.
KIT_WIDER = textwrap.dedent(f"""\
    id: wider-case
    title: A wider tiny network
    claim: "width 8 trains as width 4 does"
    source: {{paper: notebook, where: H2}}
    tiers:
      smoke:
        why: four steps of a one-conv network on 64 images, at two widths
        base: {KIT_BASE}
        seeds: [0]
        runs:
          narrow: {{}}
          wide: {{set: {{model.params.width: 8}}}}
        checks:
          - {{kind: distribution, a: {{run: wide, metric: test_error}}, min: 0, max: 100}}
    """)


def kit_claim(name: str, sets: str, metric: str) -> str:
    return textwrap.dedent(f"""\
        id: {name}-case
        title: The {name} case
        claim: "a run of the {name} case trains"
        source: {{paper: notebook, where: H1}}
        tiers:
          smoke:
            why: four steps of a one-conv network on 64 images
            base: {KIT_BASE}
            seeds: [0]
            runs:
              r: {{set: {sets}}}
            checks:
              - {{kind: distribution, a: {{run: r, metric: {metric}}}, min: 0, max: 100}}
        """)


def write_kit(root: Path) -> Path:
    (root / "brokenkit.py").write_text(KIT)
    claims = root / "claims"
    claims.mkdir()
    (claims / "claimbench.yaml").write_text("plugins:\n" + "".join(
        f"  - brokenkit:{n}\n" for n in ("tinyset", "tinynet", "nobn", "nantrainer", "shapetrainer", "raisetrainer")))
    (claims / "paper.yaml").write_text("title: Tiny plug-ins\nauthors: [A. Researcher]\nvenue: lab notebook\n"
                                       "documents:\n  notebook: {name: the notebook}\n")
    (claims / "good.yaml").write_text(kit_claim("good", "{}", "test_error"))
    (claims / "wider.yaml").write_text(KIT_WIDER)
    for name, (sets, metric, _) in KIT_CASES.items():
        (claims / f"{name}.yaml").write_text(kit_claim(name, sets, metric))
    return claims


# --- a one-claim folder outside the repository (tests/test_outside.py) ---------------------


TINY_PAPER = """\
title: A Tiny Paper
authors: [Ada Lovelace, Alan Turing]
venue: Fixture 2019
documents:
  fixture2019: {name: the conference paper}
"""
TINY_BASE = """\
model: {arch: basicnet, width: 0.125}
data: {dataset: digits}
optim: {name: adam, regularizer: l2, lam: 1.0e-2}
train: {batch_size: 16, unit: steps, phases: [8, 2], snapshots: 1}
"""
TINY_CLAIM = """\
id: tiny-trains
title: A tiny network trains
claim: "a network trained on digits has a test error"
source: {paper: fixture2019, where: Table 1}
tiers:
  smoke:
    why: one run of 10 steps; the check holds for any trained network
    base: {include: _bases/tiny.yaml}
    seeds: [0]
    runs:
      adam_l2: {}
    checks:
      - {kind: distribution, a: {run: adam_l2, metric: test_error}, min: 0, max: 100}
"""


# --- run configs and cache archives (tests/test_archive_hostile.py, tests/test_cache_cli.py) --


CONFIG_YAML = """\
model: {arch: basicnet, width: 0.125}
data: {dataset: digits}
optim: {name: adam, regularizer: l2, lam: 1.0e-2}
train: {batch_size: 40, unit: steps, phases: [20, 5], snapshots: 2}
"""


def config_from(path: Path, extra: str = ""):
    from claimbench.spec.runfile import load_run_config

    path.write_text(CONFIG_YAML + extra)
    return load_run_config(path, [])


def archive_of(path: Path, entries: dict[str, dict[str, bytes]], header: bytes | None = None,
               extra: list[tuple[str, bytes]] = ()) -> Path:
    """A tar archive laid out as `claimbench cache export` writes it, with whatever files we choose."""
    header = header if header is not None else json.dumps({"format": 1, "keys": sorted(entries)}).encode()
    mode = "w:gz" if path.name.endswith(".gz") else "w"
    with tarfile.open(path, mode) as tar:
        for name, data in [(ARCHIVE_MANIFEST, header), *extra,
                           *[(f"entries/{k}/{n}", d) for k, files in entries.items() for n, d in sorted(files.items())]]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def forged(record: RunRecord, weights: bool = True, **metrics) -> tuple[str, dict[str, bytes]]:
    """The record's entry with invented metrics and a manifest whose checksums match them."""
    key = run_key(record.config)
    fake = RunRecord(record.config, {**record.metrics, **metrics}, record.history, record.provenance,
                     record.state_dict if weights else None)
    return key, entry_files(fake, key)


def import_cli(archive: Path, cache: Path, capsys) -> tuple[int, str, str]:
    rc = main(["cache", "import", str(archive), "--cache-dir", str(cache), "--device", "cpu"])
    out = capsys.readouterr()
    return rc, out.out, out.err
