"""The run cache: keys (``keys``), the stored record (``record``), the store with its reads that
verify and its shared/read-only behaviour (``store``), the format of one entry and its checks
(``entry``), and archives to ship entries (``archive``).

In:  RunConfigs, RunRecords, a cache root.
Out: records served without training while the config and the training code's behaviour stay
     the same; metrics kept current with the measurement code from stored weights.

Importing this package does not import torch (planning and reporting use it); torch is loaded
only where weights are saved or loaded.
"""

from claimbench.cache.entry import CacheError, EntryDamaged
from claimbench.cache.keys import (
    CACHE_FORMAT,
    metrics_fingerprint,
    run_key,
    training_code_fingerprint,
    training_identity,
)
from claimbench.cache.location import CACHE_RULE, default_cache_root
from claimbench.cache.record import RunRecord
from claimbench.cache.store import RunStore, checkpoint_path, ensure_run, ensure_runs

__all__ = [
    "CACHE_FORMAT",
    "CACHE_RULE",
    "CacheError",
    "EntryDamaged",
    "RunRecord",
    "RunStore",
    "checkpoint_path",
    "default_cache_root",
    "ensure_run",
    "ensure_runs",
    "metrics_fingerprint",
    "run_key",
    "training_code_fingerprint",
    "training_identity",
]
