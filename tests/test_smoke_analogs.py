"""A tier's scaling rules (``analogs:`` in its base, ``analog:`` on a run): declared once, applied
to the value the run would have, stated on the claim's pages, and used by every smoke run of an
optimizer that has one."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from claimbench.spec.claims import load_claim
from claimbench.spec.source import SpecError
from tests.helpers import REPO

BASE = """\
model: {arch: basicnet, width: 0.125}
data: {dataset: digits}
optim: {name: adam, regularizer: l2, lam: 1.0e-2}
train: {batch_size: 40, unit: steps, phases: [20, 10], snapshots: 2}
analogs:
  adagrad:
    why: Adagrad never forgets, measured here.
    scale: {optim.lr: 10}
  adamax:
    why: Adamax remembers 1,000 steps, measured here.
    scale: {optim.lam: 10}
  amsgrad:
    why: AMSGrad keeps a running maximum.
    scale: {optim.lr: 10, optim.lam: 0.3}
"""

CLAIM = """\
id: analogs
title: t
claim: t
source: {paper: p.txt, where: Table 1}
no_scope: no table
tiers:
  smoke:
    why: Digits, short runs.
    base: {include: _bases/b.yaml}
    seeds: [0]
    runs:
      adagrad: {set: {optim.name: adagrad}, analog: adagrad}
      adamax: {set: {optim.name: adamax}, analog: adamax, axis: {optim.lam: [1.0e-3, 1.0e-2]}}
      amsgrad: {set: {optim.name: amsgrad}, analog: amsgrad}
      plain: {set: {optim.name: adagrad}}
    checks:
      - {kind: greater, metric: sparsity_gamma, a: adagrad, b: plain, margin: 1}
"""


def write(tmp_path: Path, claim: str = CLAIM, base: str = BASE) -> Path:
    (tmp_path / "_bases").mkdir(exist_ok=True)
    (tmp_path / "_bases" / "b.yaml").write_text(base)
    (tmp_path / "p.txt").write_text("paper")
    path = tmp_path / "analogs.yaml"
    path.write_text(claim)
    return path


def config(spec, group, at=None):
    return spec.tier("smoke").groups[group].point(at).configs[0]


def test_a_rule_scales_the_value_the_run_would_have(tmp_path):
    spec = load_claim(write(tmp_path))
    # An unset learning rate is the optimizer's base rate (Adagrad 1e-2) before it is scaled.
    assert config(spec, "adagrad").optim.lr == 0.1 and config(spec, "plain").optim.lr is None
    # An axis over the scaled field is scaled point by point; 1e-2 x 0.3 is exactly 3e-3.
    assert [config(spec, "adamax", v).optim.lam for v in (1e-3, 1e-2)] == [1e-2, 1e-1]
    amsgrad = config(spec, "amsgrad").optim
    assert (amsgrad.lr, amsgrad.lam) == (0.01, 0.003)
    # The run's label shows a learning rate that is not the optimizer's base rate.
    assert "adagrad lr=0.1 l2=0.01" in config(spec, "adagrad").summary()
    assert "lr=" not in config(spec, "plain").summary()


def test_the_rules_a_tier_uses_are_stated_with_their_reasons(tmp_path):
    why = load_claim(write(tmp_path)).tier("smoke").why
    assert why.startswith("Digits, short runs.")
    assert "rule 'adagrad' (optim.lr x10; runs adagrad): Adagrad never forgets, measured here." in why
    assert "rule 'amsgrad' (optim.lr x10, optim.lam x0.3; runs amsgrad)" in why


@pytest.mark.parametrize("run, base, message", [
    ("{set: {optim.name: adagrad}, analog: adagrd}", BASE, "unknown scaling rule of this tier's base 'adagrd'"),
    ("{set: {optim.name: adagrad}, analog: adagrad}", BASE.replace("optim.lr: 10}", "optim.lr: 0}"),
     "expected a factor > 0, got 0"),
    ("{set: {optim.name: adagrad}, analog: adagrad}", BASE.replace("optim.lr: 10}", "optim.name: 10}"),
     "scales optim.name, which is 'adagrad' here, not a number"),
    ("{set: {optim.name: adagrad}, analog: adagrad}", BASE.replace("    why: Adagrad never forgets, measured here.\n", ""),
     "a scaling rule must say why"),
])
def test_a_broken_rule_or_an_unknown_one_is_an_error_at_its_line(tmp_path, run, base, message):
    claim = CLAIM.replace("{set: {optim.name: adagrad}, analog: adagrad}", run, 1)
    with pytest.raises(SpecError) as e:
        load_claim(write(tmp_path, claim, base))
    text = "\n".join(str(p) for p in e.value.problems)
    assert message in text, text
    assert "analogs.yaml:" in text


def test_every_smoke_run_of_an_optimizer_with_a_rule_uses_it():
    """The repository's smoke base declares a rule per long-memory optimizer; a smoke run of that
    optimizer without it would test the analog the rule exists to replace."""
    from claimbench.spec.claims import claim_files, load_claims

    specs = load_claims(claim_files(REPO / "claims"))
    rules = set()
    used = 0
    for spec in specs:
        tier = spec.tiers.get("smoke")
        if tier is None or tier.not_run:
            continue
        for group in tier.groups.values():
            for point in group.points:
                for cfg in point.configs:
                    if group.analog is not None:
                        rules.add(group.analog.name)
                        assert cfg.optim.name == group.analog.name, (spec.id, group.name)
                        used += 1
                    elif cfg.optim.name in {"adagrad", "amsgrad", "adamax"}:
                        pytest.fail(f"{spec.id}: run {group.name} trains {cfg.optim.name} without its scaling rule")
    assert rules == {"adagrad", "amsgrad", "adamax"} and used >= 3
