"""Each kind a claim file may name is listed once, by the parser, and what evaluates or draws it
is registered against that list.

Check kinds: ``claimbench.spec.checks.CHECK_PARAMS`` (the parameter records) <- the evaluators of
``claimbench.check.kinds.KINDS``. Plot kinds: ``claimbench.spec.plots.PLOT_KINDS`` <- the plotters of
``claimbench.report.plots.PLOTTERS``. The registering module checks the two sides as it loads, so a
kind added to the parser alone, or an evaluator or plotter for a kind the parser does not accept,
stops the import; the tests below inject both faults into the real modules' source.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

import claimbench.check.kinds as check_kinds
import claimbench.report.plots as report_plots
from claimbench.spec.checks import CHECK_PARAMS, CompareParams
from claimbench.spec.plots import PLOT_KINDS, PlotKind
from claimbench.spec.registry import KindsMismatch, registered


def test_every_check_kind_the_parser_accepts_has_an_evaluator_and_no_other():
    assert list(check_kinds.KINDS) and set(check_kinds.KINDS) == set(CHECK_PARAMS)


def test_every_plot_kind_the_parser_accepts_has_a_plotter_and_no_other():
    assert list(report_plots.PLOTTERS) and set(report_plots.PLOTTERS) == set(PLOT_KINDS)


def test_registered_names_both_sides_of_a_mismatch():
    kinds = {"a": 1, "b": 2}
    assert registered(kinds, {"a": "x", "b": "y"}, "thing", "here") == {"a": "x", "b": "y"}
    with pytest.raises(KindsMismatch, match=r"accepts thing\(s\) 'b' that here has nothing for"):
        registered(kinds, {"a": "x"}, "thing", "here")
    with pytest.raises(KindsMismatch, match=r"here registers thing\(s\) 'c' that the parser does not accept"):
        registered(kinds, {"a": "x", "b": "y", "c": "z"}, "thing", "here")


def _load_source(module: types.ModuleType, edit: tuple[str, str] | None = None) -> types.ModuleType:
    """Execute ``module``'s source again as a fresh module (``edit``: one replacement made first)."""
    text = Path(module.__file__).read_text()
    if edit is not None:
        assert edit[0] in text
        text = text.replace(edit[0], edit[1], 1)
    fresh = types.ModuleType(module.__name__ + "_again")
    fresh.__file__ = module.__file__
    sys.modules[fresh.__name__] = fresh  # its dataclasses look their module up there
    try:
        exec(compile(text, module.__file__, "exec"), fresh.__dict__)
    finally:
        del sys.modules[fresh.__name__]
    return fresh


def test_the_modules_load_as_they_are():
    assert set(_load_source(check_kinds).KINDS) == set(CHECK_PARAMS)
    assert set(_load_source(report_plots).PLOTTERS) == set(PLOT_KINDS)


def test_a_check_kind_added_to_the_parser_alone_stops_the_evaluators_import(monkeypatch):
    monkeypatch.setitem(CHECK_PARAMS, "ranking", CompareParams)
    with pytest.raises(KindsMismatch, match="'ranking'"):
        _load_source(check_kinds)


def test_an_evaluator_for_a_kind_the_parser_does_not_accept_stops_the_import():
    with pytest.raises(KindsMismatch, match="'ranking'"):
        _load_source(check_kinds, ('    "greater": Kind(compare),\n',
                                   '    "greater": Kind(compare),\n    "ranking": Kind(compare),\n'))


def test_a_plot_kind_added_to_the_parser_alone_stops_the_plotters_import(monkeypatch):
    monkeypatch.setitem(PLOT_KINDS, "heatmap", PlotKind(("runs",), "runs"))
    with pytest.raises(KindsMismatch, match="'heatmap'"):
        _load_source(report_plots)


def test_a_plotter_for_a_kind_the_parser_does_not_accept_stops_the_import():
    with pytest.raises(KindsMismatch, match="'heatmap'"):
        _load_source(report_plots, ('    "layers": plot_layers,\n',
                                    '    "layers": plot_layers,\n    "heatmap": plot_layers,\n'))
