"""claimbench gpu-check on the CPU: the command runs every feature but graphs and writes its report; a
feature that disagrees (a graph backend whose replay steps twice) is caught, switched off for its
kind, recorded, announced and honoured by the training path; ``verify --tier full`` checks the
kinds of its plan the record lacks, and only those; the tolerance is derived per precision."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import claimbench.claims_cli as claims_cli
import claimbench.gpu_check as gc
import claimbench.gpu_check.record as record_module
from claimbench.cache.trained_here import record_mark
from claimbench.gpu_check.selftest import EagerGraphs
from claimbench.cli import main
from claimbench.runconfig import run_config_from_dict

CPU = torch.device("cpu")


def run_cli(*argv: str) -> int:
    try:
        return main(list(argv))
    except SystemExit as e:  # argparse
        return int(e.code or 0)


def group(n: int = 2, dataset: str = "cifar10", names=("adam", "sgd")) -> list:
    return [run_config_from_dict({
        "model": {"width": 0.0625}, "data": {"dataset": dataset},
        "optim": {"name": names[i % len(names)], "lam": 1e-4},
        "train": {"unit": "steps", "phases": [4, 6], "batch_size": 8, "seed": i, "snapshots": 1},
    }) for i in range(n)]


def test_a_folder_dataset_is_checked_through_the_real_image_folder_loader(tmp_path, monkeypatch):
    """ImageNet's images are decoded per batch in training: the check writes JPEG files and reads
    them through FolderImageData (decode, crop, normalise, prefetch), and both paths agree."""
    from claimbench.data.folder import FolderImageData

    decoded = []
    real = FolderImageData._decode_host

    def counting(self, files, offsets):
        decoded.append(len(files))
        return real(self, files, offsets)

    monkeypatch.setattr(FolderImageData, "_decode_host", counting)
    configs = [gc.window(c, gc.CPU_STEPS, quick=True) for c in group(2, dataset="imagenet")]
    data = gc.fabricated_data(configs[0], "cpu", folder=tmp_path / "images")
    assert isinstance(data, FolderImageData) and data.num_classes == 1000
    assert len(list((tmp_path / "images" / "train").rglob("*.JPEG"))) == data.train_size == 8 * gc.EPOCH_BATCHES
    # The float64 reference sees the same images, widened.
    x32, _ = data.train_batch(torch.arange(4), None)
    x64, _ = gc.in_float64(data).train_batch(torch.arange(4), None)
    assert x64.dtype == torch.float64 and torch.equal(x64, x32.double())
    # A run stacked with others gets the crops it gets alone (found by this check: seeded from
    # the whole stacked batch, a run's crops changed with its neighbours').
    rows = torch.tensor([[0, 1, 2, 3], [7, 6, 5, 4]])
    stacked, _ = data.train_batch(rows, None)
    assert all(torch.equal(stacked[k], data.train_batch(rows[k], None)[0]) for k in range(2))
    (case,) = gc.kinds_of(configs)
    result = gc.check_kind(case, torch.device("cpu"), steps=gc.CPU_STEPS, quick=True, backend=EagerGraphs(),
                           workdir=tmp_path, say=lambda line: None)
    assert decoded and all(f.status != "failed" for f in result.features), result.features


@pytest.mark.slow
def test_the_command_on_the_cpu_writes_a_row_per_kind_and_says_graphs_are_not_applicable(tmp_path, capsys):
    """The default, as CI runs it: every kind of group of the full tier, on fabricated data."""
    out = tmp_path / "gpu-check.md"
    assert run_cli("gpu-check", "--cache-dir", str(tmp_path / "cache"), "--out", str(out)) == 0
    text = out.read_text()
    assert "**CPU run**" in text and "graphs: not applicable" in text
    kinds = [line.split("|")[1].strip() for line in text.split("## Features per kind of group")[1].split("## ")[0]
             .splitlines() if line.startswith("| ") and not line.startswith("| kind")]
    from claimbench.cli import build_parser

    plan, _ = claims_cli._plan(build_parser().parse_args(
        ["plan", "--tier", "full", "--cache-dir", str(tmp_path / "cache")]), device="cpu")
    assert sorted(kinds) == sorted(c.kind.id for c in gc.kinds_of([r.config for r in plan.runs]))
    assert "Not checked in this run" not in text
    folder = [k for k in kinds if " folder data " in k]
    assert folder and any(k.startswith(("cifar10 ", "cifar100 ")) for k in kinds)
    assert text.count("not applicable: no CUDA device here (CPU run)") == len(kinds) - len(folder)
    assert "check took" in text and "## The tier's estimate" in text
    assert "took" in capsys.readouterr().out
    # No sweep on a CPU: each kind's row and record say so, with the CPU's group size.
    sizes = text.split("## Group size per kind")[1].split("## ")[0]
    assert sizes.count("| CPU: no sweep") == len(kinds)
    (entry,) = json.loads((tmp_path / "cache" / gc.RECORD_FILE).read_text()).values()
    assert {k["group_size"]["k"] for k in entry["kinds"].values()} == {4}
    # The digits-like family comes from the smoke tier; --max-kinds narrows, and says what it left.
    small = tmp_path / "small.md"
    assert run_cli("gpu-check", "--tier", "smoke", "--cache-dir", str(tmp_path / "cache"), "--max-kinds", "1",
                   "--out", str(small)) == 0
    assert "digits" in small.read_text() or "shapes" in small.read_text()


class ReplayTwice(EagerGraphs):
    """The self-test's CPU graph backend with a fault: every replay runs the step twice."""

    def replay(self, graph) -> None:
        graph()
        graph()


