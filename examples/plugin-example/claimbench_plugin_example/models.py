"""The declaration of the ``mlp`` architecture (entry point group ``claimbench.models``).

No torch at import: claimbench reads this to validate and plan a run without loading torch; the
network itself is in ``claimbench_plugin_example.mlp``, imported when a run builds it. claimbench's cache
key covers this module and everything of this package it imports (``mlp``), so an edit there
retrains the runs of ``mlp`` and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

from claimbench.plugins import ModelPlugin


@dataclass(frozen=True)
class MLPFields:
    """``model.params`` of a config: widths of the hidden layers."""

    hidden: tuple[int, ...] = (128, 128)


def build(in_channels: int, image_size: int, num_classes: int, runs: int = 1, hidden: tuple[int, ...] = (128, 128)):
    """``runs`` MLPs stacked into one (``stackable=True`` below): claimbench trains runs that differ
    only in seed, optimizer or regularizer together, as it does its own networks."""
    from claimbench_plugin_example.mlp import MLP

    return MLP(in_channels * image_size * image_size, hidden, num_classes, runs)


def flops_per_image(in_channels: int, image_size: int, num_classes: int, fields: MLPFields | None) -> float:
    widths = (in_channels * image_size * image_size, *(fields or MLPFields()).hidden, num_classes)
    return float(sum(2 * a * b for a, b in zip(widths, widths[1:])))


mlp = ModelPlugin(name="mlp", build=build, fields=MLPFields, stackable=True, flops_per_image=flops_per_image)
