"""The paper-scale estimate a user plans GPU time on: the whole tier (claims and tables), per part
and in total, fp32 and TF32, measured or modelled, next to the device's physical limit."""

from __future__ import annotations

import importlib.util
import json
import statistics
from dataclasses import replace

import pytest

from claimbench.cache import RunStore
from claimbench.cli import main
from claimbench.machine.peaks import ACHIEVABLE_FRACTION, match_gpu, parse_peak_tflops
from claimbench.dry_run import dry_run_plan
from claimbench.dry_run import measured_step_times
from claimbench.machine.target import estimate_target
from claimbench.plan import Plan, plan_runs
from claimbench.plan.estimate import part_of
from claimbench.plan.groups import group_id
from claimbench.plan.step_times import STEADY_STATE, StepTime, StepTimes, steady_step_time, unsteady_steps
from claimbench.spec.claims import claim_files, load_claims
from claimbench.spec.table_folder import load_tables, table_files
from tests.helpers import REPO

FULL_TIER_RUNS = 374  # the claims' runs and the paper tables' runs, deduplicated


@pytest.fixture(scope="module")
def paper():
    return load_claims(claim_files(REPO / "claims")), load_tables(table_files(REPO / "claims" / "tables"))


@pytest.fixture
def no_gpu(monkeypatch):
    """This machine as one without a GPU, whatever it has."""
    monkeypatch.setattr("claimbench.machine.detect.gpu_names", lambda: [])
    monkeypatch.setattr("claimbench.machine.detect.detected_device", lambda: "cpu")


def full_plan(paper, tmp_path, target=None) -> Plan:
    specs, tables = paper
    plan = plan_runs(specs, "full", RunStore(tmp_path / "cache"), "cpu", tables=tables)
    if target is not None:
        plan.target = target
    return plan


# -- the same 374 runs everywhere -------------------------------------------------------------


def test_plan_dry_run_and_step_profile_plan_the_same_full_tier(paper, tmp_path, no_gpu):
    specs, tables = paper
    store = RunStore(tmp_path / "cache")
    planned = plan_runs(specs, "full", store, "cuda", tables=tables)
    dry = dry_run_plan(specs, "full", store, "cuda", tables)
    assert len(planned.runs) == len(dry.runs) == FULL_TIER_RUNS
    assert [r.key for r in planned.runs] == [r.key for r in dry.runs]
    # Without the tables the claims alone need fewer: the count above is not the claims' alone.
    assert len(plan_runs(specs, "full", store, "cuda").runs) < FULL_TIER_RUNS

    spec = importlib.util.spec_from_file_location("step_profile", REPO / "benchmarks" / "step_profile.py")
    step_profile = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(step_profile)
    groups = step_profile.full_tier_groups(16)
    assert sum(len(g) for g in groups) == FULL_TIER_RUNS


def test_verify_dry_run_plans_what_plan_plans(tmp_path, monkeypatch, capsys, no_gpu):
    """``claimbench verify --tier full --dry-run`` hands the dry run the paper's tables (the dry run
    itself is replaced: only what it would plan is counted)."""
    import claimbench.dry_run

    seen = {}

    def fake_dry_run(specs, claim_paths, tier, store, steps, executor, device="auto", data_root=None,
                     group_size=None, k=None, out=None, progress=True, tables=()):
        seen["runs"] = len(dry_run_plan(specs, tier, store, "cpu", tables).runs)
        return 0

    monkeypatch.setattr(claimbench.dry_run, "dry_run", fake_dry_run)
    monkeypatch.chdir(tmp_path)
    cache = ["--cache-dir", str(tmp_path / "cache"), "--claims-dir", str(REPO / "claims")]
    assert main(["verify", "--tier", "full", "--dry-run", *cache]) == 0
    capsys.readouterr()
    assert main(["plan", "--tier", "full", "--json", *cache]) == 0
    planned = json.loads(_json_tail(capsys))
    assert seen["runs"] == planned["total_runs"] == FULL_TIER_RUNS


def _json_tail(capsys) -> str:
    out = capsys.readouterr().out
    return out[out.index("{"):]


# -- parts, precisions, limits ---------------------------------------------------------------