class ReplayOnce(ReplayTwice):
    def replay(self, graph) -> None:
        graph()


@pytest.mark.slow
def test_a_graph_replay_that_steps_twice_is_caught_switched_off_recorded_and_honoured(tmp_path, monkeypatch):
    configs = group(2)
    cache = tmp_path / "cache"
    said: list[str] = []
    result = gc.run_gpu_check(configs, cache, device="cpu", out=tmp_path / "r.md", graph_backend=ReplayTwice(),
                              say=said.append)
    (r,) = result.results
    status = {f.feature: f.status for f in r.features}
    assert status == {"stacked": "passed", "kernels": "passed", "graphs": "failed", "resume": "passed"}
    assert "tolerance" in r.switched_off["graphs"]
    assert any(line.startswith("gpu-check switched off graphs") and "eager steps" in line for line in said)
    record = json.loads((cache / gc.RECORD_FILE).read_text())
    (entry,) = record.values()
    assert entry["kinds"][r.kind.id]["switched_off"].keys() == {"graphs"}
    assert entry["kinds"][r.kind.id]["optimizers"] == ["adam", "sgd"]
    assert "graphs (" in (tmp_path / "r.md").read_text().split("## Switched off")[1]

    # The training path consults the record: this kind trains without graphs, and says so.
    from claimbench.execute import honour_gpu_check
    from claimbench.plan.groups import PlannedRun

    planned = [[PlannedRun(str(i), c) for i, c in enumerate(configs)]]
    groups, switched = honour_gpu_check(planned, cache, "cpu")
    assert groups == planned and switched == [("graphs",)]
    # Another mix of optimizers of the same dataset and architecture inherits the finding.
    assert gc.SwitchedOff.load(cache, "cpu").for_group(group(2, names=("rmsprop",))).keys() == {"graphs"}

    # The same check with a sound backend: graphs pass (the fault is what was caught).
    ok = gc.run_gpu_check(configs, tmp_path / "cache2", device="cpu", out=None, graph_backend=ReplayOnce(),
                          say=lambda line: None)
    assert {f.feature: f.status for f in ok.results[0].features}["graphs"] == "passed"
    assert ok.results[0].worst < 1


@pytest.mark.slow
def test_a_stacked_group_that_loses_a_run_is_caught(tmp_path, monkeypatch):
    # A fault in stacking: the fast path's second run comes back as the first run's copy.
    real = gc.train_fast

    def faulty(configs, data, device, off, backend, workdir, stop, dtype=None):
        out = real(configs, data, device, off, backend, workdir, stop, dtype)
        if "stacked" not in off and len(out.outcomes) > 1:
            out.outcomes[1] = out.outcomes[0]
        return out

    monkeypatch.setattr(gc, "train_fast", faulty)
    result = gc.run_gpu_check(group(2, names=("adam",)), tmp_path / "cache", device="cpu", out=None,
                              say=lambda line: None)
    assert {f.feature: f.status for f in result.results[0].features}["stacked"] == "failed"
    assert result.switched_off[result.results[0].kind.id].keys() == {"stacked"}


