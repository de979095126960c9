"""What gpu-check checks: the kinds of group a tier forms and the fast features each may use.

In:  the runs a tier plans (``RunConfig``s), grouped as a GPU groups them (``claimbench.plan.groups``).
Out: ``KindCase``s, one per kind of group (dataset x architecture x the optimizers it mixes x
     graphs or not x folder data or not x precision), each with one real group to train; the
     fast features (``FEATURES``) and how the training path gives each up.
"""

from __future__ import annotations

from dataclasses import dataclass

from claimbench.config import DATASET_SHAPES, RunConfig
from claimbench.plan.estimate import run_cost
from claimbench.plan.groups import PlannedRun, form_groups

# CPU (quick) scale: the networks and groups shrunk so every kind runs in seconds.
CPU_WIDTH, CPU_BATCH, CPU_RUNS, CPU_FC, CPU_SIDE = 0.0625, 8, 4, 64, 64

# The fast features, in the order they are given up when the fast path disagrees: the one whose
# loss costs least first (resume is insurance; kernels gain little; graphs more; stacking most).
FEATURES = ("resume", "kernels", "graphs", "stacked")
FEATURE_TEXT = {
    "stacked": "runs stacked in one network",
    "kernels": "fused/foreach optimizer kernels",
    "graphs": "CUDA graphs (capture, replay, capture again per learning-rate phase)",
    "resume": "checkpoint save and resume",
}
# How the training path gives each feature up (``claimbench.group.train_group``), for messages.
FEATURE_OFF = {
    "stacked": "groups of one run (--group-size 1 for every kind)",
    "kernels": "plain (for-loop) optimizer kernels",
    "graphs": "eager steps (no CUDA graph)",
    "resume": "no checkpoint: an interrupted group starts over",
}
# Datasets decoded from image folders for every batch (claimbench.data.folder.FolderImageData): their
# groups take host indices and no CUDA graph.
FOLDER_DATASETS = frozenset({"imagenet"})


@dataclass(frozen=True)
class GroupKind:
    dataset: str
    arch: str
    optimizers: tuple[str, ...]
    folder: bool  # data decoded on the host per batch (no graph)
    graphs: bool  # the step is a CUDA graph on a GPU
    precision: str = "fp32"

    @property
    def id(self) -> str:
        parts = [self.dataset, self.arch, "+".join(self.optimizers),
                 "folder data" if self.folder else "in memory", "graphs" if self.graphs else "no graphs"]
        return " ".join(parts + ([self.precision] if self.precision != "fp32" else []))

    @property
    def family(self) -> str:
        """Which data family it exercises (the CPU default covers one kind of each)."""
        if self.folder:
            return "folder data"
        side = DATASET_SHAPES[self.dataset][1]
        return "digits-like small" if side <= 16 else f"{side}x{side}"


def kind_of(configs: list[RunConfig]) -> GroupKind:
    c = configs[0]
    folder = c.data.dataset in FOLDER_DATASETS
    # Every optimizer here has a capturable step (claimbench.train.optim.GRAPH_SAFE): only folder data
    # keeps a group off graphs. What ran is read back from each outcome's Execution.
    return GroupKind(c.data.dataset, c.model.arch, tuple(sorted({x.optim.name for x in configs})), folder,
                     not folder, c.train.precision)


def own_loop(configs: list[RunConfig]) -> list[RunConfig]:
    """The runs claimbench's loop trains: a registered trainer's fast path is its own, not checked."""
    return [c for c in configs if c.train.trainer is None]


@dataclass(frozen=True)
class KindCase:
    kind: GroupKind
    configs: tuple[RunConfig, ...]  # the representative group, as planned
    groups: int  # groups of this kind in the plan


def kinds_of(configs: list[RunConfig], group_size: int = 16) -> list[KindCase]:
    """Every kind of group the runs form in groups of ``group_size`` (a GPU's), each with one real
    group: the paper's batch of 40 where the kind has it, else its largest group."""
    runs = [PlannedRun("", c, steps=0, flops=run_cost(c)[1]) for c in configs]
    by: dict[GroupKind, list[list[RunConfig]]] = {}
    for g in form_groups(runs, group_size):
        members = [r.config for r in g]
        by.setdefault(kind_of(members), []).append(members)
    cases = []
    for kind, groups in by.items():
        best = min(groups, key=lambda g: (g[0].train.batch_size != 40, -len(g), run_cost(g[0])[1]))
        cases.append(KindCase(kind, tuple(best), len(groups)))
    return sorted(cases, key=lambda c: (c.kind.family, c.kind.id))


def select_kinds(cases: list[KindCase], max_kinds: int | None) -> list[KindCase]:
    """At most ``max_kinds``: one of each data family first (its smallest group), then in order."""
    if max_kinds is None or max_kinds >= len(cases):
        return list(cases)
    first: dict[str, KindCase] = {}
    for c in sorted(cases, key=lambda c: (len(c.configs), c.kind.id)):
        first.setdefault(c.kind.family, c)
    chosen = list(first.values())[:max_kinds]
    chosen += [c for c in cases if c not in chosen][: max_kinds - len(chosen)]
    return sorted(chosen, key=lambda c: (c.kind.family, c.kind.id))

