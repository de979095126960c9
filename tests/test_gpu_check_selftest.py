"""claimbench gpu-check --self-test on the CPU: every kind of fault injected into the fast path is
caught, naming the run and tensor it touched; with the old judgement (the median tensor) in place
of the per-tensor one, the faults that touch one layer are missed and the self-test fails; the
command's exit status says whether every fault was caught."""

from __future__ import annotations

import math
import statistics

import claimbench.gpu_check.selftest as st
from claimbench.cli import main
from claimbench.gpu_check.judge import Tolerance

# The faults that change one tensor of the final state: the median over tensors cannot see them.
ONE_TENSOR = {"one BatchNorm gamma x1.1", "a running variance corrupted (x1.5)",
              "the head perturbed (last linear weight x1.1)", "the last convolution perturbed (x1.2)",
              "two runs' slices swapped (one convolution)"}


def test_every_fault_is_caught_naming_the_run_and_tensor_it_touched():
    said: list[str] = []
    result = st.run_self_test("cpu", say=said.append)
    assert result.ok and result.control.agrees and result.control.worst < 1
    assert len(result.faults) >= 8 and all(r.caught for r in result.faults)
    names = {r.fault for r in result.faults}
    assert ONE_TENSOR < names
    for fault, r in zip(st.FAULTS, result.faults):
        line = r.line()
        assert line.startswith("caught") and line in said and r.verdict.run.startswith("run ")
        if fault.run is not None:
            assert r.verdict.run.startswith(f"run {fault.run} ") or fault.name.startswith("two runs")
        if r.touched and r.touched != "(no outcome)":
            assert r.verdict.tensor == r.touched, (fault.name, r.verdict)
    assert said[-1].startswith(f"self-test: {len(st.FAULTS)} of {len(st.FAULTS)} faults caught")


def median_worst(self, got):
    """The judgement the check had before: the larger of the median tensor's ratio and the loss
    curve's."""
    ratios = self.ratios(got)
    if any(math.isinf(r) for r in ratios.values()):
        return math.inf, "an exact tensor differs"
    tensors = [r for n, r in ratios.items() if n != "loss"]
    median = statistics.median(tensors) if tensors else 0.0
    return max(median, ratios.get("loss", 0.0)), "median tensor"


def test_with_the_median_judgement_the_self_test_reports_the_faults_it_misses(monkeypatch):
    monkeypatch.setattr(Tolerance, "worst", median_worst)
    said: list[str] = []
    result = st.run_self_test("cpu", faults=tuple(f for f in st.FAULTS if f.name in ONE_TENSOR), say=said.append)
    assert not result.ok
    assert {r.fault for r in result.faults if not r.caught} == ONE_TENSOR
    assert sum(line.startswith("MISSED") for line in said) == len(ONE_TENSOR)


def test_the_command_exits_1_when_a_fault_is_missed(monkeypatch, capsys):
    nothing = st.Fault("a fault that changes nothing", corrupt=lambda outcomes: (outcomes, ""))
    monkeypatch.setattr(st, "FAULTS", (st.FAULTS[0], nothing))
    assert main(["gpu-check", "--self-test", "--device", "cpu"]) == 1
    out = capsys.readouterr().out
    assert "caught  one BatchNorm gamma x1.1: run 1" in out and "MISSED  a fault that changes nothing" in out
    assert "self-test: 1 of 2 faults caught" in out
    monkeypatch.setattr(st, "FAULTS", (st.FAULTS[0],))
    assert main(["gpu-check", "--self-test", "--device", "cpu"]) == 0
