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
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats as sps

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive"
ERROR = "error"
NOT_RUN = "not run"
# How a status reads where the claims are about one's own experiment, not a paper's: there is
# nothing to reproduce, a claim holds or it does not. Only the words shown change; the status
# itself (JSON, exit codes, pytest's outcome and user property) is the same.
EXPERIMENT_WORDS = {REPRODUCED: "holds", NOT_REPRODUCED: "does not hold"}
# The fewest seeds per side a significance test is made with (below it the margin alone decides).
TEST_SEEDS = 3
# Worst first: a claim's verdict is the worst of its checks'.
SEVERITY = (ERROR, NOT_REPRODUCED, INCONCLUSIVE, REPRODUCED)


# The mark beside a verdict, a check or a table cell whose numbers were not measured here.
UNVERIFIED_MARK = "⚠️ "


def status_words(status: str, paper: bool = True) -> str:
    """How ``status`` reads: as it is for a paper's claims; "holds" / "does not hold" for claims
    about one's own experiment (``paper`` False). The other statuses read the same in both."""
    return status if paper else EXPERIMENT_WORDS.get(status, status)


class NonFinite(ValueError):
    """Statistics asked of no values or of values that are not all finite numbers, or that came
    out NaN or infinite: nothing can be decided from them."""


def finite_number(x: Any) -> bool:
    """A real number that is neither NaN nor infinite (booleans are not numbers here)."""
    if not isinstance(x, numbers.Real) or isinstance(x, bool):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:  # an integer beyond float range: no number a check can compare
        return False


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


# --- arithmetic as a report shows it ----------------------------------------------------------
# fmt rounds each number on its own, so "1.996 - 1.492 = 0.504" came out as "2.0 - 1.5 = 0.504".
# A piece of arithmetic is shown at one number of decimals instead: the most that fmt would give
# any of its numbers, more where needed to keep a result on the side of a bound it was decided
# on, and its results are computed from the operands as shown, so the shown numbers add up.
MAX_DECIMALS = 10


def fmt_decimals(x: float) -> int:
    """The decimals fmt shows ``x`` with, counted as fixed point (three significant digits for
    numbers in scientific notation below 1e-3, none above 100)."""
    if not math.isfinite(x) or x == 0:
        return 0
    if abs(x) < 1e-3:
        return min(MAX_DECIMALS, 2 - math.floor(math.log10(abs(x))))
    text = fmt(x)
    return 0 if "e" in text or "." not in text else len(text.split(".", 1)[1])


def fixed(x: float, decimals: int) -> str:
    """``x`` with ``decimals`` decimals; an exact zero is "0", as fmt writes it."""
    if not math.isfinite(x):
        return str(x)
    if x == 0:
        return "0"
    text = f"{x:.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


@dataclass(frozen=True)
class Shown:
    """One piece of arithmetic as shown: its operands and the results computed from them as
    rounded, as text at one number of decimals."""

    decimals: int
    operands: tuple[str, ...]
    results: tuple[str, ...]
    result_values: tuple[float, ...]


def show_arithmetic(operands: list[float], derive, bounds: tuple[tuple[int, float], ...] = ()) -> Shown:
    """``derive(operands)`` -> results, shown so that a reader's arithmetic on the shown operands
    gives the shown results, and each (result index, bound) pair is on the same side of the bound
    as the unrounded result the check decided on (a 20.04 > 20 must not read 20.0 > 20)."""
    exact = list(derive(list(operands)))
    start = max([fmt_decimals(x) for x in (*operands, *exact)] or [0])

    def side(x: float, bound: float) -> int:
        return (x > bound) - (x < bound)

    for d in range(start, MAX_DECIMALS + 1):
        got = [round(v, d) for v in derive([round(x, d) for x in operands])]
        if all(side(got[i], b) == side(exact[i], b) for i, b in bounds):
            break
    return Shown(d, tuple(fixed(x, d) for x in operands), tuple(fixed(x, d) for x in got), tuple(got))


def _finite(x: float, what: str) -> float:
    if not math.isfinite(x):
        raise NonFinite(f"{what} is {x}")
    return x


