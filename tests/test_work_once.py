"""Work done once: `claimbench verify` reads the claims once and plans once; a simulation runs once per
configuration and code (stored like a run), and checks, reports and plots only read it."""


import pytest
import yaml

import claimbench.claims_cli as claims_cli
import claimbench.plan as plan_module
import claimbench.simulate.low_gradient as low_gradient
from claimbench.cache import RunStore
from claimbench.check.evaluate import evaluate_claim
from claimbench.cli import main
from claimbench.spec.claims import load_claims
from tests.helpers import REPO

REAL_CLAIM = REPO / "claims" / "low_gradient_decay.yaml"


@pytest.fixture
def claim(tmp_path):
    """The real simulation claim with a tenth of its iterations: what is tested here is how often
    work is done, not the simulation, and the full one costs ~18 s of CPU per computation. At a
    tenth of the horizon the claim does not hold (verify exits 1: a verdict, not an error)."""
    data = yaml.safe_load(REAL_CLAIM.read_text())
    for tier in data["tiers"].values():
        for group in tier["runs"].values():
            group["simulate"]["steps"] = group["simulate"].get("steps", 10000) // 10
    folder = tmp_path / "claims"
    folder.mkdir()
    path = folder / REAL_CLAIM.name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def counted(monkeypatch):
    calls = {"load_claims": 0, "plan_runs": 0, "simulate": 0}

    def counting(module, name, key):
        real = getattr(module, name)

        def wrapper(*args, **kwargs):
            calls[key] += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    counting(claims_cli, "load_claims", "load_claims")
    counting(plan_module, "plan_runs", "plan_runs")
    counting(low_gradient, "simulate_abs_theta", "simulate")
    # claims_cli imported plan_runs by name inside functions: they see the module attribute.
    return calls


@pytest.mark.slow
def test_verify_reads_the_claims_once_and_simulates_each_configuration_once(tmp_path, monkeypatch, counted, claim):
    monkeypatch.chdir(REPO)
    sims = {g.simulate for s in load_claims([claim]) for g in s.tier("smoke").groups.values() if g.simulate}
    assert sims, "the claim has simulations"
    args = ["verify", "--tier", "smoke", "--claims-dir", str(claim.parent), "-k", "low-gradient",
            "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "r")]
    assert main(args) == 1
    assert counted["load_claims"] == 1 and counted["plan_runs"] == 1
    assert counted["simulate"] == len(sims)
    # Warm: everything is stored, nothing is simulated again (checks, report pages and plots read).
    assert main(args) == 1
    assert counted["simulate"] == len(sims)
    assert any(p.suffix == ".png" for p in (tmp_path / "r").iterdir())


def test_a_report_never_simulates_and_says_what_is_missing(tmp_path, counted):
    (spec,) = load_claims([REAL_CLAIM])
    verdict = evaluate_claim(spec, "smoke", RunStore(tmp_path / "c"))
    assert verdict.status == "not run" and "simulations not computed" in verdict.reason
    assert counted["simulate"] == 0


@pytest.mark.slow
def test_a_damaged_stored_simulation_is_computed_again(tmp_path, claim):
    from claimbench.cache.simulations import SimulationStore
    from claimbench.runs import ensure_simulations

    (spec,) = load_claims([claim])
    store = RunStore(tmp_path / "c")
    first = ensure_simulations([spec], "smoke", store)
    assert first > 0 and ensure_simulations([spec], "smoke", store) == 0
    sim = next(g.simulate for g in spec.tier("smoke").groups.values() if g.simulate)
    path = SimulationStore(store.root).path(sim)
    path.write_text('{"format": 1, "metrics": {"0.0001": [{"final_abs": NaN}]}}')
    assert SimulationStore(store.root).get(sim) is None
    assert ensure_simulations([spec], "smoke", store) == 1
    assert SimulationStore(store.root).get(sim) is not None


@pytest.mark.slow
def test_a_plot_whose_inputs_did_not_change_is_copied_not_drawn(tmp_path, monkeypatch, claim):
    import claimbench.report.plots as plots
    from claimbench.report import render_reports
    from claimbench.runs import ensure_simulations

    specs = load_claims([claim])
    store = RunStore(tmp_path / "c")
    ensure_simulations(specs, "smoke", store)
    drawn = []
    real = plots.PLOTTERS["decay"]

    def counting(entry, tier, store, path, title):
        drawn.append(path.name)
        return real(entry, tier, store, path, title)

    monkeypatch.setitem(plots.PLOTTERS, "decay", counting)
    out = tmp_path / "report"
    render_reports(specs, "smoke", store, out)
    first = {p.name: p.read_bytes() for p in out.glob("*.png")}
    assert first and len(drawn) == len(first)
    render_reports(specs, "smoke", store, out)
    assert len(drawn) == len(first), "an unchanged plot was drawn again"
    assert {p.name: p.read_bytes() for p in out.glob("*.png")} == first
    # Other plotting code (or other stored inputs) draws it again.
    monkeypatch.setattr(plots, "_plot_code", lambda: "other plotting code")
    render_reports(specs, "smoke", store, out)
    assert len(drawn) == 2 * len(first)