def test_parts_sum_to_the_total_and_tf32_is_faster_on_an_h100(paper, tmp_path, no_gpu):
    plan = full_plan(paper, tmp_path, estimate_target("full", "cpu", gpu="H100"))
    parts, total = plan.part_estimates()
    assert [p.part for p in parts] == ["CIFAR BasicNet", "VGG on CIFAR", "TinyImageNet", "ImageNet"]
    assert {part_of(r.config) for r in plan.runs} == {p.part for p in parts}
    assert sum(p.runs for p in parts) == total.runs == FULL_TIER_RUNS
    assert sum(p.flops for p in parts) == pytest.approx(total.flops) == pytest.approx(sum(r.flops for r in plan.runs))
    for prec in ("fp32", "tf32"):
        assert sum(getattr(p, prec).seconds for p in parts) == pytest.approx(getattr(total, prec).seconds)
        assert sum(getattr(p, prec).limit_seconds for p in parts) == pytest.approx(getattr(total, prec).limit_seconds)
    for row in [*parts, total]:
        assert row.fp32.seconds > row.tf32.seconds > 0
        assert row.fp32.source == row.tf32.source == "modelled"
        for e in (row.fp32, row.tf32):
            assert e.ratio is None  # the share a modelled row would show is the model's own assumption
    # The physical limit is the FLOPs at the datasheet peak (H100 SXM: 67 fp32, 494.5 TF32 dense).
    assert total.fp32.limit_seconds == pytest.approx(total.flops / 67e12)
    assert total.tf32.limit_seconds == pytest.approx(total.flops / 494.5e12)
    # Modelled from FLOPs and a share of the peak, not from a per-step overhead.
    assert total.fp32.seconds == pytest.approx(total.flops / (ACHIEVABLE_FRACTION["fp32"] * 67e12))


def test_a_modelled_row_prints_its_basis_not_a_ratio_and_a_measured_row_its_share(paper, tmp_path, no_gpu):
    """The share of the peak is a finding only where measured: a modelled row's is the model's
    assumption (always 57% or 15%), said as one, with the basis under the table."""
    from claimbench.cache import run_key
    from claimbench.config import RunConfig
    from claimbench.plan import MODEL_BASIS, parts_table
    from claimbench.plan.estimate import run_cost
    from claimbench.plan.groups import PlannedRun

    text = parts_table(full_plan(paper, tmp_path, estimate_target("full", "cpu", gpu="H100")), only_missing=False)
    rows = [line for line in text.splitlines() if line.startswith(("CIFAR", "VGG", "Tiny", "ImageNet", "total"))]
    assert len(rows) == 5 and "peak/est." not in text and "0.57" not in text and "0.15" not in text
    assert all(row.count("57% assumed") == 1 and row.count("15% assumed") == 1 for row in rows)
    assert MODEL_BASIS in text and "grouped convolutions" in MODEL_BASIS

    config = replace(RunConfig(), train=replace(RunConfig().train, unit="steps", phases=(1000,)))
    phases = graphed_phases((20,))
    record = type("Record", (), {"provenance": {"group_size": 16, "cuda_graph_phases": phases,
                                                 "dry_run": {"step_ends": stamps([0.05] * 20), "measured_at": "x"}}})
    store = type("Store", (), {"get": lambda self, key: record})()
    from claimbench.machine.peaks import match_gpu
    from claimbench.machine.target import Target

    here = Target("cuda", "NVIDIA H100 SXM", match_gpu("H100"), True)  # as if this machine were the H100
    plan = Plan("full", [PlannedRun(run_key(config), config, [], False, *run_cost(config))], "cuda", target=here)
    plan.step_times = measured_step_times(plan, store)
    _, total = plan.part_estimates(only_missing=False)
    assert total.fp32.source == "measured" and 0 < total.fp32.ratio < 1
    assert f"{total.fp32.ratio:.2f} measured" in parts_table(plan, only_missing=False)


def test_peak_tflops_overrides_the_table(paper, tmp_path, no_gpu, capsys):
    target = estimate_target("full", "cpu", gpu="H100", peak_tflops="10,40")
    assert (target.peak.fp32_tflops, target.peak.tf32_tflops, target.peak.source) == (10.0, 40.0, "--peak-tflops")
    _, total = full_plan(paper, tmp_path, target).part_estimates()
    assert total.fp32.limit_seconds == pytest.approx(total.flops / 10e12)
    assert total.tf32.limit_seconds == pytest.approx(total.flops / 40e12)
    argv = ["plan", "--tier", "full", "--json", "--cache-dir", str(tmp_path / "cache"), "--claims-dir", str(REPO / "claims")]
    assert main([*argv, "--gpu", "H100", "--peak-tflops", "10,40"]) == 0
    out = json.loads(_json_tail(capsys))
    assert out["target"]["peak_fp32_tflops"] == 10.0 and out["target"]["peak_tf32_tflops"] == 40.0
    assert main([*argv, "--peak-tflops", "10,x"]) == 2
    assert "'x' is not a number" in capsys.readouterr().err