def _scipy_test(test, what: str) -> float:
    """``test()``'s p-value, refused when scipy says it lost the precision to compute it (nearly
    identical values of large magnitude: "catastrophic cancellation"), as when it is not finite."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        try:
            p = float(test().pvalue)
        except RuntimeWarning as w:
            raise NonFinite(f"{what} cannot be computed reliably: {w}") from None
    return _finite(p, what)


def welch_greater(a: Stats, b: Stats) -> float | None:
    """One-sided Welch t-test p-value for mean(a) > mean(b); None when n < 3 on either side."""
    a.require_finite()
    b.require_finite()
    if a.n < TEST_SEEDS or b.n < TEST_SEEDS:
        return None
    if a.std == 0 and b.std == 0:
        return 0.0 if a.mean > b.mean else 1.0
    return _scipy_test(lambda: sps.ttest_ind(a.values, b.values, equal_var=False, alternative="greater"),
                       f"Welch p-value of {a.label or 'a'} > {b.label or 'b'}")


def welch_diff_ci(a: Stats, b: Stats, confidence: float = 0.95) -> tuple[float, float] | None:
    """Welch confidence interval of mean(a) - mean(b); None when n < 3 on either side."""
    a.require_finite()
    b.require_finite()
    if a.n < TEST_SEEDS or b.n < TEST_SEEDS:
        return None
    diff = a.mean - b.mean
    va, vb = a.std**2 / a.n, b.std**2 / b.n
    se = math.sqrt(va + vb)
    if se == 0:
        return (diff, diff)
    # Welch-Satterthwaite degrees of freedom, (va + vb)^2 / (va^2/(na-1) + vb^2/(nb-1)), with the
    # variances taken as shares of their sum: squaring 1e77-sized variances would overflow.
    ra, rb = va / (va + vb), vb / (va + vb)
    dof = 1.0 / (ra**2 / (a.n - 1) + rb**2 / (b.n - 1))
    t = float(sps.t.ppf(0.5 + confidence / 2, dof))
    what = f"Welch CI of {a.label or 'a'} - {b.label or 'b'}"
    return (_finite(diff - t * se, what), _finite(diff + t * se, what))


def paired_greater(a: Stats, b: Stats) -> float | None:
    """One-sided paired t-test p-value for mean(a - b) > 0 over matching seeds; None when n < 3."""
    a.require_finite()
    b.require_finite()
    if a.n != b.n or a.n < TEST_SEEDS:
        return None
    diffs = np.subtract(a.values, b.values)
    what = f"paired p-value of {a.label or 'a'} > {b.label or 'b'}"
    _finite(float(np.abs(diffs).max()), f"largest per-seed difference in the {what}")
    if np.ptp(diffs) <= 1e-9 * max(1.0, float(np.abs(diffs).max())):  # identical up to rounding: no spread to test
        return 0.0 if diffs.mean() > 0 else 1.0
    return _scipy_test(lambda: sps.ttest_rel(a.values, b.values, alternative="greater"), what)


def paired_diff_ci(a: Stats, b: Stats, confidence: float = 0.95) -> tuple[float, float] | None:
    """Confidence interval of the mean per-seed difference a - b; None when n < 3."""
    a.require_finite()
    b.require_finite()
    if a.n != b.n or a.n < TEST_SEEDS:
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
    robustness: str = ""  # a robustness row (what it varies): reported, never deciding the verdict

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Verdict:
    claim_id: str
    tier: str
    status: str
    reason: str = ""
    checks: list[CheckResult] = field(default_factory=list)
    # Runs whose numbers the checks read that were not trained or re-measured here (an import
    # without weights or data, an entry found in a cache this user did not fill): the verdict
    # rests on someone else's word and says so wherever it is read (``unverified_note``).
    unverified: int = 0

    @classmethod
    def from_checks(cls, claim_id: str, tier: str, checks: list[CheckResult]) -> "Verdict":
        status = REPRODUCED
        deciding = [c for c in checks if not c.robustness]
        for s in SEVERITY:
            if any(c.status == s for c in deciding):
                status = s
                break
        reasons = [c.reason for c in deciding if c.status == status and c.reason]
        return cls(claim_id, tier, status, "; ".join(dict.fromkeys(reasons)), checks)

    @property
    def fewest_seeds(self) -> int | None:
        """The fewest seeds a selection had in the checks that decided the verdict (those with the
        verdict's status: every check of a reproduced claim, the failing ones of a claim that is
        not), None when nothing was compared. A passing check on two seeds does not make a
        failure decided on three read as a two-seed verdict."""
        checks = [c for c in self.checks if not c.robustness]
        deciding = [c for c in checks if c.status == self.status] or checks
        ns = [o["n"] for c in deciding for o in c.observed.values() if isinstance(o.get("n"), int)]
        return min(ns) if ns else None

    def seeds_note(self) -> str:
        """Says so when the verdict rests on fewer than TEST_SEEDS seeds somewhere: no
        significance test was made there, the margin or tolerance alone decided."""
        n = self.fewest_seeds
        if n is None or n >= TEST_SEEDS or self.status in (ERROR, NOT_RUN):
            return ""
        return f"decided on {n} seed{'s' if n != 1 else ''}: fewer than {TEST_SEEDS}, so no significance test"

    def unverified_note(self) -> str:
        """"on N unverified runs" when the verdict rests on numbers not measured here, else ""."""
        if not self.unverified or self.status == NOT_RUN:
            return ""
        return f"on {self.unverified} unverified run{'s' if self.unverified != 1 else ''}: numbers not measured here"

    def to_dict(self) -> dict:
        return {"claim_id": self.claim_id, "tier": self.tier, "status": self.status,
                "reason": self.reason, "unverified_runs": self.unverified,
                "checks": [c.to_dict() for c in self.checks]}
