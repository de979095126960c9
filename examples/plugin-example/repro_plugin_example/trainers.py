"""The declaration of the ``smoothsgd`` trainer (entry point group ``repro.trainers``).

A training loop of one's own: SGD with Nesterov momentum on a label-smoothed cross-entropy, in
place of repro's loop, for runs whose config says ``train.trainer: smoothsgd``. repro still
builds and seeds the network, caches the run, measures the weights it returns like any run's and
checks the claims; the loop adds two numbers of its own (``train_accuracy``, ``final_loss``),
which claims may name. No torch at import: the loop is in ``repro_plugin_example.smoothsgd``.
"""

from __future__ import annotations

from dataclasses import dataclass

from repro.plugins import TrainerPlugin


@dataclass(frozen=True)
class SmoothSGDFields:
    """``train.params`` of a config."""

    lr: float = 0.05  # the first phase's learning rate; divided by 10 at each later phase
    momentum: float = 0.9
    label_smoothing: float = 0.1
    weight_decay: float = 5e-4


def train(run):  # noqa: ANN001, ANN201  (a repro.plugins.TrainerRun -> TrainerResult)
    from repro_plugin_example.smoothsgd import train_smoothsgd

    return train_smoothsgd(run)


smoothsgd = TrainerPlugin(name="smoothsgd", train=train, fields=SmoothSGDFields,
                          metrics=("train_accuracy", "final_loss"))
