"""The value the cache stores for one run.

In:  what training and measurement produced for one ``RunConfig``.
Out: ``RunRecord``: config, metrics (see claimbench.measure), histories, provenance, optionally the
     trained weights (a flat name -> tensor dict, loaded only when asked for), the fingerprint
     of the measurement code that computed the metrics, and where the entry came from: trained
     here, or imported from an archive and then either re-measured from its weights (verified) or
     not (no weights, or no data to measure on: its numbers are the archive's word).

No torch import: planning, checking and reporting read records without loading it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from claimbench.config import RunConfig


@dataclass
class RunRecord:
    config: RunConfig
    metrics: dict
    history: dict
    provenance: dict
    state_dict: dict[str, Any] | None = field(default=None, repr=False)  # name -> torch.Tensor
    # Fingerprint of the measurement code that computed ``metrics`` (None: the current code).
    metrics_fingerprint: str | None = None
    # Set on read when the stored metrics came from other measurement code and were recomputed.
    metrics_recomputed: bool = field(default=False, compare=False)
    # Set on read when they came from other measurement code and the reader may not measure
    # (a report, a plan): the numbers are the older code's until `claimbench cache verify` runs.
    metrics_stale: bool = field(default=False, compare=False)
    # "local" (trained by this user: its manifest carries this user's mark, claimbench.cache.trained_here),
    # "imported" (added by `claimbench cache import`) or "found" (in the cache, neither: a project's
    # shipped cache, a copy by hand, an edited entry).
    origin: str = field(default="local", compare=False)
    # False for an imported or found entry whose metrics were not all re-measured from its
    # weights here: its numbers are someone else's word.
    verified: bool = field(default=True, compare=False)

    @property
    def diverged(self) -> bool:
        return self.metrics.get("diverged_at") is not None

    @property
    def trainer_metric_names(self) -> list[str]:
        """The metrics a registered trainer reported for this run, as its provenance records them
        (none for a run of claimbench's loop): facts of training, kept when the weights are measured
        again."""
        trainer = self.provenance.get("trainer") if isinstance(self.provenance, dict) else None
        names = trainer.get("metrics") if isinstance(trainer, dict) else None
        return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []

    @property
    def provenance_label(self) -> str:
        """What reports print beside the run's numbers: "" for a run trained or re-measured here."""
        if self.verified:
            return ""
        return "not trained here, unverified" if self.origin == "found" else "imported, unverified"
