"""A claims folder's own settings: ``claimbench.yaml`` beside its claims.

In:  a claims folder.
Out: ``folder_plugins(folder)``: the plug-ins its configs may name, written "module:attribute"
     (a ``claimbench.plugins.ModelPlugin``, ``DatasetPlugin`` or ``TrainerPlugin`` in a module Python
     can import: an installed package, or one on ``PYTHONPATH``); ``use_folder_plugins(folder)`` makes them known
     to this process and the ones it starts, before the folder's configs are validated.

For plug-ins not installed as a package with entry points (a module beside one's experiment,
a package under development). Strict like every other file: unknown keys, names that are not
"module:attribute", a module that cannot be imported and an attribute that is missing or is no
plug-in declaration are ``file:line`` errors of claimbench.yaml, not of the claims whose configs name
the plug-in (which would blame a claim's line for another file's mistake).

Importing a module runs its code, and a claims folder often comes from someone else (a clone, a
download). So the names a folder lists are imported only when the user asks for it:
``--allow-plugins`` on the command line, or ``CLAIMBENCH_ALLOW_PLUGINS=1`` in the environment (which
worker processes and ``pytest`` inherit). Without it, reading the folder (validate, plan, report,
verify) imports nothing it names and says so once; its configs that use those plug-ins are then
invalid ("unknown architecture"). Plug-ins installed with entry points, or named by the user in
``$CLAIMBENCH_PLUGINS``, are the user's own choice and need no permission.
"""

from __future__ import annotations

import difflib
import importlib
import logging
import os
import re
from pathlib import Path

from claimbench.spec.parsing import Problems
from claimbench.spec.source import SpecError, load_source

log = logging.getLogger(__name__)

FOLDER_FILE = "claimbench.yaml"
# Set to 1 (by ``--allow-plugins`` or by the user) to import the plug-ins claims folders name.
ALLOW_ENV = "CLAIMBENCH_ALLOW_PLUGINS"
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
                elif _stand_in_without(name):
                    continue  # read from stored runs, none of which used it: as if not named
                elif plugins_allowed() and (problem := loading_problem(name)) is not None:
                    # Checked by importing it, so only where the user allowed the folder's code to run.
                    errs.add(f"plugins[{i}]", problem)
                else:
                    plugins.append(name)
    if errs.problems:
        raise SpecError(errs.problems)
    return tuple(plugins)


def _stand_in_without(name: str) -> bool:
    """Whether ``name``'s module stands in for a package not installed here, for reading its
    stored runs (``claimbench.report.stored``), and no stored run recorded this attribute: a plug-in
    that cannot be read, which claims that name it then report as unknown."""
    import sys

    module, _, attribute = name.partition(":")
    loaded = sys.modules.get(module)
    return bool(getattr(loaded, "__claimbench_stand_in__", False)) and not hasattr(loaded, attribute)


def loading_problem(name: str) -> str | None:
    """Why the plug-in named "module:attribute" cannot be loaded (None: it can): its module
    does not import, or the attribute is missing or no plug-in declaration."""
    from claimbench.plugins import DatasetPlugin, ModelPlugin, TrainerPlugin

    module, _, attribute = name.partition(":")
    try:
        loaded = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and (module == e.name or module.startswith(e.name + ".")):
            return (f"{name}: no module named {e.name!r} can be imported here; install its package, or put the "
                    f"folder that holds it on PYTHONPATH")
        return f"{name}: importing {module} failed: ModuleNotFoundError: {e}"
    except Exception as e:  # noqa: BLE001  (any error of the user's module is reported, named)
        return f"{name}: importing {module} failed: {type(e).__name__}: {e}"
    declarations = (ModelPlugin, DatasetPlugin, TrainerPlugin)
    if not hasattr(loaded, attribute):
        known = sorted(k for k, v in vars(loaded).items() if isinstance(v, declarations))
        close = difflib.get_close_matches(attribute, known, n=1)
        return (f"{name}: module {module} has no attribute {attribute!r}"
                + (f" (did you mean {close[0]!r}?)" if close else "")
                + (f"; its plug-ins: {', '.join(known)}" if known else "; it declares no plug-in"))
    value = getattr(loaded, attribute)
    if not isinstance(value, declarations):
        return (f"{name}: names a {type(value).__name__}, expected a claimbench.plugins.ModelPlugin, DatasetPlugin or "
                f"TrainerPlugin")
    return None


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
            log.warning("%s names plug-ins (%s): not imported, since importing runs their code; claimbench imports "
                        "the plug-ins a claims folder names only with --allow-plugins (or %s=1)",
                        Path(folder) / FOLDER_FILE, ", ".join(names), ALLOW_ENV)
        return
    from claimbench.plugins import add_named

    add_named(names)
