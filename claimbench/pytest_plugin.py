"""pytest plugin: every claim file becomes a test item whose outcome is the claim's verdict.

    pytest claims/ --tier smoke            # CPU analogs on embedded data
    pytest claims/ --tier full -n 2        # paper scale (GPU), two xdist workers
    pytest claims/ -k batch                # select claims by id/file name
    pytest path/to/my_claims --tier smoke  # any folder: its paper.yaml marks it as a claims folder

Installing claimbench registers the plugin with pytest (the ``pytest11`` entry point
``claimbench.pytest_plugin`` in pyproject.toml); a conftest that also lists it in ``pytest_plugins``
finds it already registered under that name and loads nothing twice. ``-p
no:claimbench.pytest_plugin`` turns it off. A ``*.yaml`` file is a claim file when its folder holds a
paper description (``paper.yaml``, see claimbench/spec/paper.py), or when it is named on the command
line; files starting with ``_`` (bases, drafts) and the description itself never are. So in
projects without claims the plugin collects nothing, prints nothing and does not import torch.

An item trains the runs its claim needs that are not cached (under the cache's per-key lock, so
a run shared by claims in different workers is trained once), evaluates the checks from the
cache and passes only when the claim is reproduced. A tier a claim does not have is a *skip*
with the claim's stated reason; a claim kept out of the CI gate (``gate: false`` + reason) that
does not reproduce is an *xfail* carrying that reason. Nothing is dropped silently.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

import pytest

from claimbench.spec.claims import TIERS
from claimbench.spec.folder import FOLDER_FILE
from claimbench.spec.paper import PAPER_FILE
from claimbench.spec.source import SpecError

if TYPE_CHECKING:  # the pipeline is imported when a claim is collected, not whenever pytest starts
    from claimbench.cache import RunStore
    from claimbench.check.verdict import Verdict
    from claimbench.spec.claims import ClaimSpec


@dataclass(frozen=True)
class PluginState:
    tier: str
    cache: Path | None
    device: str
    train_missing: bool
    gated_only: bool = False

    @property
    def store(self) -> "RunStore":
        """Where claims read their runs. A session that may train may also measure, so metrics
        stored by older measurement code are recomputed from the weights; with --no-train they
        are read as stored (and marked stale)."""
        from claimbench.cache import RunStore

        if not self.train_missing:
            return RunStore(self.cache)
        from claimbench.runs import remeasure

        return RunStore(self.cache, remeasure=remeasure)


_STATE = pytest.StashKey[PluginState]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("claimbench", "paper-claim reproduction")
    group.addoption("--tier", default=os.environ.get("CLAIMBENCH_TIER", "smoke"), choices=TIERS,
                    help="which tier of each claim to check (default: smoke, or $CLAIMBENCH_TIER)")
    from claimbench.cache.location import CACHE_RULE

    group.addoption("--claimbench-cache", default=None,
                    help=f"run cache root (default: {CACHE_RULE}; under pytest the project is pytest's root folder)")
    group.addoption("--claimbench-device", default="auto", help="device for runs trained by tests (default: auto)")
    group.addoption("--no-train", action="store_true", help="do not train missing runs; report them as errors")
    group.addoption("--gated-only", action="store_true",
                    help="skip, with the claim's reason, the claims kept out of the tier's CI gate (gate: false): "
                         "what make test checks; make smoke checks and reports all")


def pytest_configure(config: pytest.Config) -> None:
    from claimbench.cache.location import default_cache_root

    for tier in TIERS:
        config.addinivalue_line("markers", f"{tier}: claim checked at the {tier} tier")
    cache = config.getoption("--claimbench-cache")
    config.stash[_STATE] = PluginState(
        tier=config.getoption("--tier"),
        cache=Path(cache) if cache else default_cache_root(project=config.rootpath),
        device=config.getoption("--claimbench-device"),
        train_missing=not config.getoption("--no-train"),
        gated_only=config.getoption("--gated-only"),
    )


def _names_claims(arg: str) -> bool:
    """Whether a command-line path is a claim file, a claims folder, or a folder right above one."""
    path = Path(arg.split("::")[0])
    try:
        if path.is_file():
            return path.suffix == ".yaml"
        return path.is_dir() and ((path / PAPER_FILE).is_file()
                                  or any((sub / PAPER_FILE).is_file() for sub in path.iterdir() if sub.is_dir()))
    except OSError:  # an unreadable folder names no claims we could run
        return False


def pytest_report_header(config: pytest.Config) -> list[str]:
    # Only for runs that name claims: other projects' runs stay untouched (and free of torch).
    if not any(_names_claims(arg) for arg in config.args):
        return []
    import torch

    state = config.stash[_STATE]
    device = "cuda: " + torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    return [f"claimbench: tier={state.tier} cache={state.store.root} torch={torch.__version__} device={device}"]


def is_claim_file(file_path: Path, session: pytest.Session) -> bool:
    """A claims folder's *.yaml (not a base/draft, not the paper description), or one named explicitly."""
    if file_path.suffix != ".yaml" or file_path.name.startswith("_") or file_path.name in (PAPER_FILE, FOLDER_FILE):
        return False
    return (file_path.parent / PAPER_FILE).is_file() or session.isinitpath(file_path)