def _stamp(cache: Path, kinds: list, drop: str | None = None) -> None:
    """A record for this machine holding ``kinds`` (``GroupKind``s) checked, ``drop`` left out."""
    path = cache / gc.RECORD_FILE
    record = json.loads(path.read_text()) if path.exists() else {}
    key = gc.MachineKey.here("cpu")
    entry = record.setdefault(key.id, {"complete": True, "kinds": {}})
    entry["kinds"].update({k.id: {"dataset": k.dataset, "arch": k.arch, "precision": k.precision,
                                  "optimizers": list(k.optimizers), "switched_off": {}} for k in kinds})
    entry["kinds"].pop(drop, None)
    # As claimbench writes it: marked with this user's secret.
    entry[record_module.MARK] = record_mark(record_module._unmarked(entry))
    cache.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


def test_a_well_formed_record_this_user_did_not_write_switches_nothing_off(tmp_path, caplog):
    """A project can ship a gpu-check record beside its cache saying every kind passed: without
    this user's mark (or with a mark made for other findings) it is ignored and the kinds are
    checked again."""
    kinds = [gc.GroupKind("cifar10", "basicnet", ("adam",), False, True)]
    _stamp(tmp_path, kinds)
    assert gc.split_by_record(kinds, tmp_path, "cpu") == ([kinds[0].id], [])
    path = tmp_path / gc.RECORD_FILE
    record = json.loads(path.read_text())
    (entry,) = record.values()
    for forged in ({k: v for k, v in entry.items() if k != record_module.MARK},  # no mark
                   {**entry, "kinds": {}},  # a mark made for other findings
                   {**entry, record_module.MARK: "0" * 64}):
        path.write_text(json.dumps({next(iter(record)): forged}))
        assert gc.split_by_record(kinds, tmp_path, "cpu") == ([], [kinds[0].id])
    assert "not written by this user's claimbench" in caplog.text


def _tier_kinds(tier: str, cache: Path, *k: str) -> list:
    from claimbench.cli import build_parser

    plan, _ = claims_cli._plan(build_parser().parse_args(["plan", "--tier", tier, "--cache-dir", str(cache), *k]),
                               device="cpu")
    return [c.kind for c in gc.kinds_of([r.config for r in plan.runs])]


def test_a_full_verify_checks_the_kinds_of_its_plan_the_record_lacks(tmp_path, monkeypatch, capsys):
    """The stamp is per kind of group: a smoke-tier check does not stand for the full tier's kinds,
    and a kind added to the claims after a check is checked alone."""
    cache = tmp_path / "cache"
    checked: list[list[str]] = []

    def fake_check(configs, cache_root, *, device="auto", kinds=None, **kw):
        cases = [c for c in gc.kinds_of(configs) if kinds is None or c.kind.id in kinds]
        checked.append(sorted(c.kind.id for c in cases))
        _stamp(Path(cache_root), [c.kind for c in cases])

    monkeypatch.setattr(gc, "run_gpu_check", fake_check)
    monkeypatch.setattr(claims_cli, "cmd_train", lambda *a, **k: 0)
    monkeypatch.setattr(claims_cli, "cmd_report", lambda *a, **k: 0)
    import pytest as pytest_module

    monkeypatch.setattr(pytest_module, "main", lambda *a, **k: 0)
    _stamp(cache, _tier_kinds("smoke", cache))  # `claimbench gpu-check --tier smoke`
    full = sorted(k.id for k in _tier_kinds("full", cache, "-k", "adam-l2-vs-wd"))
    assert len(full) == 2
    argv = ["verify", "--tier", "full", "--force", "--device", "cpu", "--cache-dir", str(cache),
            "--out", str(tmp_path / "out"), "-k", "adam-l2-vs-wd"]
    assert run_cli(*argv) == 0
    out = capsys.readouterr().out
    assert checked == [full] and "not run again" not in out and all(k in out for k in full)

    assert run_cli(*argv) == 0  # every kind of the plan checked now
    assert checked == [full] and "not run again" in capsys.readouterr().out

    _stamp(cache, [], drop=full[1])  # a kind the claims gained after the check
    assert run_cli(*argv) == 0
    out = capsys.readouterr().out
    assert checked == [full, [full[1]]]
    already, now = [line for line in out.splitlines() if line.startswith("gpu-check:")][:2]
    assert full[0] in already and full[1] not in already and full[1] in now