def test_unknown_device_says_peak_unknown(paper, tmp_path, no_gpu, capsys):
    target = estimate_target("full", "cpu", gpu="Radeon Pro W7900")
    assert target.peak is None
    parts, total = full_plan(paper, tmp_path, target).part_estimates()
    for row in [*parts, total]:
        for e in (row.fp32, row.tf32):
            assert (e.seconds, e.limit_seconds, e.ratio, e.source) == (None, None, None, "modelled, peak unknown")
    assert main(["plan", "--tier", "full", "--gpu", "Radeon Pro W7900", "--cache-dir", str(tmp_path / "cache"),
                 "--claims-dir", str(REPO / "claims")]) == 0
    out = capsys.readouterr().out
    assert "modelled, peak unknown" in out and "no time estimate on Radeon Pro W7900" in out
    # With its peaks given, the same device is estimated.
    known = estimate_target("full", "cpu", gpu="Radeon Pro W7900", peak_tflops="61")
    _, total = full_plan(paper, tmp_path, known).part_estimates()
    assert total.fp32.seconds is not None and total.tf32.source == "modelled (no TF32: as fp32)"


def test_full_tier_on_a_cpu_is_modelled_for_an_h100(tmp_path, no_gpu, capsys):
    target = estimate_target("full", "cpu")
    assert (target.kind, target.name, target.here) == ("cuda", "NVIDIA H100 SXM", False)
    assert "no GPU on this machine" in target.note
    assert estimate_target("smoke", "cpu").kind == "cpu"  # the smoke tier runs on this CPU
    assert estimate_target("full", "cpu", gpu="a100").name == "NVIDIA A100"
    assert main(["plan", "--tier", "full", "--cache-dir", str(tmp_path / "cache"), "--claims-dir",
                 str(REPO / "claims")]) == 0
    out = capsys.readouterr().out
    assert "estimate for NVIDIA H100 SXM (not this machine; no GPU on this machine" in out
    assert f"{FULL_TIER_RUNS} runs, 0 cached" in out and "in 50 groups" in out


@pytest.mark.parametrize("name, expected", [
    ("NVIDIA H100 80GB HBM3", "NVIDIA H100 SXM"), ("NVIDIA H100 PCIe", "NVIDIA H100 PCIe"),
    ("NVIDIA H200", "NVIDIA H200 SXM"), ("NVIDIA A100-SXM4-80GB", "NVIDIA A100"),
    ("NVIDIA A100 80GB PCIe", "NVIDIA A100"), ("NVIDIA L40S", "NVIDIA L40S"), ("NVIDIA A10", "NVIDIA A10"),
    ("NVIDIA GeForce RTX 4090", "NVIDIA GeForce RTX 4090"), ("Tesla V100-SXM2-16GB", "NVIDIA V100 SXM2"),
    ("Tesla V100-PCIE-32GB", "NVIDIA V100 PCIe"), ("Tesla T4", "NVIDIA T4"), ("h100-pcie", "NVIDIA H100 PCIe"),
    ("NVIDIA A10G", None), ("AMD Instinct MI300X", None),
])
def test_device_names_match_the_peak_table(name, expected):
    peak = match_gpu(name)
    assert (peak.name if peak else None) == expected
    if peak is not None:
        assert peak.fp32_tflops > 0 and (peak.tf32_tflops is None or peak.tf32_tflops >= peak.fp32_tflops)


@pytest.mark.parametrize("text", ["", "0", "-5", "abc", "1,2,3", "nan", "inf", "10,"])
def test_malformed_peak_tflops_is_refused(text):
    with pytest.raises(ValueError, match="--peak-tflops"):
        parse_peak_tflops(text)


# -- steady-state step times -----------------------------------------------------------------


def graphed_phases(steps: tuple[int, ...], warmups: int = 3) -> list[dict]:
    """What the loop records for a graphed GPU group: 3 eager warm-ups, a capture per phase."""
    out, first = [], 0
    for i, n in enumerate(steps):
        w = warmups if i == 0 else 0
        out.append({"phase": i, "lr_factor": 0.1 ** i, "first_step": first, "steps": n, "graphs": True,
                    "warmup_steps": w, "captures": 1, "replays": n - w, "eager_steps": 0, "error": None})
        first += n
    return out


def stamps(durations: list[float]) -> list[list]:
    """``step_ends`` as train_group records them: after each step, steps done and seconds."""
    t, out = 0.0, []
    for i, d in enumerate(durations):
        t += d
        out.append([i + 1, t])
    return out


