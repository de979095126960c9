"""The CUDA path checked without CUDA: one training step traced on the ``meta`` device makes no
host-device copy, no host sync and no CPU tensor, for one run and for a group of 16, with every
optimizer and both regularizers (see claimbench/train/profile.py for what ``meta`` does not cover;
tests/test_sync_detector.py shows the detector each kind of sync and copy it must report)."""

import itertools

import pytest

from claimbench.config import OPTIMIZERS
from claimbench.train.profile import meta_data, trace_step
from tests.helpers import small_config

DATA = meta_data(n=48, side=8, classes=3)
PAIRS = list(itertools.product(OPTIMIZERS, ("l2", "wd")))


def assert_clean(trace):
    assert trace.copies == [] and trace.blocking_copies == [], "host-device copies in a step"
    assert trace.syncs == [], "device values read back in a step"
    assert trace.cpu_created == [], "CPU tensors created in a step"
    assert trace.total_ops > 50  # the step really was traced


@pytest.mark.parametrize("name,reg", PAIRS)
def test_one_run_step_stays_on_the_device(name, reg):
    assert_clean(trace_step([small_config(0, name=name, regularizer=reg, lam=1e-3)], DATA))


def test_a_group_of_16_mixed_runs_stays_on_the_device():
    # All 7 optimizers x both regularizers, plus two more: one group of 16.
    group = [small_config(i, name=n, regularizer=r, lam=1e-3 * (1 + i % 3))
             for i, (n, r) in enumerate(PAIRS + PAIRS[:2])]
    assert len(group) == 16
    assert_clean(trace_step(group, DATA))


def test_the_epoch_is_copied_once_for_the_whole_group():
    group = [small_config(i, name="adam", regularizer="l2", lam=1e-3) for i in range(16)]
    trace = trace_step(group, DATA, epoch_start=True)
    assert trace.syncs == []
    assert len(trace.copies) == 2  # the 16 runs' order, then their flips
    # On meta they are plain copies; on CUDA BatchStream pins them and copies without blocking.
    assert trace.blocking_copies == trace.copies


def test_a_group_step_dispatches_far_fewer_ops_than_its_runs_alone():
    alone = trace_step([small_config(0, name="adam", regularizer="l2", lam=1e-3)], DATA).total_ops
    group = trace_step([small_config(i, name="adam", regularizer="l2", lam=1e-3) for i in range(16)], DATA).total_ops
    assert group < 2 * alone  # 16 runs alone would dispatch 16x