def test_a_check_of_the_whole_tier_covers_the_optimizer_mixes_of_a_narrowed_plan(tmp_path):
    """Which optimizers a group mixes depends on the runs a plan holds: each optimizer checked on
    the kind's dataset, architecture and precision covers it; one never checked there does not."""
    def kind(dataset, *optimizers):
        return gc.GroupKind(dataset, "basicnet", tuple(optimizers), False, True)

    _stamp(tmp_path, [kind("cifar10", "adagrad", "adam", "sgd"), kind("cifar10", "adam", "rmsprop")])
    asked = [kind("cifar10", "adam", "sgd"), kind("cifar10", "rmsprop", "sgd"), kind("cifar10", "adamax"),
             kind("cifar100", "adam"), gc.GroupKind("cifar10", "basicnet", ("adam",), False, True, "tf32")]
    done, todo = gc.split_by_record(asked, tmp_path, "cpu")
    assert done == [k.id for k in asked[:2]] and todo == [k.id for k in asked[2:]]


def test_a_check_that_breaks_stops_the_full_tier_before_training(tmp_path, monkeypatch, capsys):
    def broken(*args, **kw):
        raise RuntimeError("CUDA error: an illegal memory access")

    trained: list = []
    monkeypatch.setattr(gc, "run_gpu_check", broken)
    monkeypatch.setattr(claims_cli, "cmd_train", lambda *a, **k: trained.append(1) or 0)
    assert run_cli("verify", "--tier", "full", "--force", "--device", "cpu", "--cache-dir", str(tmp_path / "c"),
                   "--out", str(tmp_path / "out"), "-k", "amsgrad") == 1
    assert not trained and "full tier was not started" in capsys.readouterr().err


@pytest.mark.slow
def test_the_tolerance_is_derived_per_precision_from_the_distance_to_exact_arithmetic():
    (c,) = group(1)
    data = gc.fabricated_data(c, CPU)
    (plain,) = gc.train_plain([c], data, CPU).outcomes
    (exact,) = gc.exact_reference([c], data, CPU).outcomes
    tol = {p: gc.tolerance_of(plain, exact, p) for p in ("fp32", "tf32")}
    weight = "blocks.0.conv.weight"
    # float32 rounding, measured: above zero, a few roundings, far below the floor of TF32.
    assert 0 < tol["fp32"].spread[weight] < 1e3 * 2.0 ** -24
    assert tol["fp32"].floor == 64 * 2.0 ** -24 and tol["tf32"].floor == 64 * 2.0 ** -11
    assert tol["tf32"].of(weight) > 100 * tol["fp32"].of(weight)
    assert tol["fp32"].of(weight) == max(tol["fp32"].floor, gc.SAFETY * tol["fp32"].spread[weight])
    # Integer tensors must be equal; a rounding-sized spread is no licence for a lost step.
    (again,) = gc.train_plain([c], data, CPU).outcomes
    assert tol["fp32"].worst(gc.distances(again, plain))[0] == 0  # the plain loop repeats bit for bit
    moved = gc.distances(again, plain)
    moved["blocks.0.bn.num_batches_tracked"] = math.inf
    assert math.isinf(tol["fp32"].worst(moved)[0])


REAL_TRAIN_FAST = gc.train_fast


def moving(which_runs, when, tensors=None, factor=1.01, size=3):
    """A fast path whose runs ``which_runs(outcomes)`` come back ``factor`` off wherever
    ``when(off, dtype)``: every parameter, or only those named in ``tensors`` (state-dict names)
    (over the real fast path, never over another test's fault)."""
    real = REAL_TRAIN_FAST

    def fast(configs, data, device, off, backend, workdir, stop, dtype=None):
        out = real(configs, data, device, off, backend, workdir, stop, dtype)
        if len(out.outcomes) == size and when(off, dtype):
            with torch.no_grad():
                for o in which_runs(out.outcomes):
                    state = o.model.state_dict()
                    for name in tensors or [n for n, _ in o.model.named_parameters()]:
                        state[name].mul_(factor)
        return out

    return fast