def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    if is_claim_file(file_path, parent.session):
        return ClaimFile.from_parent(parent, path=file_path)
    return None


class ClaimFile(pytest.File):
    def collect(self):
        from claimbench.spec.claims import load_claim

        state = self.config.stash[_STATE]
        try:
            spec = load_claim(self.path)
        except SpecError as e:
            yield BrokenClaimItem.from_parent(self, name=self.path.stem, error=e)
            return
        item = ClaimItem.from_parent(self, name=spec.id, spec=spec)
        item.add_marker(getattr(pytest.mark, state.tier))
        not_run = spec.tier(state.tier).not_run
        if not_run:
            # A skip mark (not pytest.skip() in runtest) so that -rs names the claim file, not this module.
            item.add_marker(pytest.mark.skip(reason=f"not run at the {state.tier} tier: {not_run}"))
        elif state.gated_only and not spec.tier(state.tier).gates_ci:
            # Its verdict could only be an xfail here; make smoke trains it and writes its page.
            item.add_marker(pytest.mark.skip(
                reason=f"kept out of the CI gate at the {state.tier} tier, not trained with --gated-only "
                       f"(make smoke checks it): {spec.tier(state.tier).gate_reason}"))
        yield item


class BrokenClaimItem(pytest.Item):
    def __init__(self, *, error: SpecError, **kwargs):
        super().__init__(**kwargs)
        self.error = error

    def runtest(self) -> None:
        raise self.error

    def repr_failure(self, excinfo, style=None) -> str:
        if isinstance(excinfo.value, SpecError):
            return "invalid claim file:\n" + "\n".join(f"  {p}" for p in excinfo.value.problems)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        line = self.error.problems[0].line if self.error.problems else None
        return self.path, (line or 1) - 1, f"invalid claim file {self.path.name}"


class ClaimNotReproduced(Exception):
    def __init__(self, verdict: "Verdict"):
        super().__init__(verdict.status)
        self.verdict = verdict


