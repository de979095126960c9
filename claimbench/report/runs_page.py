"""The runs of a report: ``runs.md`` (every distinct run of the tier) and each claim page's runs table.

In:  ClaimSpecs or one tier, and the RunStore (nothing is trained: a run not stored is "missing", one
     that failed says so).
Out: markdown tables: per run point ours (mean ± std over seeds) beside the paper's number as printed;
     per distinct run its key, label, headline metrics, device and claims. Runs whose labels are equal
     are told apart by the settings the label does not show (``unshown_settings``), and the plug-ins
     that trained them are named (``plugins_note``).
"""

from __future__ import annotations

from typing import Any

from claimbench.cache import RunStore, run_key
from claimbench.cache.store import REFRESH_COMMAND
from claimbench.check.verdict import fmt
from claimbench.report.mdtable import markdown_table
from claimbench.report.paper_numbers import check_selections, number_text, point_paper_texts
from claimbench.spec.claims import ClaimSpec, TierSpec

# Metrics shown in every run table, besides those the paper gives a number for.
RUN_TABLE_METRICS = ("test_error", "sparsity_gamma", "sparsity_act", "pruned_test_error")


def _settings(obj: Any, prefix: str = "") -> dict[str, Any]:
    """A config's settings by dotted path ("model.params.width"), plug-in fields included."""
    import dataclasses

    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out.update(_settings(value, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = value
    return out


def _with_setting(obj: Any, path: list[str], value: Any) -> Any:
    import dataclasses

    head, rest = path[0], path[1:]
    return dataclasses.replace(obj, **{head: _with_setting(getattr(obj, head), rest, value) if rest else value})


def unshown_settings(configs: list[Any]) -> list[str]:
    """Per config, the settings that differ between ``configs`` but that its summary label does
    not show (" model.params.width=8"; "" where the label shows them all), seeds left out, so runs
    that differ only in a plug-in's fields or a learning rate never carry one label. Which
    settings the label shows is found by changing one and seeing whether the label changes."""
    if len(configs) < 2:
        return [""] * len(configs)
    settings = [_settings(c) for c in configs]
    differ = [k for k in settings[0] if k != "train.seed" and any(s.get(k) != settings[0][k] for s in settings)]
    unshown = [k for k in differ if not any(_label_shows(c, s, k, settings) for c, s in zip(configs, settings))]
    return ["".join(f" {k}={_setting_text(s[k])}" for k in unshown) for s in settings]


def _label_shows(config: Any, setting: dict[str, Any], key: str, settings: list[dict[str, Any]]) -> bool:
    """Whether ``config``'s label changes when ``key`` takes the value another config has (a
    label may show a setting only in some contexts: a slope only for a leaky activation)."""
    other = next((s[key] for s in settings if s.get(key) != setting[key]), setting[key])
    try:
        return _with_setting(config, key.split("."), other).summary() != config.summary()
    except (TypeError, ValueError):
        return False


def _setting_text(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ",".join(map(_setting_text, value)) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)


def plugins_note(records: list[Any], store: RunStore) -> str:
    """Which plug-ins, at which versions, trained these runs (from what each run recorded), and
    whether they were read here without being installed; "" for runs of claimbench's own code."""
    seen: dict[str, str] = {}
    for r in records:
        for item in (r.provenance.get("plugins") or []) if r is not None else []:
            if isinstance(item, dict):
                seen.setdefault(f"{item.get('kind')} {item.get('name')}",
                                f"{item.get('kind')} `{item.get('name')}` ({item.get('entry_point')}, "
                                f"{item.get('distribution')} {item.get('version')})")
    if not seen:
        return ""
    text = "Plug-ins that trained these runs: " + "; ".join(seen[k] for k in sorted(seen)) + "."
    if hasattr(store, "stored_key"):  # claimbench.report.stored: read where they are not installed
        text += " They are not installed where this report was written: their runs were read as stored."
    return text


def runs_table(tier: TierSpec, store: RunStore, spec: ClaimSpec | None = None) -> str:
    """One row per run point: ours (mean ± std, n) beside the paper's number as printed (as the
    claim or the table cell it names types it; ``spec`` finds the cell)."""
    from claimbench.check.evaluate import simulation_metrics
    from claimbench.check.verdict import Stats

    metrics = list(RUN_TABLE_METRICS)
    for g in tier.groups.values():
        for p in g.points:
            metrics += [m for m in p.paper if m not in metrics]
    # What the checks decide on is shown beside the rest (a trainer's own metrics included).
    for check in tier.checks:
        metrics += [s.metric for s in check_selections(check, tier) if getattr(s, "metric", None) not in (None, *metrics)]
    firsts = [p.configs[0] for g in tier.groups.values() if g.simulate is None for p in g.points]
    extra = dict(zip(map(id, firsts), unshown_settings(firsts)))
    from claimbench.cache.failures import failure_of_run

    rows = []
    for g in tier.groups.values():
        for p in g.points:
            failed = False
            if g.simulate is not None:
                computed = simulation_metrics(g.simulate, store)
                per_seed = computed[p.axis_value] if computed is not None else [None]
                summary = f"simulation {g.simulate.optimizer}+{g.simulate.regularizer} lam={p.axis_value:g}"
            else:
                records = [store.get(run_key(c)) for c in p.configs]
                per_seed = [r.metrics if r else None for r in records]
                # A run that failed says so (its claim's verdict says why), not "missing".
                failed = any(r is None and failure_of_run(store, run_key(c)) for r, c in zip(records, p.configs))
                summary = p.configs[0].summary().rsplit(" s", 1)[0] + extra[id(p.configs[0])]
                unverified = sum(1 for r in records if r is not None and not r.verified)
                if unverified:  # numbers taken on an archive's word, not re-measured here
                    summary += f" ({unverified} of {len(records)} seeds imported, unverified)"
                stale = sum(1 for r in records if r is not None and r.metrics_stale)
                if stale:  # a report only reads: it names the command that recomputes them
                    summary += (f" ({stale} of {len(records)} seeds measured by older code; "
                                f"`{REFRESH_COMMAND}` recomputes them)")
            row = [g.name + (f"@{p.axis_value}" if p.axis_value is not None else ""), summary]
            texts = point_paper_texts(spec, p) if spec is not None else {m: number_text(v) for m, v in p.paper.items()}
            for m in metrics:
                vals = [x[m] for x in per_seed if x is not None and isinstance(x.get(m), (int, float)) and not isinstance(x.get(m), bool)]
                ours = str(Stats(tuple(vals))) if vals else ("failed" if failed else "missing"
                                                             if any(x is None for x in per_seed) else "-")
                ref = p.paper.get(m)
                row.append(f"{ours}" + (f" / paper {texts[m]}" if ref is not None else ""))
            rows.append(row)
    return markdown_table(rows, ["run", "config", *metrics])


def runs_page(specs: list[ClaimSpec], tier: str, store: RunStore) -> str:
    from claimbench.cache.failures import failure_of_run

    seen: dict[str, list[str]] = {}
    configs = {}
    for s in sorted(specs, key=lambda s: s.id):
        for c in s.tier(tier).configs():
            key = run_key(c)
            seen.setdefault(key, []).append(s.id)
            configs[key] = c
    # Runs that share a label are told apart by the settings the label does not show.
    by_label: dict[str, list[str]] = {}
    for key, c in configs.items():
        by_label.setdefault(c.summary(), []).append(key)
    label = {}
    for keys in by_label.values():
        for key, extra in zip(keys, unshown_settings([configs[k] for k in keys])):
            label[key] = configs[key].summary() + extra
    # The key as stored (a run read where its plug-ins are not installed has another key here).
    stored_key = getattr(store, "stored_key", lambda k: k)
    rows = []
    records = []
    for key in sorted(seen, key=lambda k: (label[k], k)):
        record = store.get(key)
        records.append(record)
        if record is None:
            failed = failure_of_run(store, key)
            rows.append((stored_key(key)[:12], label[key], f"failed: {failed.reason}" if failed else "not in cache",
                         "", "", "", ", ".join(sorted(set(seen[key])))))
            continue
        m, prov = record.metrics, record.provenance
        metrics = ", ".join(f"{k}={fmt(m[k])}" for k in ("test_error", "sparsity_gamma", "sparsity_act", "pruned_test_error",
                                                         "conv_params_pruned_pct") if isinstance(m.get(k), (int, float)))
        if m.get("diverged_at") is not None:
            metrics = f"DIVERGED at step {m['diverged_at']}"
        if record.provenance_label:
            metrics += f" ({record.provenance_label})"
        trainer = prov.get("trainer") if isinstance(prov.get("trainer"), dict) else {}
        rows.append((stored_key(key)[:12], label[key], metrics, prov.get("device") or trainer.get("device", ""),
                     prov.get("torch", ""), f"{prov.get('train_wall_s', '')} s", ", ".join(sorted(set(seen[key])))))
    trained_by = plugins_note(records, store)
    return (f"# Runs of the `{tier}` tier\n\n{len(rows)} distinct runs. Key = first 12 hex digits of the cache key "
            "(`claimbench show KEY` prints the whole record).\n\n"
            + markdown_table(rows, ("key", "config", "metrics", "device", "torch", "train time", "claims"))
            + "\n" + (f"\n{trained_by}\n" if trained_by else ""))