@pytest.mark.slow
def test_a_float32_flip_in_one_run_is_confirmed_in_float64_and_a_fault_is_not_excused(tmp_path, monkeypatch):
    """A rounding-triggered discrete event in one run (a few of its tensors, or all of them when it
    happened early) passes when float64 agrees, in a group of one too; the same float32 distance
    with float64 disagreeing (a fault of the arithmetic) fails; so does one that strikes every run
    of a group (lost precision: float64 cannot show it)."""
    few = ["blocks.2.conv.weight", "blocks.2.bn.weight"]
    cases = [  # (group size, runs moved, when, tensors, the feature that fails or None, what its reason says)
        (3, lambda o: o[:1], lambda off, dtype: dtype is None, few, None, "1 of 3 runs beyond the float32 tolerance"),
        (1, lambda o: o, lambda off, dtype: dtype is None, few, None, "1 of 1 runs beyond the float32 tolerance"),
        (3, lambda o: o[:1], lambda off, dtype: "stacked" not in off, few, "stacked", "in float64 too"),
        (1, lambda o: o, lambda off, dtype: dtype is None, None, None, "1 of 1 runs beyond the float32 tolerance"),
        (3, lambda o: o, lambda off, dtype: dtype is None and "kernels" not in off, None, "kernels", "3 of 3 runs beyond it"),
    ]
    for i, (size, runs, when, tensors, feature, says) in enumerate(cases):
        monkeypatch.setattr(gc, "train_fast", moving(runs, when, tensors, size=size))
        (r,) = gc.run_gpu_check(group(size, names=("adam",)), tmp_path / str(i), device="cpu", out=None,
                                say=lambda line: None).results
        failed = {f.feature for f in r.features if f.status == "failed"}
        if feature is None:
            assert not failed and r.worst > 1 and says in r.worst_at, (i, r.worst_at)
        else:
            assert failed == {feature} and says in r.switched_off[feature], (i, r.switched_off)


def test_a_fault_in_one_tensor_of_every_run_is_caught_and_named(tmp_path, monkeypatch):
    """Every BatchNorm gamma of every run 10% off, the rest of the network right: the median tensor
    is untouched, yet the check fails stacking and names a gamma."""
    configs = group(3, names=("adam",))
    gammas = [f"blocks.{i}.bn.weight" for i in range(7)]
    monkeypatch.setattr(gc, "train_fast", moving(lambda o: o, lambda off, dtype: "stacked" not in off, gammas, 0.9))
    (r,) = gc.run_gpu_check(configs, tmp_path, device="cpu", out=None, say=lambda line: None).results
    assert r.switched_off.keys() == {"stacked"}
    assert "bn.weight at" in r.switched_off["stacked"] and r.switched_off["stacked"].startswith("run ")


def test_a_disagreement_that_does_not_recur_is_flaky_and_switches_nothing_off(tmp_path, monkeypatch):
    """Only the first fast run is off (a GPU differing from itself once): trained again, it agrees;
    reported flaky with both measurements, nothing switched off (not resume, the first retried)."""
    calls = {"n": 0}
    perturb = moving(lambda o: o, lambda off, dtype: True)  # every run: float64 is not asked, it cannot excuse

    def once(configs, data, device, off, backend, workdir, stop, dtype=None):
        calls["n"] += 1
        return (perturb if calls["n"] == 1 else REAL_TRAIN_FAST)(configs, data, device, off, backend, workdir,
                                                                   stop, dtype)

    monkeypatch.setattr(gc, "train_fast", once)
    said: list[str] = []
    result = gc.run_gpu_check(group(3, names=("adam",)), tmp_path / "cache", device="cpu", out=tmp_path / "r.md",
                              say=said.append)
    (r,) = result.results
    assert not r.switched_off and all(f.status == "passed" for f in r.features if f.status != "not applicable")
    assert r.flaky.startswith("first run ") and "3 of 3 runs beyond it" in r.flaky and r.worst < 1
    assert "trained again it agrees" in r.flaky
    assert calls["n"] == 2  # no feature was isolated
    assert any(line.startswith("  flaky:") and "nothing switched off" in line for line in said)
    assert "Flaky" in (tmp_path / "r.md").read_text()
    (entry,) = json.loads((tmp_path / "cache" / gc.RECORD_FILE).read_text()).values()
    assert entry["kinds"][r.kind.id]["flaky"] == r.flaky and not entry["kinds"][r.kind.id]["switched_off"]
    # The same fault every time is not flaky: it is isolated to a feature.
    monkeypatch.setattr(gc, "train_fast", moving(lambda o: o[:1], lambda off, dtype: "stacked" not in off))
    (r,) = gc.run_gpu_check(group(3, names=("adam",)), tmp_path / "c2", device="cpu", out=None,
                            say=lambda line: None).results
    assert not r.flaky and r.switched_off.keys() == {"stacked"}


