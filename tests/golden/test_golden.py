"""The behaviour suite: training computes what it computed when the training identity was set.

A failure here means training's numbers changed for some path. If that was meant, run
``make golden-update`` and raise ``TRAINING_SEMANTICS`` as it says (users' runs then retrain); if
not, the change is a bug. A refactor, a moved function or a reworded message passes.
"""

from __future__ import annotations

import json
import math

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


OTHER_PATHS = sorted(name for name, case in CASES.items() if case.ends_as is not None)


@pytest.mark.parametrize("name", OTHER_PATHS)
def test_another_path_ends_as_the_plain_run(name, expected):
    """Stacked with other runs (of other optimizers, or next to one that diverges), through the
    graph path, with the fastest optimizer kernels: a run ends where it ends trained alone by the
    plain loop, within the tolerance (the fast paths are not semantics; this proves them on the
    CPU, ``claimbench gpu-check`` on a GPU). So does a run interrupted and resumed, one that finds
    a corrupt checkpoint or cannot write one, and one whose CIFAR archive was downloaded. (Within
    the tolerance, not exactly: the committed records may come from different machines.)"""
    case = CASES[name]
    trained = ("steps", "loss", "lr", "tensors")  # not what else a case records (how its steps ran)
    alone, other = ({k: expected["cases"][n][k] for k in trained} for n in (case.ends_as, name))
    problems = differences(alone, other, case.rtol, case.atol)
    assert not problems, f"{name} does not end as {case.ends_as}:\n  " + "\n  ".join(problems[:10])


@pytest.mark.parametrize("name", sorted({n for n, c in CASES.items() if c.group and c.member == 0}))
def test_a_stacked_case_is_a_group_the_planner_forms(name):
    """The stacked cases train groups that ``claimbench plan`` would stack: one ``group_key`` and
    every run stackable (a built-in network, or a plug-in that declares it)."""
    from claimbench.config import group_key, stackable
    from claimbench.runconfig import run_config_from_dict
    from tests.golden.cases import _environment

    case = CASES[name]
    with _environment(case.plugins):
        configs = [run_config_from_dict(c) for c in case.group]
        assert all(stackable(c) for c in configs) and len({group_key(c) for c in configs}) == 1


def test_a_trainer_run_is_not_stacked():
    from claimbench.config import stackable
    from claimbench.runconfig import run_config_from_dict
    from tests.golden.cases import _environment

    case = CASES["plugin-trainer"]
    with _environment(case.plugins):
        assert not stackable(run_config_from_dict(case.config))


def test_a_diverged_run_is_recorded_up_to_its_divergence(expected):
    diverged = expected["cases"]["diverging-0"]
    assert diverged["steps"] == len(diverged["loss"]) < expected["cases"]["adam-l2"]["steps"]
    assert not math.isfinite(diverged["loss"][-1]) and all(math.isfinite(x) for x in diverged["loss"][:-1])


@pytest.mark.parametrize("name", ["plugin-dataset", "shapes-all-classes", "digits-resized-evaluated"])
def test_the_data_loads_at_the_shape_planning_reads(name, golden_data):
    """Planning counts steps from a dataset's shape without loading it (``data_shape``: a plug-in's
    declaration, the shapes' configured sizes, a resize); the data training loads has that shape."""
    from claimbench.data import load_dataset
    from claimbench.data.catalog import data_shape
    from claimbench.runconfig import run_config_from_dict
    from tests.golden.cases import _environment

    case = CASES[name]
    with _environment(case.plugins):
        config = run_config_from_dict(case.config)
        data = load_dataset(config.data, golden_data, download=False)
        assert data_shape(config.data) == (data.train_size, data.image_size, data.in_channels, data.num_classes)


def test_flushing_denormals_changes_nothing_where_no_number_is_denormal(expected):
    """The smoke tier's switch: in a float64 run of a few steps almost nothing reaches the denormal
    range, so the flushed run ends where the plain one does, within the suite's tolerance (the last
    digit or two of a few tensors move)."""
    case = CASES["adam-l2-ftz"]
    assert not differences(expected["cases"]["adam-l2"], expected["cases"]["adam-l2-ftz"], case.rtol, case.atol)
