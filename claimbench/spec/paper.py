"""A claims folder's paper description (``paper.yaml`` beside the claims) -> ``PaperSpec``.

In:  ``<claims folder>/paper.yaml``, written once per folder:

    title: On Implicit Filter Level Sparsity in Convolutional Neural Networks
    authors: [Dushyant Mehta, Kwang In Kim, Christian Theobalt]
    venue: CVPR 2019
    documents:                      # what a claim's `source: {paper: ...}` may name
      cvpr2019:
        name: CVPR 2019 main paper
        url: https://...            # optional
        text: $CLAIMBENCH_PAPERS/main.txt  # optional: a plain-text copy, for checks on `source:`

Out: ``PaperSpec`` (title, authors, venue, documents by the name readers know them by). Claims
cite a document by that name; ``claimbench validate`` rejects any other name (with a did-you-mean),
and the reports take their titles from the description. A document's ``text`` is a path relative
to this file, ``~`` and ``$VARS`` expanded; it is optional because such a copy is rarely part of
the repository (``Document.text_path`` is None when it is not given or not there). A claims folder
may come from someone else, so the copy is read only inside the folder, or wherever a ``$CLAIMBENCH_*``
variable of the user's own environment points (``$CLAIMBENCH_PAPERS/main.txt``), and only its first
``TEXT_LIMIT`` bytes: a path to any other file of the user's is not opened.

The file is also the marker of a claims folder: the pytest plugin collects the ``*.yaml`` of a
folder as claims only when the folder holds one (or when the files are named on the command line).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from claimbench.runconfig import unknown_name_message
from claimbench.spec.source import SpecError, SpecProblem, display_path, load_source

log = logging.getLogger(__name__)

# A paper's plain text is a few hundred KB; a copy is read no further than this.
TEXT_LIMIT = 16 << 20

PAPER_FILE = "paper.yaml"
PAPER_KEYS = {"title", "authors", "venue", "documents"}
DOCUMENT_KEYS = {"name", "url", "text"}
# "Table 1", "Tables 7 and 10", "Figures 2, 3", "Fig. 4": what a `where:` cites.
_CITED = re.compile(r"\b(Table|Figure|Fig\.)s?\s+(\d+(?:\s*(?:,|and|&)\s*\d+)*)", re.IGNORECASE)


def cited(where: str) -> list[str]:
    """The tables and figures a ``where:`` names, each as ``Table 7`` / ``Figure 2``."""
    found = []
    for kind, numbers in _CITED.findall(where):
        kind = "Figure" if kind.lower().startswith("fig") else "Table"
        found += [f"{kind} {n}" for n in re.findall(r"\d+", numbers) if f"{kind} {n}" not in found]
    return found


@dataclass(frozen=True)
class Document:
    id: str  # the name claims cite, e.g. cvpr2019, arxiv-1811.12495
    name: str  # in words, e.g. "CVPR 2019 main paper"
    url: str | None
    text: str | None  # as written in the file (unexpanded)
    base: Path  # folder of the paper description: `text` is relative to it

    def text_path(self) -> Path | None:
        """The plain-text copy, if one is given, exists on this machine and is a place a claims
        folder may point to (inside it, or under a ``$CLAIMBENCH_*`` variable the user set)."""
        if not self.text:
            return None
        expanded = os.path.expandvars(os.path.expanduser(self.text))
        if "$" in expanded:  # an unset variable: no copy on this machine
            return None
        path = self.base / expanded
        users_own = re.match(r"^\$\{?CLAIMBENCH_[A-Za-z0-9_]*", self.text) is not None
        if not users_own and self.base.resolve() not in path.resolve().parents:
            log.warning("the text of %s (%s) is outside the claims folder %s: not read (a $CLAIMBENCH_... variable of "
                        "yours may point outside it)", self.id, self.text, self.base)
            return None
        return path if path.is_file() else None

    def absent_citations(self, where: str) -> list[str] | None:
        """Tables/figures ``where`` names that no caption of the text copy starts with; None without a copy.

        A caption is a line starting with "Table N" / "Figure N". A heuristic for warnings: a
        supplement appended to a main text has captions of both, so it cannot tell them apart.
        """
        path = self.text_path()
        if path is None:
            return None
        with open(path, "rb") as f:
            text = f.read(TEXT_LIMIT).decode("utf-8", errors="replace")
        return [c for c in cited(where) if not re.search(rf"^\s*{c}\b", text, re.MULTILINE)]


@dataclass(frozen=True)
class PaperSpec:
    title: str
    authors: tuple[str, ...]
    venue: str
    documents: dict[str, Document]
    path: Path

    @property
    def citation(self) -> str:
        """``Mehta, Kim & Theobalt (CVPR 2019)``: last names, as a reader cites the paper."""
        last = [a.split()[-1] for a in self.authors]
        names = last[0] if len(last) == 1 else ", ".join(last[:-1]) + " & " + last[-1]
        if len(last) > 3:
            names = f"{last[0]} et al."
        return f"{names} ({self.venue})"

    def check_source(self, paper: str) -> str | None:
        """None if ``paper`` names a document of this description, else what is wrong."""
        if paper in self.documents:
            return None
        return unknown_name_message(f"document (see {display_path(self.path)})", paper, self.documents)


def find_paper(folder: Path) -> PaperSpec | None:
    """The paper description of a claims folder; None when the folder has none."""
    path = Path(folder) / PAPER_FILE
    return load_paper(path) if path.is_file() else None


def load_paper(path: Path) -> PaperSpec:
    """Parse and validate one description; every problem at once, as a SpecError."""
    source = load_source(path)
    problems: list[SpecProblem] = []

    def add(field_path: str, message: str) -> None:
        problems.append(source.problem(field_path, message))

    raw = source.data
    if not isinstance(raw, dict):
        raise SpecError([source.problem("", "a paper description must be a mapping with title, authors, venue, "
                                            "documents")])
    for key in raw:
        if key not in PAPER_KEYS:
            add(str(key), unknown_name_message("key", key, PAPER_KEYS))
    for key in ("title", "venue"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            add(key, "required, a non-empty string")
    authors = raw.get("authors")
    if not isinstance(authors, list) or not authors or not all(isinstance(a, str) and a.strip() for a in authors):
        add("authors", "required, a list of names, e.g. [Dushyant Mehta, Kwang In Kim]")
        authors = []
    documents: dict[str, Document] = {}
    docs_raw = raw.get("documents")
    if not isinstance(docs_raw, dict) or not docs_raw:
        add("documents", "required: a mapping from the name claims cite (e.g. cvpr2019) to {name, url, text}")
        docs_raw = {}
    for doc_id, doc in docs_raw.items():
        fld = f"documents.{doc_id}"
        if not isinstance(doc, dict):
            add(fld, "expected a mapping {name, url (optional), text (optional)}")
            continue
        for key in doc:
            if key not in DOCUMENT_KEYS:
                add(f"{fld}.{key}", unknown_name_message("key", key, DOCUMENT_KEYS))
        if not isinstance(doc.get("name"), str) or not doc["name"].strip():
            add(f"{fld}.name", "required, the document in words (e.g. CVPR 2019 main paper)")
        for key in ("url", "text"):
            if doc.get(key) is not None and not isinstance(doc[key], str):
                add(f"{fld}.{key}", "expected text")
        documents[str(doc_id)] = Document(str(doc_id), str(doc.get("name", "")), doc.get("url"), doc.get("text"),
                                          Path(path).parent)
    if problems:
        raise SpecError(problems)
    return PaperSpec(raw["title"].strip(), tuple(a.strip() for a in authors), raw["venue"].strip(), documents, Path(path))
