"""A claims folder's own settings: ``repro.yaml`` beside its claims.

In:  a claims folder.
Out: ``folder_plugins(folder)``: the plug-ins its configs may name, written "module:attribute"
     (a ``repro.plugins.ModelPlugin``, ``DatasetPlugin`` or ``TrainerPlugin`` in a module Python
     can import: an installed package, or one on ``PYTHONPATH``); ``use_folder_plugins(folder)`` makes them known
     to this process and the ones it starts, before the folder's configs are validated.

For plug-ins not installed as a package with entry points (a module beside one's experiment,
a package under development). Strict like every other file: unknown keys and names that are not
"module:attribute" are ``file:line`` errors.
"""

from __future__ import annotations

import re
from pathlib import Path

from repro.spec.parsing import Problems
from repro.spec.source import SpecError, load_source

FOLDER_FILE = "repro.yaml"
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


def use_folder_plugins(folder: Path) -> None:
    names = folder_plugins(folder)
    if names:
        from repro.plugins import add_named

        add_named(names)
