"""The kinds a claim file may name, and the parts of higher layers registered against them.

In:  the parser's record of one family of kinds, by name (check kinds:
     ``claimbench.spec.checks.CHECK_PARAMS``; plot kinds: ``claimbench.spec.plots.PLOT_KINDS``),
     and what a higher layer does for each kind, by name (``claimbench.check.kinds.KINDS``
     evaluates checks, ``claimbench.report.plots.PLOTTERS`` draws plots).
Out: that mapping, unchanged, once it covers exactly the parser's kinds; otherwise
     ``KindsMismatch`` naming the kinds on one side only.

The parser owns the list of kinds: it sits below the evaluator and the report (``.importlinter``),
so they register against its names, never the other way round. Registering at import means a kind
added to the parser alone stops the evaluator's module from loading (and every test with it),
instead of passing ``claimbench validate`` and failing later with a KeyError on the first claim
that uses it; a typo in the registering module fails the same way.
"""

from __future__ import annotations

from typing import Mapping, TypeVar

T = TypeVar("T")


class KindsMismatch(RuntimeError):
    """The kinds registered with a parser's record are not the kinds it accepts."""


def registered(kinds: Mapping[str, object], implementations: dict[str, T], what: str, by: str) -> dict[str, T]:
    """``implementations`` (kind name -> ``by``'s part for it), after checking it names every kind of
    ``kinds`` (the parser's record of ``what``, e.g. "check kind") and no other."""
    missing = [k for k in kinds if k not in implementations]
    unknown = [k for k in implementations if k not in kinds]
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"the parser accepts {what}(s) {', '.join(map(repr, missing))} that {by} has nothing for")
        if unknown:
            parts.append(f"{by} registers {what}(s) {', '.join(map(repr, unknown))} that the parser does not accept")
        raise KindsMismatch("; ".join(parts))
    return implementations
