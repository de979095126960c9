"""Verdict records and the seed statistics every check decides with.

In:  per-seed values of a metric (one list per selection).
Out: ``Stats`` (mean, std, n), ``CheckResult`` per check and ``Verdict`` per claim.

The tests and intervals refuse (``NonFinite``) values that are empty, NaN or infinite, and
results that come out NaN or infinite: every comparison with NaN is False, so a NaN slipping
through would pass any ``p >= alpha`` or ``ci outside tolerance`` rejection unnoticed. ``Stats``
itself still holds such values, because reports print them as they are.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats as sps

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive"
ERROR = "error"
NOT_RUN = "not run"
# Worst first: a claim's verdict is the worst of its checks'.
SEVERITY = (ERROR, NOT_REPRODUCED, INCONCLUSIVE, REPRODUCED)


class NonFinite(ValueError):
    """Statistics asked of no values or of values that are not all finite numbers, or that came
    out NaN or infinite: nothing can be decided from them."""


def finite_number(x: Any) -> bool:
    """A real number that is neither NaN nor infinite (booleans are not numbers here)."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


@dataclass(frozen=True)
class Stats:
    values: tuple[float, ...]
    label: str = ""  # what the values are (a selection's label), named when they cannot be used

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        # NaN for no values, without numpy's empty-slice warning. The tests and intervals below
        # refuse a NaN mean, and one that overflowed to infinity, which reports still print.
        if not self.values:
            return math.nan
        with np.errstate(over="ignore", invalid="ignore"):
            return float(np.mean(self.values))

    @property
    def std(self) -> float:
        if self.n < 2:
            return 0.0
        with np.errstate(over="ignore", invalid="ignore"):
            return float(np.std(self.values, ddof=1))

    def require_finite(self) -> "Stats":
        """These statistics, if they can decide anything: at least one value, every value, the
        mean and the std finite. Raises NonFinite naming the label otherwise."""
        name = self.label or "values"
        if not self.values:
            raise NonFinite(f"{name}: no values (n=0)")
        bad = next((i for i, v in enumerate(self.values) if not finite_number(v)), None)
        if bad is not None:
            raise NonFinite(f"{name}: value {bad + 1} of {self.n} is {self.values[bad]!r}, not a finite number")
        if not (math.isfinite(self.mean) and math.isfinite(self.std)):
            raise NonFinite(f"{name}: mean {self.mean} / std {self.std} over {self.n} values is not finite (values too large)")
        return self

    def __str__(self) -> str:
        return f"{fmt(self.mean)} ± {fmt(self.std)} (n={self.n})"


def fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return str(x)
    if x == 0:
        return "0"
    if abs(x) >= 100 or abs(x) < 1e-3:
        return f"{x:.3g}"
    return f"{x:.3g}" if abs(x) < 1 else f"{x:.1f}"


def _finite(x: float, what: str) -> float:
    if not math.isfinite(x):
        raise NonFinite(f"{what} is {x}")
    return x


def welch_greater(a: Stats, b: Stats) -> float | None:
    """One-sided Welch t-test p-value for mean(a) > mean(b); None when n < 3 on either side."""
    a.require_finite()
    b.require_finite()
    if a.n < 3 or b.n < 3:
        return None
    if a.std == 0 and b.std == 0:
        return 0.0 if a.mean > b.mean else 1.0
    p = float(sps.ttest_ind(a.values, b.values, equal_var=False, alternative="greater").pvalue)
    return _finite(p, f"Welch p-value of {a.label or 'a'} > {b.label or 'b'}")


def welch_diff_ci(a: Stats, b: Stats, confidence: float = 0.95) -> tuple[float, float] | None:
    """Welch confidence interval of mean(a) - mean(b); None when n < 3 on either side."""
    a.require_finite()
    b.require_finite()
    if a.n < 3 or b.n < 3:
        return None
    diff = a.mean - b.mean
    va, vb = a.std**2 / a.n, b.std**2 / b.n
    se = math.sqrt(va + vb)
    if se == 0:
        return (diff, diff)
    dof = (va + vb) ** 2 / ((va**2 / (a.n - 1)) + (vb**2 / (b.n - 1)))
    t = float(sps.t.ppf(0.5 + confidence / 2, dof))
    what = f"Welch CI of {a.label or 'a'} - {b.label or 'b'}"
    return (_finite(diff - t * se, what), _finite(diff + t * se, what))


def paired_greater(a: Stats, b: Stats) -> float | None:
    """One-sided paired t-test p-value for mean(a - b) > 0 over matching seeds; None when n < 3."""
    a.require_finite()
    b.require_finite()
    if a.n != b.n or a.n < 3:
        return None
    diffs = np.subtract(a.values, b.values)
    what = f"paired p-value of {a.label or 'a'} > {b.label or 'b'}"
    _finite(float(np.abs(diffs).max()), f"largest per-seed difference in the {what}")
    if np.ptp(diffs) <= 1e-9 * max(1.0, float(np.abs(diffs).max())):  # identical up to rounding: no spread to test
        return 0.0 if diffs.mean() > 0 else 1.0
    return _finite(float(sps.ttest_rel(a.values, b.values, alternative="greater").pvalue), what)


def paired_diff_ci(a: Stats, b: Stats, confidence: float = 0.95) -> tuple[float, float] | None:
    """Confidence interval of the mean per-seed difference a - b; None when n < 3."""
    a.require_finite()
    b.require_finite()
    if a.n != b.n or a.n < 3:
        return None
    diffs = np.subtract(a.values, b.values)
    mean, se = float(diffs.mean()), float(diffs.std(ddof=1)) / math.sqrt(len(diffs))
    t = float(sps.t.ppf(0.5 + confidence / 2, len(diffs) - 1))
    what = f"paired CI of {a.label or 'a'} - {b.label or 'b'}"
    return (_finite(mean - t * se, what), _finite(mean + t * se, what))


@dataclass
class CheckResult:
    kind: str
    status: str
    description: str  # what is checked, in words
    arithmetic: str  # the numbers and the comparison that decided
    reason: str = ""
    field_path: str = ""  # claim-file field path of the check
    line: int | None = None
    observed: dict[str, Any] = field(default_factory=dict)  # label -> {mean, std, n, values, paper}
    paper_fails: str = ""  # the claim's stated reason why the paper's own numbers fail this check

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Verdict:
    claim_id: str
    tier: str
    status: str
    reason: str = ""
    checks: list[CheckResult] = field(default_factory=list)

    @classmethod
    def from_checks(cls, claim_id: str, tier: str, checks: list[CheckResult]) -> "Verdict":
        status = REPRODUCED
        for s in SEVERITY:
            if any(c.status == s for c in checks):
                status = s
                break
        reasons = [c.reason for c in checks if c.status == status and c.reason]
        return cls(claim_id, tier, status, "; ".join(dict.fromkeys(reasons)), checks)

    def to_dict(self) -> dict:
        return {"claim_id": self.claim_id, "tier": self.tier, "status": self.status,
                "reason": self.reason, "checks": [c.to_dict() for c in self.checks]}
