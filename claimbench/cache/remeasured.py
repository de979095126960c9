"""Stored metrics checked against the metrics re-measured from the stored weights.

In:  a stored ``RunRecord`` with its manifest and, where the entry holds them, its weights; a
     ``remeasure`` callable (``remeasure(record_with_weights, device, data_root) -> metrics``,
     handed in by the caller so that the cache never imports training or measurement code).
Out: ``remeasured``: the metrics to keep and why they are not verified (None: re-measured here and
     in agreement), or ``EntryDamaged`` when the weights do not fit the config or contradict the
     stored numbers; ``metrics_difference``, the comparison within float tolerance.

Checksums only prove that an entry's files are the ones its author listed, not that the numbers
came from training: re-measuring them from the weights does. Importing an archive
(``claimbench.cache.archive``) and ``claimbench cache verify`` both confirm entries this way.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable

from claimbench.cache.entry import EntryDamaged
from claimbench.cache.keys import metrics_fingerprint, training_identity
from claimbench.cache.record import RunRecord
from claimbench.cache.store import RunStore

# Re-measuring stored weights on another machine repeats the same float32 arithmetic in another
# order: losses agree to ~1e-6 relative. Counts (errors, sparsity) agree exactly unless a value
# sits on a threshold; a difference beyond this is numbers that did not come from these weights.
METRICS_RTOL, METRICS_ATOL = 1e-4, 1e-6
# These two are themselves float round-off (max |logit difference| between equivalent networks).
_ROUNDOFF_METRICS = {"slim_max_abs_diff": 1e-3, "slim_folded_max_abs_diff": 1e-3}

Remeasure = Callable[[RunRecord, str, "Path | None"], dict]


def now() -> str:
    """The time an entry was verified or imported, as its manifest records it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def metrics_file(metrics: dict, record: RunRecord) -> dict[str, bytes]:
    if metrics is record.metrics:
        return {}
    return {"metrics.json": json.dumps(metrics, indent=1, sort_keys=True).encode()}


def metrics_difference(stored: Any, measured: Any, name: str = "") -> str | None:
    """Where ``stored`` metrics differ from ``measured`` beyond float tolerance (None: they agree)."""
    if isinstance(measured, dict) or isinstance(stored, dict):
        if not (isinstance(measured, dict) and isinstance(stored, dict)):
            return f"{name or 'metrics'}: stored {type(stored).__name__}, measured {type(measured).__name__}"
        for k in sorted(set(stored) | set(measured)):
            if k not in measured:
                return f"{k}: stored {str(stored[k])[:40]}, not something these weights measure"
            if k not in stored:
                return f"{k}: measured {str(measured[k])[:40]}, missing from the stored metrics"
            problem = metrics_difference(stored[k], measured[k], k)
            if problem:
                return problem
        return None
    if isinstance(measured, list) or isinstance(stored, list):
        if not (isinstance(measured, list) and isinstance(stored, list)) or len(stored) != len(measured):
            return f"{name}: stored {str(stored)[:60]}, measured {str(measured)[:60]}"
        for i, (s, m) in enumerate(zip(stored, measured)):
            problem = metrics_difference(s, m, f"{name}[{i}]")
            if problem:
                return problem
        return None
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (stored, measured))
    if numbers:
        atol = _ROUNDOFF_METRICS.get(name, METRICS_ATOL)
        if (math.isnan(stored) and math.isnan(measured)) or math.isclose(stored, measured, rel_tol=METRICS_RTOL,
                                                                           abs_tol=atol):
            return None
    elif stored == measured and type(stored) is type(measured):
        return None
    return f"{name}: stored {str(stored)[:40]}, measured from its weights {str(measured)[:40]}"


def remeasured(store: RunStore, key: str, record: RunRecord, state: dict | None, manifest: dict,
                remeasure: Remeasure | None) -> tuple[dict, str | None]:
    """(metrics to store, why they are not verified: None when re-measured here). EntryDamaged
    when the weights do not fit the config or contradict the stored metrics."""
    if manifest["training_fingerprint"] != training_identity():
        return record.metrics, "trained by other training code: this code cannot re-measure its weights"
    if state is None:
        return record.metrics, "the archive holds no weights to re-measure it from"
    if record.diverged:
        return record.metrics, "a diverged run: its weights measure nothing to compare"
    if remeasure is None:
        return record.metrics, "no measurement code was given to re-measure it"
    from claimbench.data.catalog import DatasetError  # torch-free

    full = RunRecord(record.config, record.metrics, record.history, record.provenance, state,
                     record.metrics_fingerprint)
    try:
        measured = remeasure(full, store.device, store.data_root)
    except DatasetError as e:
        return record.metrics, f"its data is not here ({str(e).splitlines()[0]}); `claimbench cache verify` re-measures it once it is"
    except (OSError, MemoryError) as e:
        return record.metrics, f"could not be re-measured here ({type(e).__name__}: {e})"
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as e:
        if type(e).__name__ == "OutOfMemoryError":
            return record.metrics, "could not be re-measured here (device out of memory)"
        first = str(e).splitlines()[0][:200] if str(e) else ""
        raise EntryDamaged(f"its weights do not fit its config ({type(e).__name__}: {first})") from e
    # Numbers the weights cannot give (a trainer's own, or any name the measurement code does not
    # produce) were copied, not measured: comparing them would compare the entry with itself.
    own = sorted(set(record.trainer_metric_names) | (set(record.metrics) - set(measure_names(measured))))
    if record.metrics_fingerprint != metrics_fingerprint():
        # Measured by other measurement code: nothing to compare with, but the numbers kept are
        # now this code's, from these weights.
        kept = measured
    else:
        problem = metrics_difference(record.metrics, measured)
        if problem:
            raise EntryDamaged(f"metrics.json does not match its weights ({problem})")
        kept = record.metrics
    if own:
        return kept, (f"its trainer's own metrics ({', '.join(n[:40] for n in own[:5])}) cannot be re-measured from "
                      "its weights: they are the archive's word")
    return kept, None


def measure_names(measured: dict) -> set[str]:
    """The metric names a re-measurement produced itself, not copied from the stored record."""
    from claimbench.spec.metrics import RUN_METRICS

    return {n for n in measured if n in RUN_METRICS or n in ("steps", "diverged_at")}
