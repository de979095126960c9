"""Report folders: written whole, and only over what repro wrote itself.

In:  the folder a report is asked into (``--out``), a finished rendering in a temporary folder.
Out: ``prepare_output(out)`` (the checks, before anything is rendered) and
     ``replace_output(rendered, out)`` (the swap).

A report folder carries ``MARKER``, a file repro writes into every folder it renders. A folder
that exists, is not empty and has no marker belongs to someone else: it is refused before
anything is rendered, and nothing in it is touched. A marked folder is replaced atomically (the
new rendering is renamed into place, the old one moved aside first and removed only after), so a
reader sees the old report or the new one, never half of one.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

MARKER = ".repro-report"
MARKER_TEXT = ("This folder was written by repro (`repro report` / `repro verify`). The next report into it "
               "replaces it whole; keep your own files elsewhere.\n")


class OutputRefused(ValueError):
    """An output folder repro may not write: a user's folder, a file, the root, unwritable."""


def is_repro_output(folder: Path) -> bool:
    return (folder / MARKER).is_file()


def prepare_output(out: Path | str) -> Path:
    """Check that ``out`` can receive a report, creating its parent; nothing is written into
    ``out`` itself. Raises ``OutputRefused`` with one line saying why and what to do."""
    if not str(out).strip():
        raise OutputRefused("--out is empty: name the folder the report should go into")
    out = Path(out)
    resolved = out.resolve()
    if resolved == Path(resolved.anchor) or resolved == Path.home().resolve():
        raise OutputRefused(f"--out {out}: refusing to write a report over {resolved}; name a folder of its own")
    if out.exists() or out.is_symlink():
        if not out.is_dir() or out.is_symlink():
            raise OutputRefused(f"--out {out}: not a folder (a file or link is there); name a folder")
        if any(out.iterdir()) and not is_repro_output(out):
            raise OutputRefused(f"--out {out}: the folder holds files repro did not write (no {MARKER} in it); "
                                "choose another folder or empty it first")
    try:
        resolved.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputRefused(f"--out {out}: cannot create {resolved.parent}: {e.strerror or e}") from None
    if not os.access(resolved.parent, os.W_OK | os.X_OK):
        raise OutputRefused(f"--out {out}: {resolved.parent} is not writable")
    return out


def replace_output(rendered: Path, out: Path) -> None:
    """Swap the finished folder ``rendered`` (a sibling of ``out``) into place as ``out``."""
    (rendered / MARKER).write_text(MARKER_TEXT)
    rendered.chmod(0o755)
    old = None
    if out.exists():
        # Checked again here: the folder may have changed since prepare_output.
        if any(out.iterdir()) and not is_repro_output(out):
            raise OutputRefused(f"--out {out}: the folder holds files repro did not write (no {MARKER} in it); "
                                "choose another folder or empty it first")
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:12]}"
        out.rename(old)
    rendered.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
