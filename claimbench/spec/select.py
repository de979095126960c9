"""``-k EXPR`` over claims, with pytest's own keyword-expression machinery.

In:  ClaimSpecs, a tier and a ``-k`` expression (``amsgrad or batch``, ``not vgg``, ``adam and l2``).
Out: the claims the expression selects; the same claims ``pytest claims/ -k EXPR`` runs.

pytest matches ``-k`` against the names of an item and its parents and the names of its markers,
case-insensitively as substrings. ``claim_keywords`` lists those names for a claim as the plugin
(``claimbench.pytest_plugin``) collects it: the item (the claim id), its file, the folder holding it,
the tier marker, and ``skip`` when the tier is not run. The expression itself is parsed and
evaluated by pytest's ``Expression``, so the grammar cannot drift from pytest's.
"""

from __future__ import annotations

from _pytest.mark import KeywordMatcher
from _pytest.mark.expression import Expression

from claimbench.spec.claims import ClaimSpec
from claimbench.spec.source import SpecError, SpecProblem


def claim_keywords(spec: ClaimSpec, tier: str) -> set[str]:
    names = {spec.id, spec.path.name, spec.path.resolve().parent.name, tier}
    if spec.tier(tier).not_run:
        names.add("skip")
    return names


def select_by_keyword(specs: list[ClaimSpec], expr: str, tier: str) -> list[ClaimSpec]:
    try:
        compiled = Expression.compile(expr)
    except SyntaxError as e:  # pytest reports a bad -k expression as a SyntaxError
        raise SpecError([SpecProblem("-k", None, "", f"bad expression {expr!r}: {e}")]) from None
    return [s for s in specs if compiled.evaluate(KeywordMatcher(frozenset(claim_keywords(s, tier))))]
