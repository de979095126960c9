"""A claims folder's own settings: ``repro.yaml`` beside its claims.

In:  a claims folder.
Out: ``folder_plugins(folder)``: the plug-ins its configs may name, written "module:attribute"
     (a ``repro.plugins.ModelPlugin``, ``DatasetPlugin`` or ``TrainerPlugin`` in a module Python
     can import: an installed package, or one on ``PYTHONPATH``); ``use_folder_plugins(folder)`` makes them known
     to this process and the ones it starts, before the folder's configs are validated.

For plug-ins not installed as a package with entry points (a module beside one's experiment,
a package under development). Strict like every other file: unknown keys and names that are not
"module:attribute" are ``file:line`` errors.

Importing a module runs its code, and a claims folder often comes from someone else (a clone, a
download). So the names a folder lists are imported only when the user asks for it:
``--allow-plugins`` on the command line, or ``REPRO_ALLOW_PLUGINS=1`` in the environment (which
worker processes and ``pytest`` inherit). Without it, reading the folder (validate, plan, report,
verify) imports nothing it names and says so once; its configs that use those plug-ins are then
invalid ("unknown architecture"). Plug-ins installed with entry points, or named by the user in
``$REPRO_PLUGINS``, are the user's own choice and need no permission.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from repro.spec.parsing import Problems
from repro.spec.source import SpecError, load_source

log = logging.getLogger(__name__)

FOLDER_FILE = "repro.yaml"
# Set to 1 (by ``--allow-plugins`` or by the user) to import the plug-ins claims folders name.
ALLOW_ENV = "REPRO_ALLOW_PLUGINS"
FOLDER_KEYS = ("plugins",)
_MODULE_ATTRIBUTE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")


def folder_plugins(folder: Path) -> tuple[str, ...]:
    path = Path(folder) / FOLDER_FILE
    if not path.is_file():
        return ()
    source = load_source(path)
    errs = Problems(source)
    raw = source.data
    plugins: list[str] = []
    if not isinstance(raw, dict):
        errs.add("", "expected a mapping with plugins: [module:attribute, ...]")
    else:
        errs.unknown_keys(raw, FOLDER_KEYS, "")
        value = raw.get("plugins", [])
        if not isinstance(value, list):
            errs.add("plugins", "expected a list of \"module:attribute\" names, e.g. [mypkg.models:mlp]")
        else:
            for i, name in enumerate(value):
                if not isinstance(name, str) or not _MODULE_ATTRIBUTE.match(name):
                    errs.add(f"plugins[{i}]", f"expected \"module:attribute\" (e.g. mypkg.models:mlp), got {name!r}")
                else:
                    plugins.append(name)
    if errs.problems:
        raise SpecError(errs.problems)
    return tuple(plugins)


def plugins_allowed() -> bool:
    return os.environ.get(ALLOW_ENV, "") == "1"


# Folders whose withheld plug-ins were already announced: one line per folder and process.
_announced: set[Path] = set()


def use_folder_plugins(folder: Path) -> None:
    names = folder_plugins(folder)
    if not names:
        return
    if not plugins_allowed():
        where = Path(folder).resolve()
        if where not in _announced:
            _announced.add(where)
            log.warning("%s names plug-ins (%s): not imported, since importing runs their code; repro imports "
                        "the plug-ins a claims folder names only with --allow-plugins (or %s=1)",
                        Path(folder) / FOLDER_FILE, ", ".join(names), ALLOW_ENV)
        return
    from repro.plugins import add_named

    add_named(names)
