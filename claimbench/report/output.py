"""Report folders: written whole, and only over what claimbench wrote itself.

In:  the folder a report is asked into (``--out``), a finished rendering in a temporary folder.
Out: ``prepare_output(out, protected)`` (the checks, before anything is rendered) and
     ``replace_output(rendered, out)`` (the swap).

A report folder carries ``MARKER``, a file claimbench writes into every folder it renders, listing
every file and folder claimbench wrote there (one JSON list on its ``files:`` line). A folder that
exists and is not empty is replaced only when everything in it is on that list: a file that is
not (a user's notes, a claims folder, a cache), or a marker claimbench did not write (an empty one, a
copied one that lists less), makes the folder someone else's, and it is refused before anything
is rendered, nothing in it touched. The marker's name alone proves nothing: anyone can create it.
Some folders are refused whatever they hold: the filesystem root, the home folder, the current
folder, and the claims folder and cache root in use (or any folder holding them), since replacing
them would delete the work itself. A marked folder is replaced atomically (the new rendering is
renamed into place, the old one moved aside first and removed only after), so a reader sees the
old report or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterable

MARKER = ".claimbench-report"
MARKER_TEXT = ("This folder was written by claimbench (`claimbench report` / `claimbench verify`). The next report into it "
               "replaces it whole; keep your own files elsewhere: a file not listed below makes claimbench refuse "
               "the folder.\n")
_FILES = "files: "


class OutputRefused(ValueError):
    """An output folder claimbench may not write: a user's folder, a file, the root, unwritable."""


def written_entries(folder: Path) -> list[str]:
    """Every file and folder under ``folder`` (links not followed), as relative POSIX paths,
    the marker left out."""
    found = []
    for top, dirs, files in os.walk(folder):
        rel = Path(top).relative_to(folder)
        found += [(rel / name).as_posix() for name in [*dirs, *files]]
    return sorted(p for p in found if p != MARKER)


def recorded_entries(folder: Path) -> set[str] | None:
    """What the folder's marker says claimbench wrote there; None when there is no marker claimbench wrote."""
    try:
        with open(folder / MARKER, "rb") as f:
            text = f.read(64 << 20).decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    for line in text.splitlines():
        if line.startswith(_FILES):
            try:
                listed = json.loads(line[len(_FILES):])
            except ValueError:
                return None
            if isinstance(listed, list) and all(isinstance(p, str) for p in listed):
                return set(listed)
            return None
    return None


def foreign_entries(folder: Path) -> list[str]:
    """What is in ``folder`` that claimbench did not write there (everything, without a valid marker)."""
    present = written_entries(folder)
    recorded = recorded_entries(folder)
    if recorded is None:
        return present if present or not (folder / MARKER).exists() else []
    return [p for p in present if p not in recorded]


def is_claimbench_output(folder: Path) -> bool:
    """Whether the folder is a report claimbench wrote and holds nothing else."""
    return recorded_entries(folder) is not None and not foreign_entries(folder)


def _refuse_foreign(out: Path) -> None:
    if not any(out.iterdir()):
        return
    if recorded_entries(out) is None:
        raise OutputRefused(f"--out {out}: the folder holds files claimbench did not write (no {MARKER} listing them); "
                            "choose another folder or empty it first")
    foreign = foreign_entries(out)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise OutputRefused(f"--out {out}: the folder holds files claimbench did not write ({shown}); "
                            "choose another folder or move them out first")


def prepare_output(out: Path | str, protected: Iterable[tuple[str, Path | str]] = ()) -> Path:
    """Check that ``out`` can receive a report, creating its parent; nothing is written into
    ``out`` itself. ``protected``: (what, folder) pairs the report may neither be nor hold (the
    claims folder, the cache root). Raises ``OutputRefused`` with one line saying why."""
    if not str(out).strip():
        raise OutputRefused("--out is empty: name the folder the report should go into")
    out = Path(out)
    resolved = out.resolve()
    if resolved == Path(resolved.anchor):
        raise OutputRefused(f"--out {out}: refusing to write a report over {resolved}; name a folder of its own")
    for what, folder in [("the home folder", Path.home()), ("the current folder", Path.cwd()), *protected]:
        folder = Path(folder).resolve()
        if resolved == folder or resolved in folder.parents:
            raise OutputRefused(f"--out {out}: refusing to write a report over {resolved}: it is or holds {what} "
                                f"({folder}), which a report replaces whole; name a folder of its own")
    if out.exists() or out.is_symlink():
        if not out.is_dir() or out.is_symlink():
            raise OutputRefused(f"--out {out}: not a folder (a file or link is there); name a folder")
        _refuse_foreign(out)
    try:
        resolved.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputRefused(f"--out {out}: cannot create {resolved.parent}: {e.strerror or e}") from None
    if not os.access(resolved.parent, os.W_OK | os.X_OK):
        raise OutputRefused(f"--out {out}: {resolved.parent} is not writable")
    return out


def replace_output(rendered: Path, out: Path) -> None:
    """Swap the finished folder ``rendered`` (a sibling of ``out``) into place as ``out``."""
    (rendered / MARKER).write_text(MARKER_TEXT + _FILES + json.dumps(written_entries(rendered)) + "\n")
    rendered.chmod(0o755)
    old = None
    if out.exists():
        _refuse_foreign(out)  # checked again here: the folder may have changed since prepare_output
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:12]}"
        out.rename(old)
    rendered.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
