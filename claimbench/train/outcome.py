"""What one run's training gives back, whoever trained it.

In:  what the loop or a registered trainer read back after training.
Out: ``TrainOutcome`` (the trained single-run model, its steps, wall time, histories, divergence,
     and either the loop's ``Execution`` or the trainer's metrics and provenance); ``Execution``
     and ``PhaseRun`` (what the loop actually ran, per learning-rate phase); ``bn_snapshot`` (a
     run's BatchNorm gammas and betas, the history the paper's Figure 2 reads).

Both trainers of a run, ``claimbench.train.loop`` and ``claimbench.train.trainer``, build these
records; they live here so that neither has to import the other.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from claimbench.train.models import ConvNet, run_view
from claimbench.train.optim import KernelUsed


@dataclass(frozen=True)
class PhaseRun:
    """How the steps of one learning-rate phase ran in one process (a resumed run starts a new
    record for the phase it resumes in)."""

    phase: int | None  # 0-based learning-rate phase; None: steps before a resume, not recorded
    lr_factor: float | None
    first_step: int
    steps: int
    graphs: bool  # the step was to be a graph (requested and possible)
    warmup_steps: int = 0  # eager steps before the first capture
    captures: int = 0
    replays: int = 0
    eager_steps: int = 0  # steps run eagerly outside warm-up (graphs off, or after a failed capture)
    error: str | None = None  # why capture failed (graphs then stay off for the rest of the run)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Execution:
    """What one group's training actually executed, read back after training (not what was asked
    for): the same for every run of the group but for its optimizer's kernel."""

    device: str  # "cpu", or the GPU's name
    phases: tuple[PhaseRun, ...]
    kernels: tuple[KernelUsed, ...]  # one per optimizer of the group
    fp32_flags: dict  # torch's float32 precision settings as they were at the end
    cudnn_benchmark: bool
    cudnn: int | None  # cuDNN version on CUDA
    torch_threads: int

    @property
    def cuda_graphs(self) -> bool:
        """Every step after warm-up was a graph replay, and no capture failed."""
        return (bool(self.phases) and any(p.replays for p in self.phases)
                and all(p.graphs and p.error is None and p.eager_steps == 0 for p in self.phases))

    def kernel(self, optimizer: str) -> KernelUsed:
        for k in self.kernels:
            if k.optimizer == optimizer:
                return k
        raise KeyError(f"no optimizer {optimizer!r} in this group (has {[k.optimizer for k in self.kernels]})")

    def provenance(self, optimizer: str) -> dict:
        """JSON-ready facts for a run of this group that used ``optimizer``."""
        return {
            "device": self.device,
            "cudnn_benchmark": self.cudnn_benchmark,
            **({"cudnn": self.cudnn} if self.cudnn is not None else {}),
            "fp32_flags": dict(self.fp32_flags),
            "torch_threads": self.torch_threads,
            "optimizer_kernel": self.kernel(optimizer).to_dict(),
            "cuda_graphs": self.cuda_graphs,
            "cuda_graph_phases": [p.to_dict() for p in self.phases],
        }


@dataclass
class TrainOutcome:
    model: ConvNet
    steps: int
    wall_s: float
    history: dict = field(default_factory=dict)
    diverged_at: int | None = None
    execution: Execution | None = None  # None: a registered trainer trained the run, not this loop
    # A registered trainer's run (claimbench.train.trainer): the metrics it reported, and which
    # trainer it was and what it ran on, for provenance.
    trainer_metrics: dict = field(default_factory=dict)
    trainer: dict | None = None


def bn_snapshot(model: ConvNet, run: int = 0) -> dict[str, list[list[float]]]:
    """Run ``run``'s BatchNorm gammas and betas, per conv layer."""
    return {
        "gamma": [run_view(b.bn.weight.detach(), model.runs, run).cpu().tolist() for b in model.blocks],
        "beta": [run_view(b.bn.bias.detach(), model.runs, run).cpu().tolist() for b in model.blocks],
    }
