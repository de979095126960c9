"""Metrics of a trained network: errors, filter sparsity, selectivity, pruning and slimming.

In:  a trained ``ConvNet`` and its ``ImageData``.
Out: ``measure_model(model, data) -> dict`` (JSON-serialisable; keys listed in ``metrics``), and
     the reusable pieces: ``gamma_sparsity``, ``pooled_activations``, ``activation_sparsity``,
     ``universality`` (``sparsity``), ``zero_pruned``, ``slim_model``, ``fold_batchnorm``,
     ``kept_channels``, ``pruned_conv_params`` (``pruning``), ``evaluate`` (``loss_error``).

Cached runs record the fingerprint of this package's code (``claimbench.cache.metrics_fingerprint``)
with their metrics; when it changes, the cache recomputes metrics from the stored weights.
``METRICS_VERSION`` is part of that code: bump it to force a recomputation when the metrics
change for a reason outside this package (a library's numerics, say).
"""

from claimbench.measure.loss_error import EvalResult, evaluate
from claimbench.measure.pruning import (
    fold_batchnorm,
    kept_channels,
    pruned_conv_params,
    slim_model,
    zero_pruned,
)
from claimbench.measure.metrics import measure_model
from claimbench.measure.sparsity import (
    Sparsity,
    activation_sparsity,
    gamma_sparsity,
    pooled_activations,
    universality,
)

METRICS_VERSION = 1

__all__ = [
    "METRICS_VERSION",
    "EvalResult",
    "Sparsity",
    "activation_sparsity",
    "evaluate",
    "fold_batchnorm",
    "gamma_sparsity",
    "kept_channels",
    "measure_model",
    "pooled_activations",
    "pruned_conv_params",
    "slim_model",
    "universality",
    "zero_pruned",
]