class ClaimItem(pytest.Item):
    def __init__(self, *, spec: "ClaimSpec", **kwargs):
        super().__init__(**kwargs)
        self.spec = spec

    def runtest(self) -> None:
        # A tier that is not run never gets here: collection marked the item skipped.
        from claimbench.check.evaluate import evaluate_claim
        from claimbench.check.verdict import ERROR, REPRODUCED
        from claimbench.report.paper_numbers import paper_to_reproduce

        state = self.config.stash[_STATE]
        tier = self.spec.tier(state.tier)
        store = state.store
        if state.train_missing:
            self._train_missing(state, store)
        # Decided on the claim's folder, as its words are: a reason there names a paper only if it has one.
        with_paper = paper_to_reproduce([self.spec])
        verdict = evaluate_claim(self.spec, state.tier, store, with_paper)
        self.user_properties.append(("verdict", verdict.status))
        unverified = unverified_runs(self.spec, state.tier, store)
        if unverified:
            self.user_properties.append((UNVERIFIED, unverified))
        if verdict.seeds_note():  # pytest's line says when no significance test could be made
            self.user_properties.append((FEW_SEEDS, verdict.seeds_note()))
        if verdict.status == REPRODUCED:
            # `pytest -v` shows the numbers that decided it, not only that it passed.
            self.user_properties.append((NUMBERS, "; ".join(c.arithmetic for c in verdict.checks if c.arithmetic)))
            return
        # Outside the gate a claim may fail to reproduce, but a broken run (error) still fails.
        if not tier.gate and verdict.status != ERROR:
            from claimbench.check.verdict import status_words

            words = status_words(verdict.status, with_paper)
            pytest.xfail(f"{words} (kept out of the CI gate: {tier.gate_reason})"
                         + (f"; {unverified} runs imported, unverified" if unverified else "")
                         + (f"; {verdict.seeds_note()}" if verdict.seeds_note() else ""))
        raise ClaimNotReproduced(verdict)

    def _train_missing(self, state: PluginState, store: "RunStore") -> None:
        """Train what this claim lacks, fused as ``claimbench train`` would (per-key locks included)."""
        from claimbench.execute import train_plan
        from claimbench.plan import plan_runs

        workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
        threads = max(1, (os.cpu_count() or 1) // workers)
        plan = plan_runs([self.spec], state.tier, store)
        # Several workers share the cores: unfused, like `claimbench train -j N` (see execute.py).
        summary = train_plan(plan, store, jobs=1, device=state.device, progress=True,
                             group_size=1 if workers > 1 else None, threads=threads,
                             progress_stream=_Uncaptured(self.config), progress_label=f"[{self.spec.id}] ")
        from claimbench.runs import ensure_simulations

        ensure_simulations([self.spec], state.tier, store)
        if summary.blocked:
            self.user_properties.append(("run_failed", summary.blocked))
        elif summary.failed:
            # The verdict reports the missing runs as errors; say why they are missing.
            for message in summary.failed.values():
                self.user_properties.append(("run_failed", message))

    def repr_failure(self, excinfo, style=None) -> str:
        if not isinstance(excinfo.value, ClaimNotReproduced):
            return super().repr_failure(excinfo)
        return format_verdict(self.spec, excinfo.value.verdict, dict(self.user_properties).get(UNVERIFIED, 0))

    def reportinfo(self):
        return self.path, self.spec.line - 1, f"claim {self.spec.id} [{self.config.stash[_STATE].tier}]"


class _Uncaptured:
    """Progress lines past pytest's output capture, so a user sees which claim is training and how
    far along (lines, not a bar: a bar would fight pytest's own output)."""

    def __init__(self, config: pytest.Config):
        self.capture = config.pluginmanager.getplugin("capturemanager")

    def write(self, text: str) -> None:
        import sys

        if self.capture is None:
            sys.stderr.write(text)
            return
        with self.capture.global_and_fixture_disabled():
            sys.stderr.write(text)
            sys.stderr.flush()

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


# The user property naming how many of a claim's runs were imported and not re-measured here.
UNVERIFIED = "unverified_runs"
# The user property saying the verdict was decided on fewer seeds than a significance test needs.
FEW_SEEDS = "few_seeds"


def unverified_runs(spec: "ClaimSpec", tier: str, store: "RunStore") -> int:
    """How many of the claim's cached runs are imported and unverified (numbers on an archive's word)."""
    from claimbench.cache import run_key

    keys = {run_key(c) for c in spec.tier(tier).configs()}
    return sum(1 for k in keys if (r := store.get(k)) is not None and not r.verified)


# The user property holding the arithmetic of a passing claim's checks (shown with -v).
NUMBERS = "numbers"


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config):
    # A claim that passes on runs not measured here says so at every verbosity: its letter is
    # "U", not ".", and its line (-v) names them. So does one decided on fewer seeds than a
    # significance test needs (on its -v line).
    props = dict(getattr(report, "user_properties", ()))
    notes = ([f"{props[UNVERIFIED]} runs imported, unverified"] if props.get(UNVERIFIED) else []) \
        + ([props[FEW_SEEDS]] if props.get(FEW_SEEDS) else [])
    if report.when == "call" and report.passed and notes:
        return "passed", "U" if props.get(UNVERIFIED) else ".", (f"PASSED ({'; '.join(notes)})", {"yellow": True})
    if report.when == "call" and report.passed and props.get(NUMBERS) and config.option.verbose > 0:
        return "passed", ".", (f"PASSED ({props[NUMBERS]})", {"green": True})
    return None


def format_verdict(spec: "ClaimSpec", verdict: "Verdict", unverified: int = 0) -> str:
    """The failure text of a claim: its verdict, and each check with the numbers that decided it.
    A claim about one's own experiment (its folder quotes no paper) "does not hold"; a paper's
    claim is "not reproduced"."""
    from claimbench.check.verdict import fmt, status_words
    from claimbench.report.paper_numbers import paper_to_reproduce

    paper = paper_to_reproduce([spec])
    status = status_words(verdict.status, paper).upper()
    lines = [f"claim {spec.id} ({spec.path}:{spec.line}) at tier {verdict.tier}: {status}",
             f"  {spec.title}", f"  source: {spec.source.get('paper', '')} {spec.source.get('where', '')}"]
    if unverified:
        lines.append(f"  runs: {unverified} imported, unverified (their numbers were not re-measured here)")
    if verdict.seeds_note():
        lines.append(f"  seeds: {verdict.seeds_note()}")
    if verdict.reason and not verdict.checks:  # e.g. "not run: 3 of 9 runs missing"
        lines.append(f"  reason: {verdict.reason}")
    for c in verdict.checks:
        robust = "robustness row, not part of the verdict: " if c.robustness else ""
        lines.append(f"  [{robust}{status_words(c.status, paper)}] {c.description}    ({spec.path}:{c.line}, {c.field_path})")
        for label, o in c.observed.items():
            paper = f"   paper: {o['paper']}" if o.get("paper") is not None else ""
            lines.append(f"      {label}: {fmt(o['mean'])} ± {fmt(o['std'])} (n={o['n']}){paper}")
        if c.arithmetic:
            lines.append(f"      {c.arithmetic}")
        if c.reason:
            lines.append(f"      reason: {c.reason}")
    return "\n".join(lines)