def test_warmup_and_capture_steps_do_not_move_the_calibration(tmp_path):
    phases = graphed_phases((5, 3))
    assert unsteady_steps(phases, 8) == {0, 1, 2, 3, 5}  # 3 warm-ups, a capture in each phase
    steady = [0.01] * 8
    slow = [1.0 if i in (0, 1, 2, 3, 5) else 0.01 for i in range(8)]  # warm-ups and captures 100x slower
    even = steady_step_time({"step_ends": stamps(steady), "measured_at": "now"}, phases, 16)
    skewed = steady_step_time({"step_ends": stamps(slow), "measured_at": "now"}, phases, 16)
    assert skewed.step_s == pytest.approx(even.step_s) == pytest.approx(0.01)
    assert skewed.steps == 3 and skewed.method == STEADY_STATE
    # What the guard prevents: the median over every timed step is 100x too slow here.
    gaps = [b - a for (_, a), (_, b) in zip(stamps(slow), stamps(slow)[1:])]
    assert statistics.median(gaps) == pytest.approx(1.0)

    # Through measured_step_times and the plan: the estimate is the same with or without them.
    from claimbench.cache import run_key
    from claimbench.config import RunConfig
    from claimbench.plan.estimate import run_cost
    from claimbench.plan.groups import PlannedRun

    config = replace(RunConfig(), train=replace(RunConfig().train, unit="steps", phases=(1000,)))
    estimates = []
    for durations in (steady, slow):
        record = type("Record", (), {"provenance": {"group_size": 16, "cuda_graph_phases": phases,
                                                     "dry_run": {"step_ends": stamps(durations), "measured_at": "x"}}})
        store = type("Store", (), {"get": lambda self, key: record})()
        plan = Plan("full", [PlannedRun(run_key(config), config, [], False, *run_cost(config))], "cpu")
        plan.step_times = measured_step_times(plan, store)
        assert set(plan.step_times) == {group_id(config)}
        estimates.append(plan.estimate())
    assert estimates[0].source == estimates[1].source == "measured"
    assert estimates[1].seconds == pytest.approx(estimates[0].seconds) == pytest.approx(0.01 / 16 * 1000)


def test_too_few_steps_leave_nothing_to_time():
    """The old default of 5 steps (4 + 1 over two phases) on a graphed group: 3 warm-ups and two
    captures, no steady step. Not judged, rather than calibrated on warm-ups."""
    phases = graphed_phases((4, 1))
    assert steady_step_time({"step_ends": stamps([1.0] * 5)}, phases, 16) is None
    # No phase records (a record the loop did not describe): not judged either.
    assert steady_step_time({"step_ends": stamps([0.01] * 20)}, None, 16) is None
    # A CPU group (no graphs): only the first step is left out, and it is never timed anyway.
    cpu = [{"phase": 0, "lr_factor": 1.0, "first_step": 0, "steps": 4, "graphs": False, "warmup_steps": 0,
            "captures": 0, "replays": 0, "eager_steps": 4, "error": None},
           {"phase": 1, "lr_factor": 0.1, "first_step": 4, "steps": 1, "graphs": False, "warmup_steps": 0,
            "captures": 0, "replays": 0, "eager_steps": 1, "error": None}]
    t = steady_step_time({"step_ends": stamps([5.0, 0.2, 0.2, 0.2, 0.2])}, cpu, 4)
    assert (t.step_s, t.steps) == (pytest.approx(0.2), 4)


def test_the_default_dry_run_on_a_gpu_leaves_steady_steps_on_every_graphed_group(paper, tmp_path, no_gpu):
    """``claimbench verify --dry-run`` without --steps: on a GPU every full-tier run's shrunk schedule
    leaves steps after the warm-ups and the capture of each phase (5 steps left none)."""
    from claimbench.dry_run import default_steps
    from claimbench.group import dry_run_config

    assert default_steps("cpu") == 5
    for run in full_plan(paper, tmp_path).runs:
        phases = dry_run_config(run.config, default_steps("cuda")).train.phases
        total = sum(phases)
        assert len(set(range(total)) - unsteady_steps(graphed_phases(phases), total)) >= 10, (run.config.summary(), phases)


def test_step_times_measured_with_warmups_are_not_trusted(tmp_path):
    path = tmp_path / "step-times.json"
    path.write_text(json.dumps({"m": {"old": {"step_s": 9.0, "group_size": 16, "steps": 4, "measured_at": "then"},
                                      "new": {"step_s": 0.5, "group_size": 16, "steps": 15, "measured_at": "now",
                                              "method": STEADY_STATE}}}))
    assert set(StepTimes(tmp_path).load("m")) == {"new"}
    StepTimes(tmp_path).save("m", {"newer": StepTime(0.4, 16, 15, "now")})
    assert set(StepTimes(tmp_path).load("m")) == {"new", "newer"}
