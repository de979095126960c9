"""The verdict on one fast path: every run's every tensor against its own tolerance.

In:  the fast path's outcomes (one per run), the plain path's and the exact (float64) reference's
     outcomes of the same runs, and a way to train the fast path again in float64.
Out: a ``Verdict``: agrees or not, the worst ratio of distance to tolerance, and the run and
     tensor it names.

Tolerance (``Tolerance``, derived per run, optimizer and precision, never a fixed number).
Both paths compute the same arithmetic in a different order (grouped vs single convolutions,
fused vs per-parameter updates), so they differ by rounding: about one unit roundoff u per
operation (fp32: u = 2**-24; TF32 convolutions and matmuls round their operands to 10 mantissa
bits: u = 2**-11), which training then amplifies step after step by a factor no one can assume.
It is measured: every plain run trains again in float64 from the same float32 initial weights on
the same images (``exact_reference``), and the plain run's distance from that exact arithmetic,
per tensor (weights, BatchNorm gammas, betas and running statistics) and for the loss curve, is
its *spread*: how much rounding the precision makes and training grows. A correct fast path is
about as far from exact as the plain path, so fast and plain are about one or two spreads apart;
a fast-path run may differ by ``SAFETY`` (30) x the spread, floored at ``FLOOR_ULPS`` (64) x u.

Every tensor is judged, not a summary of them: a fault that touches one layer (every BatchNorm
gamma 10% off, the paper's measured quantity; a stale running variance; a head slice in the wrong
place) leaves most tensors alone, so a median over tensors would pass it.

A discrete event (a ReLU or max-pool decision flipping under rounding) can carry one run far past
any rounding-sized tolerance, and when it happens early the whole run follows it (measured on the
CPU: one of three runs of a shrunk VGG-19 group at 170x, and one of four runs of a shrunk BasicNet
group with its median tensor at 88x, while the same steps in float64 are bit-identical). So a
float32 disagreement is confirmed in float64: the fast path trains again in float64 and every
tensor of every run is judged against the exact reference with the same tolerance; float64
rounding is 2**29 times finer, so what remains there is a fault of the arithmetic (a lost,
repeated or misplaced step, a wrong slice, a scaled parameter). Float64 cannot see lost precision
(TF32 or Winograd/FFT convolutions where float32 was asked for: they do not exist in float64), and
lost precision strikes every run of a group where a discrete event strikes runs one by one: so a
group whose every run disagrees in float32 is never excused (fail closed). A group of one is
confirmed in float64 like any other: it has no stacking, where a stacked group's grouped
convolutions could take another algorithm family than the plain path's, and its fast path runs
the plain path's convolutions, so lost precision there is not expected, and blaming a feature for
a discrete event would switch off checkpoints for the longest runs.

Distance: for a float tensor ||a - b|| / ||b|| (the relative L2 distance: robust to single
elements near zero) over all but its largest 5% elementwise differences (a ReLU or max-pool
decision that flips under rounding moves a few elements, say 2 of a BatchNorm's 64 betas, by a
fraction of an Adam step, 1e-4, which no rounding-sized spread covers; a fault that loses, repeats
or corrupts steps moves most elements), integer tensors (BatchNorm's batch counter) must be equal,
the loss curve by the median of |a - b| / |b| over its points (every step's loss of every run).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

UNIT_ROUNDOFF = {"fp32": 2.0 ** -24, "tf32": 2.0 ** -11}
SAFETY = 30.0
FLOOR_ULPS = 64.0
# Each tensor's largest 5% of elementwise differences are left out of its distance (tensors of at
# least 20 elements; see ``distances``).
TRIM, TRIM_MIN = 0.05, 20


def distances(a, b) -> dict[str, float]:
    """Per tensor of the run's state (weights, BatchNorm statistics) and for its loss curve:
    relative L2 distance of ``a`` from ``b``; integer tensors: 0 if equal, inf if not."""
    import torch

    out: dict[str, float] = {}
    sa, sb = a.model.state_dict(), b.model.state_dict()
    for name in sb:
        x, y = sa[name].detach().cpu(), sb[name].detach().cpu()
        if not y.is_floating_point():
            out[name] = 0.0 if torch.equal(x, y) else math.inf
            continue
        gaps = (x - y).double().abs().flatten()
        if gaps.numel() >= TRIM_MIN:
            # A discrete event (a ReLU or max-pool decision flipping under rounding) moves a few
            # elements by an lr-sized step; left out. A systematic fault moves most of them.
            gaps = gaps.sort().values[: gaps.numel() - math.ceil(TRIM * gaps.numel())]
        diff = torch.linalg.vector_norm(gaps).item()
        norm = torch.linalg.vector_norm(y.double()).item()
        out[name] = diff / norm if norm > 0 else (0.0 if diff == 0 else math.inf)
    la, lb = a.history.get("loss", []), b.history.get("loss", [])
    if len(la) != len(lb):
        out["loss"] = math.inf
    else:
        # The median over the curve's points: one point after a discrete event is not a fault; a
        # fault shifts the curve from its step on.
        gaps = sorted(abs(p - q) / max(abs(q), 1e-30) for p, q in zip(la, lb))
        out["loss"] = gaps[len(gaps) // 2] if gaps else 0.0
    if (a.diverged_at is None) != (b.diverged_at is None):
        out["diverged"] = math.inf
    return out


@dataclass(frozen=True)
class Tolerance:
    """How far a fast-path run may be from its plain run, per tensor: ``SAFETY`` x the measured
    spread, at least ``FLOOR_ULPS`` x the precision's unit roundoff (module docstring)."""

    precision: str
    spread: dict[str, float]

    @property
    def floor(self) -> float:
        return FLOOR_ULPS * UNIT_ROUNDOFF[self.precision]

    def of(self, name: str) -> float:
        if name == "diverged":
            return 0.0
        s = self.spread.get(name, 0.0)
        if math.isinf(s) and name != "loss":
            return 0.0  # an integer tensor: must be equal
        return max(self.floor, SAFETY * (s if math.isfinite(s) else 0.0))

    def ratios(self, got: dict[str, float]) -> dict[str, float]:
        """Each tensor's (and the loss curve's) distance over its own tolerance; an integer
        tensor or divergence that differs at all is infinitely far."""
        return {name: ((0.0 if d == 0 else math.inf) if self.of(name) == 0 else d / self.of(name))
                for name, d in got.items()}

    def worst(self, got: dict[str, float]) -> tuple[float, str]:
        """(the verdict's ratio, the tensor it names): the largest ratio over every tensor and the
        loss curve; above 1 disagrees. One tensor is enough: a fault may touch one layer only."""
        ratios = self.ratios(got)
        if not ratios:
            return 0.0, "nothing compared"
        top = max(ratios, key=lambda n: ratios[n])
        return ratios[top], (f"{top} differs" if math.isinf(ratios[top]) else top)


