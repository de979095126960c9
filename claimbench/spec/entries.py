"""Lists of mappings in a claim file (``scope:``, ``out_of_scope:``, ``assume:``, a region's
``exceptions:``, a tier's ``plots:``), each entry read the same way.

In:  a raw YAML value, the field it sits at, the keys an entry may have and the ``Problems`` of
     the file.
Out: the entries that are mappings, each with its field (``scope[2]``); an entry that is not a
     mapping, and every key of one that its kind of entry does not take (with a did-you-mean),
     is a problem reported at its field. Written once so that every list of a claim file
     answers a misspelt key or a stray scalar with the same words.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

from claimbench.spec.parsing import Problems


def entry_list(raw: Any, fld: str, expected: str, errs: Problems) -> list:
    """A non-empty list at ``fld`` (absent: empty), else the problem (``expected ...``) and an
    empty list."""
    if raw is None:
        return []
    if not isinstance(raw, list) or not raw:
        errs.add(fld, f"expected {expected}")
        return []
    return raw


def entry_mapping(raw: Any, fld: str, keys: Sequence[str], what: str, errs: Problems) -> dict | None:
    """One entry: a mapping whose keys are among ``keys`` (``what`` names such a key in the
    did-you-mean: "key of an exception"). None when it is no mapping; unknown keys are reported
    and the mapping is still returned, so its other fields are judged too."""
    if not isinstance(raw, dict):
        errs.add(fld, "expected a mapping {" + ", ".join(keys) + "}")
        return None
    errs.unknown_keys(raw, keys, fld, what)
    return raw


def entry_mappings(entries: list, fld: str, keys: Sequence[str], what: str,
                   errs: Problems) -> Iterator[tuple[str, dict]]:
    """``(field, mapping)`` for each entry of ``entries`` that is one (see ``entry_mapping``)."""
    for i, raw in enumerate(entries):
        efld = f"{fld}[{i}]"
        entry = entry_mapping(raw, efld, keys, what, errs)
        if entry is not None:
            yield efld, entry


def entry_text(raw: dict, key: str, fld: str, errs: Problems) -> str:
    """The required text at ``raw[key]``, its whitespace runs made single spaces; "" (and the
    problem at ``fld.key``) when it is absent or blank."""
    v = raw.get(key)
    if not isinstance(v, str) or not v.strip():
        errs.add(f"{fld}.{key}", "required, non-empty text")
        return ""
    return " ".join(v.split())
