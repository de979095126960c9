"""Stored low-gradient simulations: computed once per configuration and code, read by checks,
reports and plots (which never simulate themselves).

In:  a cache root (the run cache's), ``DecayConfig``s, records from
     ``claimbench.simulate.low_gradient.simulation_record``.
Out: ``SimulationStore.get(config)`` -> the record or None; ``put(config, record)``.

A record is one JSON file, ``<root>/simulations/<key[:2]>/<key>.json``, keyed by
``keys.simulation_key`` (configuration, record format and the behaviour of the simulation code),
written whole or not at all (``claimbench.cache.side_records``). A file that is not a whole record of its
configuration is reported and treated as missing (it is computed again and replaced). No torch.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from claimbench.cache.keys import simulation_key
from claimbench.cache.side_records import write_json
from claimbench.simulate.result import check_record
from claimbench.spec.simulation import DecayConfig

log = logging.getLogger(__name__)

SIMULATIONS_DIR = "simulations"
# A record is a few hundred kilobytes (the curves); anything far larger is not one.
MAX_RECORD_BYTES = 64 * 1024 * 1024


class SimulationStore:
    def __init__(self, cache_root: Path | str):
        self.root = Path(cache_root) / SIMULATIONS_DIR

    def path(self, config: DecayConfig) -> Path:
        key = simulation_key(config)
        return self.root / key[:2] / f"{key}.json"

    def get(self, config: DecayConfig) -> dict[str, Any] | None:
        path = self.path(config)
        try:
            if path.stat().st_size > MAX_RECORD_BYTES:
                raise ValueError(f"larger than {MAX_RECORD_BYTES} bytes")
            record = json.loads(path.read_text(encoding="utf-8"))
            check_record(record, config)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, RecursionError, TypeError) as e:
            log.warning("stored simulation %s is not usable (%s); it is computed again", path, e)
            return None
        return record

    def put(self, config: DecayConfig, record: dict[str, Any]) -> Path | None:
        """Store ``record``; None (with a warning) where the cache cannot be written."""
        check_record(record, config)
        path = self.path(config)
        try:
            write_json(path, record, separators=(",", ":"))
        except OSError as e:
            log.warning("cannot store the simulation in %s (%s); it will be computed again when needed",
                        self.root, e.strerror or e)
            return None
        return path

