"""The step-trace detector (claimbench/train/profile.py) is shown each kind of host sync and
host-device copy, inserted into a real traced training step on the ``meta`` device, and must
report it; tests/test_loop_trace.py relies on it to say a step has none."""

from __future__ import annotations

import pytest
import torch

import claimbench.train.loop as loop
from claimbench.train.profile import meta_data, trace_step
from tests.helpers import small_config

DATA = meta_data(n=48, side=8, classes=3)
GROUP = [small_config(0, name="adam", regularizer="l2", lam=1e-3),
         small_config(1, name="sgd", regularizer="wd", lam=1e-3)]


def traced_with(monkeypatch, fault):
    """Trace a steady-state step of GROUP whose step runs ``fault(state)`` after its own work.
    ``trace_step`` runs an untraced first step, then the traced one: only the latter has the fault
    (the former would raise on ``meta`` for any read of a value)."""
    step = loop.step_on_batch
    calls = []

    def faulty(state, data, index, flip):
        step(state, data, index, flip)
        calls.append(state.step)
        if len(calls) == 2:
            fault(state)

    monkeypatch.setattr(loop, "step_on_batch", faulty)
    trace = trace_step(GROUP, DATA)
    assert calls == [0, 1], "trace_step no longer traces its second step: fix this helper"
    return trace


def device_of(state) -> torch.device:
    return state.loss_sum.device


def test_a_clean_step_reports_nothing(monkeypatch):
    trace = traced_with(monkeypatch, lambda state: None)
    assert (trace.copies, trace.blocking_copies, trace.syncs) == ([], [], [])
    assert trace.total_ops > 50


@pytest.mark.parametrize("make", [
    lambda dev: torch.tensor([0.5, 0.5], device=dev),
    lambda dev: torch.as_tensor([0.5, 0.5], device=dev),
    lambda dev: torch.asarray([0.5, 0.5], device=dev),
], ids=["tensor", "as_tensor", "asarray"])
def test_a_tensor_built_from_a_host_list_on_the_device_is_a_copy(monkeypatch, make):
    # torch copies the list's values below the dispatcher: only the function-level recorder sees it.
    trace = traced_with(monkeypatch, lambda state: state.loss_sum.mul_(make(device_of(state))))
    assert len(trace.copies) == 1 and trace.copies[0].endswith("from host data")
    assert trace.blocking_copies == trace.copies and trace.syncs == []


def test_a_tensor_built_from_device_values_is_a_sync(monkeypatch):
    def fault(state):
        torch.tensor([state.loss_sum[0], state.loss_sum[1]], device=device_of(state))

    trace = traced_with(monkeypatch, fault)
    # Each element is read back below the dispatcher, then the values are copied back up.
    assert trace.syncs == ["torch.tensor of device values"]
    assert trace.copies == ["torch.tensor from host data"]


def test_item_is_a_sync(monkeypatch):
    trace = traced_with(monkeypatch, lambda state: state.loss_sum.sum().item())
    assert trace.syncs == ["aten::_local_scalar_dense"] and trace.copies == []


def test_float_of_a_tensor_is_a_sync(monkeypatch):
    trace = traced_with(monkeypatch, lambda state: float(state.loss_sum[0]))
    assert trace.syncs == ["aten::_local_scalar_dense"]


def test_bool_of_a_tensor_is_a_sync(monkeypatch):
    trace = traced_with(monkeypatch, lambda state: bool(state.loss_sum.isfinite().all()))
    assert trace.syncs == ["aten::_local_scalar_dense"]


def test_if_on_a_tensor_is_a_sync(monkeypatch):
    def fault(state):
        if (state.loss_sum > 1e6).any():  # e.g. a divergence check inside the step
            state.loss_sum.zero_()

    trace = traced_with(monkeypatch, fault)
    assert trace.syncs == ["aten::_local_scalar_dense"]


def test_cpu_is_a_copy_and_a_sync(monkeypatch):
    trace = traced_with(monkeypatch, lambda state: state.loss_sum.cpu())
    assert trace.copies == ["aten::_to_copy"]
    assert trace.syncs == trace.blocking_copies == ["aten::_to_copy (device to host)"]


def test_tolist_is_a_copy_and_a_sync(monkeypatch):
    trace = traced_with(monkeypatch, lambda state: state.loss_sum.tolist())
    assert trace.copies == ["aten::_to_copy"] and trace.syncs == ["aten::_to_copy (device to host)"]


def test_copying_into_a_host_tensor_is_a_sync(monkeypatch):
    trace = traced_with(monkeypatch, lambda state: torch.empty(state.runs).copy_(state.loss_sum))
    assert trace.copies == ["aten::copy_"] and trace.syncs == ["aten::copy_ (device to host)"]


def test_a_pageable_host_tensor_moved_to_the_device_is_a_blocking_copy(monkeypatch):
    trace = traced_with(monkeypatch, lambda state: state.loss_sum.add_(torch.ones(state.runs).to(device_of(state))))
    assert trace.copies == ["aten::_to_copy"] and trace.blocking_copies == ["aten::_to_copy"]
    assert trace.syncs == []


def test_non_blocking_from_pageable_memory_still_blocks(monkeypatch):
    trace = traced_with(monkeypatch, lambda state: state.loss_sum.add_(
        torch.ones(state.runs).to(device_of(state), non_blocking=True)))
    assert trace.blocking_copies == ["aten::_to_copy"]


def test_copy_into_a_device_tensor_from_the_host_is_a_copy(monkeypatch):
    trace = traced_with(monkeypatch, lambda state: state.loss_sum.copy_(torch.zeros(state.runs)))
    assert trace.copies == ["aten::copy_"] and trace.blocking_copies == ["aten::copy_"]


def test_pinned_non_blocking_is_a_copy_the_host_does_not_wait_for(monkeypatch):
    # Pinned memory needs a GPU; the detector asks the tensor, so this machine pretends it is.
    monkeypatch.setattr(torch.Tensor, "is_pinned", lambda self, *a, **k: True)
    trace = traced_with(monkeypatch, lambda state: state.loss_sum.add_(
        torch.ones(state.runs).to(device_of(state), non_blocking=True)))
    assert trace.copies == ["aten::_to_copy"] and trace.blocking_copies == []


def test_every_sync_in_a_step_is_counted_not_only_the_first(monkeypatch):
    def fault(state):
        state.loss_sum.sum().item()
        bool(state.loss_sum.any())
        state.loss_sum.cpu()

    trace = traced_with(monkeypatch, fault)
    assert len(trace.syncs) == 3
