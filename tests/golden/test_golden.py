"""The behaviour suite: training computes what it computed when the training identity was set.

A failure here means training's numbers changed for some path. If that was meant, run
``make golden-update`` and raise ``TRAINING_SEMANTICS`` as it says (users' runs then retrain); if
not, the change is a bug. A refactor, a moved function or a reworded message passes.
"""

from __future__ import annotations

import json

import pytest

from claimbench.train.semantics import TRAINING_SEMANTICS
from tests.golden.cases import CASES, differences, fabricate_data, run_case
from tests.golden.update import EXPECTED


@pytest.fixture(scope="session")
def golden_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("golden-data")
    fabricate_data(root)
    return root


@pytest.fixture(scope="session")
def expected() -> dict:
    return json.loads(EXPECTED.read_text())


def test_the_results_are_of_this_training_identity(expected):
    assert expected["semantics"] == TRAINING_SEMANTICS, (
        f"{EXPECTED.name} holds results for training identity {expected['semantics']}, the code says "
        f"{TRAINING_SEMANTICS}: raise TRAINING_SEMANTICS in claimbench/train/semantics.py to {expected['semantics']} "
        "if training's behaviour changed on purpose, or run make golden-update")
    assert sorted(expected["cases"]) == sorted(CASES), "make golden-update records the cases added or removed"


@pytest.mark.parametrize("name", sorted(CASES))
def test_training_computes_what_it_computed(name, golden_data, expected, tmp_path):
    case = CASES[name]
    got = run_case(name, golden_data, tmp_path)
    problems = differences(expected["cases"][name], got, case.rtol, case.atol)
    assert not problems, f"{name}: training computes other numbers:\n  " + "\n  ".join(problems[:10])


def test_a_resumed_run_ends_as_the_uninterrupted_one(expected):
    """Resume is semantics too: interrupted after step 2 and resumed, the run ends exactly where
    the same run without interruption ends."""
    assert CASES["adam-l2-resumed"].config == CASES["adam-l2"].config
    assert not differences(expected["cases"]["adam-l2"], expected["cases"]["adam-l2-resumed"], 0.0, 0.0)