def tolerance_of(plain_run, exact_run, precision: str) -> Tolerance:
    """The spread of a plain run: its distance per tensor from the exact-arithmetic run."""
    return Tolerance(precision, distances(plain_run, exact_run))


def run_name(i: int, config) -> str:
    """How a verdict names a run: its place in the group, optimizer, regularizer and seed."""
    o = config.optim
    return f"run {i} ({o.name} {o.regularizer} {o.lam:g}, seed {config.train.seed})"


@dataclass(frozen=True)
class Verdict:
    """One fast path judged. ``run`` and ``tensor`` name the worst (the float64 one when float64
    convicted it); ``why`` says why it disagrees, or how a float32 disagreement was excused."""

    agrees: bool
    worst: float
    run: str = ""
    tensor: str = ""
    why: str = ""

    @property
    def where(self) -> str:
        return f"{self.run}: {self.tensor}" if self.run else self.why


def _per_run(outcomes: Sequence, reference: Sequence, tolerances: Sequence[Tolerance],
             names: Sequence[str]) -> list[tuple[float, str, str]]:
    """Per run: (worst ratio, its tensor, run name)."""
    out = []
    for got, want, tol, name in zip(outcomes, reference, tolerances, names):
        worst, tensor = tol.worst(distances(got, want))
        out.append((worst, tensor, name))
    return out


def _lost(outcomes: Sequence, names: Sequence[str], where: str) -> Verdict | None:
    """A fast path that returns fewer (or more) outcomes than it has runs lost a run: zipping
    would judge only the runs that came back."""
    if len(outcomes) == len(names):
        return None
    run = names[len(outcomes)] if len(outcomes) < len(names) else f"{len(outcomes) - len(names)} extra run(s)"
    return Verdict(False, math.inf, run, "(no outcome)",
                   f"{where} returned {len(outcomes)} outcomes for {len(names)} runs")


def judge(fast, plain, exact, tolerances: Sequence[Tolerance], names: Sequence[str],
          confirm: Callable[[], object]) -> Verdict:
    """``fast`` (a Trained) against ``plain``, every run's every tensor against its tolerance; a
    float32 disagreement that moved a few tensors is confirmed by ``confirm()`` (the same fast
    path in float64) against ``exact`` (module docstring)."""
    if fast.error is not None:
        return Verdict(False, math.inf, why=f"raised {fast.error}")
    lost = _lost(fast.outcomes, names, "the fast path")
    if lost is not None:
        return lost
    runs = _per_run(fast.outcomes, plain.outcomes, tolerances, names)
    worst, tensor, run = max(runs, key=lambda r: r[0])
    if worst <= 1:
        return Verdict(True, worst, run, tensor)
    said = f"{run}: {tensor} at {worst:.3g}x its tolerance"
    beyond = sum(r[0] > 1 for r in runs)
    if beyond == len(runs) > 1:
        return Verdict(False, worst, run, tensor,
                       f"{said}; {beyond} of {len(runs)} runs beyond it (every run: lost precision or a fault, "
                       "which float64 cannot excuse)")
    again = confirm()
    if again.error is not None:
        return Verdict(False, worst, run, tensor, f"{said}; in float64 it raised {again.error}")
    lost = _lost(again.outcomes, names, "the fast path in float64")
    if lost is not None:
        return lost
    w64, t64, r64 = max(_per_run(again.outcomes, exact.outcomes, tolerances, names), key=lambda r: r[0])
    if w64 > 1:
        return Verdict(False, w64, r64, t64, f"{said}; in float64 too: {r64}: {t64} at {w64:.3g}x")
    return Verdict(True, worst, run, tensor,
                   f"{said}: {beyond} of {len(runs)} runs beyond the float32 tolerance, every tensor of every "
                   f"run within it in float64 (worst {w64:.2g}x): rounding through a discrete event")
