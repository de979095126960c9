"""Metrics of a trained network: errors, filter sparsity, selectivity, pruning and slimming.

In:  a trained ``ConvNet`` and its ``ImageData``.
Out: ``measure_model(model, data) -> dict`` (JSON-serialisable; keys listed in ``report``), and
     the reusable pieces: ``gamma_sparsity``, ``pooled_activations``, ``activation_sparsity``,
     ``universality`` (``sparsity``), ``zero_pruned``, ``slim_model``, ``fold_batchnorm``,
     ``kept_channels``, ``pruned_conv_params`` (``pruning``), ``evaluate`` (``evaluate``).
"""

from repro.measure.evaluate import EvalResult, evaluate
from repro.measure.pruning import (
    fold_batchnorm,
    kept_channels,
    pruned_conv_params,
    slim_model,
    zero_pruned,
)
from repro.measure.report import measure_model
from repro.measure.sparsity import (
    Sparsity,
    activation_sparsity,
    gamma_sparsity,
    pooled_activations,
    universality,
)

__all__ = [
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