def test_a_feature_is_convicted_only_when_it_disagrees_on_its_own_twice(tmp_path, monkeypatch):
    """Stacking is at fault (every fast run with it disagrees); resume, tried on its own, disagrees
    once by chance: resume is not convicted for that one disagreement, stacking is, and kernels,
    sound on its own, stays on."""
    state = {"resume_alone": 0}
    perturb = moving(lambda o: o, lambda off, dtype: True)

    def fast(configs, data, device, off, backend, workdir, stop, dtype=None):
        resume_alone = "resume" not in off and {"stacked", "kernels"} <= off
        state["resume_alone"] += resume_alone
        faulty = "stacked" not in off or (resume_alone and state["resume_alone"] == 1)
        return (perturb if faulty else REAL_TRAIN_FAST)(configs, data, device, off, backend, workdir, stop, dtype)

    monkeypatch.setattr(gc, "train_fast", fast)
    said: list[str] = []
    (r,) = gc.run_gpu_check(group(3, names=("adam",)), tmp_path, device="cpu", out=None, say=said.append).results
    assert r.switched_off.keys() == {"stacked"} and not r.flaky
    assert any("resume on its own disagreed once" in line and "not convicted" in line for line in said)
    assert any("stacked on its own disagrees twice" in line for line in said)


def test_features_sound_alone_but_not_together_switch_off_the_one_whose_absence_agrees(tmp_path, monkeypatch):
    """Stacking and plain resume each agree on their own; together they disagree: the one whose
    absence makes the rest agree twice is switched off, saying it is sound on its own."""
    perturb = moving(lambda o: o, lambda off, dtype: True)

    def fast(configs, data, device, off, backend, workdir, stop, dtype=None):
        faulty = "stacked" not in off and "resume" not in off
        return (perturb if faulty else REAL_TRAIN_FAST)(configs, data, device, off, backend, workdir, stop, dtype)

    monkeypatch.setattr(gc, "train_fast", fast)
    said: list[str] = []
    (r,) = gc.run_gpu_check(group(3, names=("adam",)), tmp_path, device="cpu", out=None, say=said.append).results
    assert len(r.switched_off) == 1 and set(r.switched_off) <= {"stacked", "resume"}
    (why,) = r.switched_off.values()
    assert why.startswith("sound on its own, but the path with it and the others disagrees")
    assert "kernels" not in r.switched_off


def test_plain_kernels_are_asked_for_and_provenance_says_so(monkeypatch):
    from claimbench.train.loop import train_models

    (c,) = group(1)
    data = gc.fabricated_data(c, CPU)
    fast = train_models([c], data, CPU)[0].execution.kernel("adam")
    assert fast.kernel in ("fused", "foreach")
    assert train_models([c], data, CPU, kernels="plain")[0].execution.kernel("adam").kernel == "plain"
    monkeypatch.setenv("CLAIMBENCH_OPTIMIZER_KERNELS", "plain")
    assert train_models([c], data, CPU)[0].execution.kernel("adam").kernel == "plain"
    monkeypatch.setenv("CLAIMBENCH_OPTIMIZER_KERNELS", "fused-please")
    with pytest.raises(ValueError, match="CLAIMBENCH_OPTIMIZER_KERNELS"):
        train_models([c], data, CPU)


class Reached(Exception):
    pass


def test_switched_off_features_reach_the_loop_as_arguments_not_through_the_environment(tmp_path, monkeypatch):
    """What a kind gave up is handed to ``train_runs`` by the group that trains (the environment
    is shared by every thread of the process: a Ray driver's or another group's)."""
    import os

    import claimbench.group
    from claimbench.group import train_group

    seen: list[dict] = []

    def recorder(configs, data, device, **kw):
        seen.append(kw)
        raise Reached

    monkeypatch.setattr(claimbench.group, "train_runs", recorder)
    configs = group(1, dataset="digits")
    env = {k: v for k, v in os.environ.items() if k.startswith("CLAIMBENCH_")}
    for off, graphs, kernels, checkpoint in ((("graphs", "kernels", "resume"), False, "plain", None),
                                             ((), None, None, tmp_path / "c.pt")):
        with pytest.raises(Reached):
            train_group(configs, tmp_path / "c.pt", "cpu", None, 0, switched_off=off)
        assert (seen[-1]["cuda_graphs"], seen[-1]["kernels"], seen[-1]["checkpoint"]) == (graphs, kernels, checkpoint)
    assert {k: v for k, v in os.environ.items() if k.startswith("CLAIMBENCH_")} == env
